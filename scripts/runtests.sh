#!/bin/sh
# Run every test program and Python test given as arguments; count their "ok NAME" and
# "FAIL NAME" lines; end with "N passed, N failed". A program that exits non-zero without
# reporting a failure (a crash, a sanitizer report) counts as one failure of its own.
# Usage: runtests.sh PYTHON TEST...
PY=$1
shift
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "$@"; do
  case "$t" in
    *.py) "$PY" "$t" >"$log" 2>&1 ;;
    *.sh) sh "$t" >"$log" 2>&1 ;;
    *) "$t" >"$log" 2>&1 ;;
  esac
  rc=$?
  p=$(grep -c '^ok ' "$log")
  f=$(grep -c '^FAIL ' "$log")
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1
    echo "FAIL $t (exit $rc)"
  fi
  if [ "$f" -ne 0 ] || [ "$rc" -ne 0 ]; then
    grep -v '^ok ' "$log" | tail -n 40
  fi
  printf '%-40s %4d passed, %d failed\n' "$(basename "$t")" "$p" "$f"
  passed=$((passed + p))
  failed=$((failed + f))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
