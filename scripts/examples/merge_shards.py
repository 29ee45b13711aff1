"""merge_shards.py - the rows of `fastrope check --shard K/N --format jsonl` runs, merged into
the rows one unsharded run prints, in its order.

    python3 merge_shards.py SHARD1.jsonl SHARD2.jsonl ... SHARDN.jsonl > all.jsonl

The files are given in shard order (K = 1..N); a missing or empty file is a shard without sets.
check numbers the sets of its sorted list 0, 1, 2, ... and shard K takes those with index
K-1 modulo N, so set i is the (i // N)-th set of shard i % N + 1: the merge takes one set from
each shard in turn. A set's rows (one, or one per head with --per-head) are the consecutive
rows with the same path and set. This needs nothing of check's sort order, only its
partition rule (`fastrope check --help`, --shard).
"""
import json
import os
import sys


def set_groups(path):
    """The shard's rows as a list of sets, each a list of (line, row): consecutive rows with
    the same path and set name."""
    groups = []
    if not os.path.exists(path):
        return groups
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            key = (row.get("path"), row.get("set"))
            if groups and groups[-1][0] == key:
                groups[-1][1].append(line)
            else:
                groups.append((key, [line]))
    return [lines for _, lines in groups]


def merge(paths):
    """The merged lines; ValueError when the shards are not one run's partition (a shard ran
    out while a later one still has sets: the inputs changed between the runs)."""
    shards = [set_groups(p) for p in paths]
    total = sum(len(s) for s in shards)
    out = []
    for i in range(total):
        shard, pos = shards[i % len(shards)], i // len(shards)
        if pos >= len(shard):
            raise ValueError(f"shard {i % len(shards) + 1} ({paths[i % len(shards)]}) has "
                             f"{len(shard)} sets but the partition needs at least {pos + 1}: "
                             "were all shards run on the same inputs and options?")
        out += shard[pos]
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: merge_shards.py SHARD1.jsonl ... SHARDN.jsonl (in shard order)")
    try:
        lines = merge(sys.argv[1:])
    except (ValueError, OSError) as e:
        sys.exit(f"merge_shards.py: {e}")
    sys.stdout.writelines(line if line.endswith("\n") else line + "\n" for line in lines)


if __name__ == "__main__":
    main()
