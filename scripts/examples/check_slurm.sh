#!/bin/sh
# check_slurm.sh - `fastrope check` in N shards as a Slurm job array, then one job that merges
# the shards' rows into the jsonl one unsharded run prints (scripts/examples/merge_shards.py).
#
#   check_slurm.sh -n SHARDS -o OUT.jsonl PATH... [CHECK OPTIONS]     (on the login node)
#
# submits `sbatch --array=1-SHARDS` of this script (each task: `fastrope check --shard K/SHARDS
# --format jsonl` into OUT.shards/shard-K.jsonl, its exit code beside it) and a merge job that
# starts when all tasks have ended (afterany) and writes OUT.jsonl; it prints both job ids.
# PATHs must be on a file system the compute nodes share, and fastrope on their PATH (or
# $FASTROPE). Extra sbatch options (partition, time, account) go in $SBATCH_OPTIONS, e.g.
#   SBATCH_OPTIONS="--partition=cpu --time=01:00:00" check_slurm.sh -n 64 -o rows.jsonl /scratch/dumps -r
# The merge job's exit code is the worst shard's (check's: 3 unreadable input, 4 mismatch).
#
# The resources of each task: 2 cores by default (#SBATCH below, or --cpus-per-task in
# $SBATCH_OPTIONS); check reads one tensor at a time, so memory is small.
#SBATCH --job-name=fastrope-check
#SBATCH --cpus-per-task=2
#SBATCH --output=fastrope-check-%A_%a.log
set -eu

FASTROPE=${FASTROPE:-fastrope}
PYTHON=${PYTHON:-python3}

# In an array task: one shard. Slurm copies the script, so the caller's values come through
# the environment (CHECK_SLURM_*), and the arguments as given to sbatch.
if [ -n "${SLURM_ARRAY_TASK_ID:-}" ] && [ -n "${CHECK_SLURM_DIR:-}" ]; then
  k=$SLURM_ARRAY_TASK_ID
  n=${SLURM_ARRAY_TASK_COUNT:-$CHECK_SLURM_SHARDS}
  rc=0
  "$FASTROPE" check --shard "$k/$n" --format jsonl --quiet "$@" \
    >"$CHECK_SLURM_DIR/shard-$k.jsonl.tmp" || rc=$?
  mv "$CHECK_SLURM_DIR/shard-$k.jsonl.tmp" "$CHECK_SLURM_DIR/shard-$k.jsonl"
  echo "$rc" >"$CHECK_SLURM_DIR/shard-$k.status"
  exit "$rc"
fi

# The merge (the dependent job, or by hand): check_slurm.sh --merge DIR SHARDS OUT
if [ "${1:-}" = --merge ]; then
  dir=$2 n=$3 out=$4
  files="" worst=0
  for k in $(seq 1 "$n"); do
    files="$files $dir/shard-$k.jsonl"
    rc=$(cat "$dir/shard-$k.status" 2>/dev/null || echo 1) # a task that never wrote: failed
    [ "$rc" -gt "$worst" ] && worst=$rc
  done
  # shellcheck disable=SC2086
  "$PYTHON" "${CHECK_SLURM_HERE:-$(dirname "$0")}/merge_shards.py" $files >"$out.tmp"
  mv "$out.tmp" "$out"
  exit "$worst"
fi

# On the login node: submit the array and the merge.
shards="" out=""
while getopts n:o:h opt; do
  case $opt in
    n) shards=$OPTARG ;;
    o) out=$OPTARG ;;
    h) sed -n '2,/^#SBATCH/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: check_slurm.sh -n SHARDS -o OUT.jsonl PATH... [CHECK OPTIONS]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
case ${shards:-x} in *[!0-9]* | 0) echo "check_slurm.sh: -n SHARDS (a count >= 1) is required" >&2
                                   exit 2 ;; esac
[ -n "$out" ] || { echo "check_slurm.sh: -o OUT.jsonl is required" >&2; exit 2; }
[ $# -gt 0 ] || { echo "check_slurm.sh: give at least one PATH" >&2; exit 2; }
for a in "$@"; do
  case $a in
    --shard* | --format*) echo "check_slurm.sh: $a is set here, per shard; leave it out" >&2
                          exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
dir=$out.shards
mkdir -p "$dir"
rm -f "$dir"/shard-*
export CHECK_SLURM_DIR="$(cd "$dir" && pwd)" CHECK_SLURM_SHARDS="$shards" CHECK_SLURM_HERE="$here"
export FASTROPE PYTHON
# shellcheck disable=SC2086
array=$(sbatch --parsable --export=ALL --array="1-$shards" ${SBATCH_OPTIONS:-} "$here/check_slurm.sh" "$@")
array=${array%%;*} # --parsable: "jobid" or "jobid;cluster"
# shellcheck disable=SC2086
merge=$(sbatch --parsable --export=ALL --job-name=fastrope-check-merge \
  --dependency="afterany:$array" --output="$out.merge.log" ${SBATCH_OPTIONS:-} \
  --wrap="sh '$here/check_slurm.sh' --merge '$CHECK_SLURM_DIR' $shards '$out'")
echo "check_slurm.sh: shards in job array $array, merged by job ${merge%%;*} into $out"
