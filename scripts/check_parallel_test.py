"""Tests of the sharded check on existing engines: scripts/examples/check_parallel.sh (GNU
parallel, 2 jobs on this machine) and check_slurm.sh (its array tasks and merge run by a
stand-in sbatch) give the rows, order and exit code of one unsharded `fastrope check`;
merge_shards.py refuses shards that are not one partition."""
import os
import shutil
import subprocess
import sys

import numpy as np

from frtest import FASTROPE, fastrope as cli, run_all, test, tmpdir

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "examples")
sys.path.insert(0, EXAMPLES)
import merge_shards  # noqa: E402

rng = np.random.default_rng(5)


def dump_tree():
    """Bundles with two sets each in a tree (one under a name with a space), a directory of .npy
    files, and one unreadable file: 9 sets over 5 files, rows of several kinds."""
    top = tmpdir()
    for sub in ("", "sub", "with space"):
        os.makedirs(os.path.join(top, sub), exist_ok=True)
    for path in ("a.npz", os.path.join("sub", "b.npz"), os.path.join("with space", "c.npz")):
        np.savez(os.path.join(top, path),
                 **{f"layers.{i}.{x}": rng.uniform(-1, 1, (2, 16, 4)) for i in range(2)
                    for x in ("q", "k", "v")})
    for x in ("q", "k", "v"):
        np.save(os.path.join(top, "sub", f"layer7_{x}.npy"), rng.uniform(-2, 2, (3, 20, 4)))
    with open(os.path.join(top, "broken.npz"), "wb") as f:
        f.write(b"not a bundle")
    return top


def unsharded(top, *flags):
    r = cli("check", top, "--format", "jsonl", "--quiet", *flags)
    return r.returncode, r.stdout


def env():
    return dict(os.environ, FASTROPE=os.path.abspath(FASTROPE), PYTHON=sys.executable)


@test
def parallel_shards_merge_into_the_unsharded_rows():
    if not shutil.which("parallel"):
        raise AssertionError("GNU parallel is missing: scripts/deps.sh installs it")
    top = dump_tree()
    for flags in (["--recursive"], ["--recursive", "--per-head", "--eps", "1e-4"]):
        code, want = unsharded(top, *flags)
        assert code == 3 and want.count(b"\n") >= 8, (code, want)  # broken.npz: exit 3
        for shards in (2, 3, 12):  # fewer, as many as, and more shards than the 2 job slots
            r = subprocess.run(["sh", os.path.join(EXAMPLES, "check_parallel.sh"), "-n",
                                str(shards), "-j", "2", top] + flags, capture_output=True,
                               env=env(), timeout=120)
            assert r.stdout == want, (shards, flags, r.stdout[:500], r.stderr[-500:])
            assert r.returncode == code, (shards, r.returncode, r.stderr[-500:])
    out = os.path.join(tmpdir(), "rows.jsonl")
    r = subprocess.run(["sh", os.path.join(EXAMPLES, "check_parallel.sh"), "-n", "2", "-o", out,
                        os.path.join(top, "sub")], capture_output=True, env=env(), timeout=120)
    assert r.returncode == 0 and r.stdout == b"", r.stderr
    assert open(out, "rb").read() == unsharded(os.path.join(top, "sub"))[1]
    for bad in (["--shard", "1/2"], ["--format=csv"]):
        r = subprocess.run(["sh", os.path.join(EXAMPLES, "check_parallel.sh"), top] + bad,
                           capture_output=True, env=env(), timeout=60)
        assert r.returncode == 2 and b"set here" in r.stderr, r.stderr


FAKE_SBATCH = r"""#!/bin/sh
# sbatch's stand-in: an array's tasks one after another, a --wrap job at once; prints a job id.
array="" wrap=""
for a; do
  case $a in --array=1-*) array=${a#--array=1-} ;; --wrap=*) wrap=${a#--wrap=} ;; esac
done
while [ $# -gt 0 ]; do case $1 in --*) shift ;; *) break ;; esac; done
if [ -n "$wrap" ]; then sh -c "$wrap"; echo $? >"$FAKE_SBATCH_RC"; echo 102; exit 0; fi
for k in $(seq 1 "$array"); do
  SLURM_ARRAY_TASK_ID=$k SLURM_ARRAY_TASK_COUNT=$array sh "$@" >/dev/null 2>&1 || true
done
echo 101
"""


@test
def slurm_array_tasks_and_merge_give_the_unsharded_rows():
    top = dump_tree()
    bindir, work = tmpdir(), tmpdir()
    with open(os.path.join(bindir, "sbatch"), "w") as f:
        f.write(FAKE_SBATCH)
    os.chmod(os.path.join(bindir, "sbatch"), 0o755)
    e = env()
    e["PATH"] = bindir + os.pathsep + e["PATH"]
    e["FAKE_SBATCH_RC"] = os.path.join(work, "merge_rc")
    code, want = unsharded(top, "--recursive", "--per-head")
    r = subprocess.run(["sh", os.path.join(EXAMPLES, "check_slurm.sh"), "-n", "4", "-o",
                        "rows.jsonl", top, "--recursive", "--per-head"], cwd=work,
                       capture_output=True, env=e, timeout=120)
    assert r.returncode == 0 and b"job array 101" in r.stdout, (r.stdout, r.stderr)
    assert open(os.path.join(work, "rows.jsonl"), "rb").read() == want
    assert open(e["FAKE_SBATCH_RC"]).read().strip() == str(code)  # the worst shard's: 3


@test
def merge_refuses_shards_of_different_runs():
    d = tmpdir()
    rows = {1: ['{"path":"a","set":"x"}', '{"path":"c","set":"x"}'], 2: []}
    paths = []
    for k, lines in rows.items():
        paths.append(os.path.join(d, f"shard-{k}.jsonl"))
        with open(paths[-1], "w") as f:
            f.write("".join(line + "\n" for line in lines))
    try:
        merge_shards.merge(paths)
    except ValueError as e:
        assert "shard 2" in str(e), e
    else:
        raise AssertionError("an inconsistent partition was merged")
    # a missing shard file is a shard without sets: here shard 2 of 2, with one set in all
    with open(paths[0], "w") as f:
        f.write(rows[1][0] + "\n")
    assert merge_shards.merge([paths[0], os.path.join(d, "none.jsonl")]) == [rows[1][0] + "\n"]


run_all()
