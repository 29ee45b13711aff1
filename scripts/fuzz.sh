#!/bin/sh
# Build the libFuzzer targets (io/*_fuzz.c, cmd/*_fuzz.c) with clang under ASan+UBSan into
# build-fuzz/, then run each for FUZZ_SECONDS (60), FUZZ_JOBS at a time (2), starting from its
# seed corpus testdata/fuzz/NAME/. The corpus grown by a run stays in build-fuzz/corpus/NAME/
# (not committed); a crash is written to build-fuzz/crashes/NAME-crash-*, and the script ends
# non-zero. A crash found is fixed, then its input is copied into testdata/fuzz/NAME/ so that
# io/fuzz_replay_test (in `make test`) replays it forever.
#
# Usage: scripts/fuzz.sh [NAME...]       (default: every target)
#        FUZZ_SECONDS=600 scripts/fuzz.sh npy json
#        scripts/fuzz.sh --build-only
set -eu
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
[ -n "$SECONDS_EACH" ] || SECONDS_EACH=60
JOBS=${FUZZ_JOBS:-2}
[ -n "$JOBS" ] || JOBS=2
CLANG=${FUZZ_CC:-clang}
B=build-fuzz
PKGS="kissfft-float libcjson libzip zlib"

build_only=0
if [ "${1:-}" = --build-only ]; then
  build_only=1
  shift
fi

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -Wno-pass-failed"
CFLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -fopenmp $SAN -Icore -Iio -Icmd
  $(pkg-config --cflags $PKGS)"
LIBS="$(pkg-config --libs $PKGS) -lm"

mkdir -p "$B/obj" "$B/corpus" "$B/crashes"
# The library, io and the command's files (all but main), instrumented for coverage.
objs=""
for src in core/*.c io/*.c cmd/*.c; do
  case "$src" in *_test.c | *_fuzz.c | cmd/main.c) continue ;; esac
  obj="$B/obj/$(echo "$src" | tr / _).o"
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find core io cmd -name '*.h' -newer "$obj")" ]; then
    # shellcheck disable=SC2086
    $CLANG $CFLAGS -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
  fi
  objs="$objs $obj"
done

targets=""
for src in io/*_fuzz.c cmd/*_fuzz.c; do
  name=$(basename "$src" _fuzz.c)
  # shellcheck disable=SC2086
  $CLANG $CFLAGS -fsanitize=fuzzer "$src" $objs $LIBS -o "$B/$name"
  targets="$targets $name"
done
echo "fuzz.sh: built$targets in $B/"
[ "$build_only" = 1 ] && exit 0
[ $# -gt 0 ] && targets="$*"

# One target: the corpus grows in $B/corpus/NAME, seeded from testdata/fuzz/NAME. stdout and
# stderr of the target are closed (the CLI parser prints every usage error); libFuzzer's own
# output and sanitizer reports go to the log.
run_one() {
  name=$1
  mkdir -p "$B/corpus/$name" "testdata/fuzz/$name"
  "$B/$name" "$B/corpus/$name" "testdata/fuzz/$name" -max_total_time="$SECONDS_EACH" \
    -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -close_fd_mask=3 -print_final_stats=1 \
    -artifact_prefix="$B/crashes/$name-" >"$B/$name.log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$B/$name.log" | tail -n 1)
  echo "fuzz.sh: $name: exit $rc, ${execs:-?} executions in ${SECONDS_EACH}s (log $B/$name.log)"
  return $rc
}

fail=0
set -- $targets
while [ $# -gt 0 ]; do
  pids=""
  i=0
  while [ $# -gt 0 ] && [ "$i" -lt "$JOBS" ]; do
    run_one "$1" &
    pids="$pids $!"
    shift
    i=$((i + 1))
  done
  for p in $pids; do wait "$p" || fail=1; done
done
if [ "$fail" -ne 0 ]; then
  echo "fuzz.sh: crashes in $B/crashes/:" && ls "$B/crashes/"
  exit 1
fi
echo "fuzz.sh: no crash"
