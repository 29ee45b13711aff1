#!/bin/sh
# make bench: every benchmark script, one after the other (slow: minutes; run on a quiet
# machine). Needs FASTROPE (the binary) and PYTHON (with numpy); scripts/ is on PYTHONPATH.
# Extra arguments (e.g. --quick) are passed to every script.
set -e
PYTHON=${PYTHON:-/usr/bin/python3}
FASTROPE=${FASTROPE:-$(pwd)/build/fastrope}
export FASTROPE
export PYTHONPATH="$(dirname "$0")${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" "$(dirname "$0")/bench_exact.py" "$@"
"$PYTHON" "$(dirname "$0")/bench_polyrope.py" "$@"
"$PYTHON" "$(dirname "$0")/bench_polyfft.py" "$@"
"$PYTHON" "$(dirname "$0")/bench_check.py" "$@"
"$PYTHON" "$(dirname "$0")/bench_grad.py" "$@"
