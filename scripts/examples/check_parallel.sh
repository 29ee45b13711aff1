#!/bin/sh
# check_parallel.sh - `fastrope check` in N shards run by GNU parallel, on this machine's cores
# or on other machines over ssh, merged into the jsonl one unsharded run prints (same rows, same
# order).
#
#   check_parallel.sh [-n SHARDS] [-j JOBS] [-S HOSTS] [-o OUT.jsonl] PATH... [CHECK OPTIONS]
#
#   -n SHARDS  how many shards (default: the job slots, -j, or this machine's cores)
#   -j JOBS    shards run at once on each host (default: GNU parallel's, one per core)
#   -S HOSTS   ssh logins, comma-separated, ':' for this machine (GNU parallel's -S): every host
#              must see the PATHs under the same names (a shared file system) and have
#              fastrope ($FASTROPE, else on its PATH)
#   -o OUT     the merged jsonl (default: stdout)
#
# Everything after the options goes to `fastrope check` as it is (paths, --recursive, --eps,
# --per-head, --preset, ...), except --shard and --format, which this script sets. Each shard
# prints its rows; GNU parallel tags them with the shard number, and merge_shards.py interleaves
# the shards' sets back into check's order. The exit code is the worst shard's (check's: 3 when
# a file could not be read, 4 when a stored output or gradient missed --tol), or GNU parallel's
# when it could not run a shard.
#
# Example: 16 shards on two machines, 4 at a time each
#   check_parallel.sh -n 16 -j 4 -S :,gpu2 -o rows.jsonl /shared/dumps --recursive
set -eu

here=$(dirname "$0")
FASTROPE=${FASTROPE:-fastrope}
PYTHON=${PYTHON:-python3}
shards="" jobs="" hosts="" out="-"
while getopts n:j:S:o:h opt; do
  case $opt in
    n) shards=$OPTARG ;;
    j) jobs=$OPTARG ;;
    S) hosts=$OPTARG ;;
    o) out=$OPTARG ;;
    h) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: check_parallel.sh [-n SHARDS] [-j JOBS] [-S HOSTS] [-o OUT] PATH... [OPTIONS]" >&2
       exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "check_parallel.sh: give at least one PATH (-h for help)" >&2; exit 2; }
for a in "$@"; do
  case $a in
    --shard* | --format*) echo "check_parallel.sh: $a is set here, per shard; leave it out" >&2
                          exit 2 ;;
  esac
done
command -v parallel >/dev/null || { echo "check_parallel.sh: GNU parallel is not installed" >&2; exit 1; }
[ -n "$shards" ] || shards=${jobs:-$(parallel --number-of-cores)}
case $shards in '' | *[!0-9]* | 0) echo "check_parallel.sh: -n $shards is not a count >= 1" >&2; exit 2 ;; esac

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_parallel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# One line per shard in the job log; --tag puts the shard number and a tab before each row; -q
# passes every argument as it is (paths with spaces), locally and through ssh.
set -- --will-cite -q --tag --joblog "$tmp/jobs" ${jobs:+-j "$jobs"} ${hosts:+-S "$hosts"} \
  "$FASTROPE" check --shard "{}/$shards" --format jsonl --quiet "$@"
status=0
seq 1 "$shards" | parallel "$@" >"$tmp/tagged" || status=$?

# The tagged rows into one file per shard, then interleaved in check's order.
files=""
for k in $(seq 1 "$shards"); do files="$files $tmp/shard-$k.jsonl"; done
awk -F '\t' -v dir="$tmp" '{ f = dir "/shard-" $1 ".jsonl"; sub(/^[^\t]*\t/, ""); print > f }' \
  "$tmp/tagged"
# shellcheck disable=SC2086
if [ "$out" = - ]; then
  "$PYTHON" "$here/merge_shards.py" $files
else
  "$PYTHON" "$here/merge_shards.py" $files >"$out.tmp" && mv "$out.tmp" "$out"
fi

# The worst shard's exit code (GNU parallel's own says only how many failed).
worst=$(awk -F '\t' 'NR > 1 && $7 > w { w = $7 } NR > 1 && $8 != 0 { w = 1 } END { print w + 0 }' \
  "$tmp/jobs")
[ "$worst" -ne 0 ] && exit "$worst"
exit "$status"
