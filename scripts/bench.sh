#!/bin/sh
# make bench: the benchmark runs behind the README's figures, one after the other (about half
# an hour; run on a quiet machine). Needs FASTROPE (the binary) and PYTHON (with numpy);
# scripts/ is on PYTHONPATH. Tables, CSV and plots go to build/bench/.
#   scripts/bench.sh           the README's runs
#   scripts/bench.sh --quick   every script at small sizes (a smoke test, a minute)
set -e
PYTHON=${PYTHON:-/usr/bin/python3}
FASTROPE=${FASTROPE:-$(pwd)/build/fastrope}
export FASTROPE
here=$(dirname "$0")
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
out=$here/../build/bench
if [ "${1:-}" = --quick ]; then
  for s in exact polyrope polyfft check grad batch inproc; do
    "$PYTHON" "$here/bench_$s.py" --quick
  done
  exit 0
fi
"$PYTHON" "$here/bench_exact.py"
# polyfft takes minutes at d = 8 beyond 64K and hours at d = 16: there only polyrope and exact
"$PYTHON" "$here/bench_polyrope.py" --out "$out/polyrope-d4" --dims 4
"$PYTHON" "$here/bench_polyrope.py" --out "$out/polyrope-d8" --dims 8 --sizes 1024,4096,16384,65536
"$PYTHON" "$here/bench_polyrope.py" --out "$out/polyrope-large" --dims 4,8,16 \
  --methods polyrope,exact --exact-max-n 65536
"$PYTHON" "$here/bench_polyfft.py" --out "$out/polyfft" --dims 4 --exact-max-n 65536
"$PYTHON" "$here/bench_grad.py" --out "$out/grad" --dims 4
"$PYTHON" "$here/bench_check.py"
# many small problems in one run (issue 15: 4096 at n = 64, d = 4)
"$PYTHON" "$here/bench_batch.py"
# fastrope calibrate, then auto's choices and the predictions against measured times
"$PYTHON" "$here/bench_auto.py"
# in-process calls (ctypes) against the pipe helper: 1000 small calls, and one call's peak memory
"$PYTHON" "$here/bench_inproc.py"
