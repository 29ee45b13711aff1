"""bench_batch.py - many small problems in one run: the batch loop's own cost.

Generates one bundle of --batch problems at n = 64, d = 4 (issue 15's case: 4096 of them),
then times `fastrope run --check-rows 0` on it for each method, best of --repeat runs, and
prints the compute time (bounds, plans and execution, from the report) and the wall time per
run. A second binary (--baseline PATH) is timed the same way, interleaved, for a ratio.

    FASTROPE=build/fastrope python3 scripts/bench_batch.py [--quick] [--baseline OLD_BINARY]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

FASTROPE = os.environ.get("FASTROPE", os.path.join(os.path.dirname(__file__), "..", "build",
                                                   "fastrope"))


def run_once(binary, bundle, method, out, report):
    cmd = [binary, "run", "--input", bundle, "--method", method, "--check-rows", "0", "-o", out,
           "--report", report, "--quiet"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit("%s failed: %s" % (" ".join(cmd), r.stderr.decode().strip()))
    with open(report) as f:
        rep = json.load(f)
    return rep["time_s"]["compute"], wall, rep["method"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="256 problems, one run each")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--d", type=int, default=4)
    ap.add_argument("--methods", default="auto,exact,polyrope,polyfft")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", help="another fastrope binary to compare with")
    a = ap.parse_args()
    if a.quick:
        a.batch, a.repeat = 256, 1
    tmp = tempfile.mkdtemp(prefix="fastrope-bench-batch-", dir="/tmp")
    try:
        bundle = os.path.join(tmp, "b.npz")
        r = subprocess.run([FASTROPE, "gen", "--n", str(a.n), "--d", str(a.d), "--batch",
                            str(a.batch), "--seed", "1", "-o", bundle], stderr=subprocess.PIPE)
        if r.returncode != 0:
            sys.exit("gen failed: %s" % r.stderr.decode().strip())
        out, rep = os.path.join(tmp, "o.npy"), os.path.join(tmp, "r.json")
        binaries = [("new", FASTROPE)] + ([("baseline", a.baseline)] if a.baseline else [])
        print("batch of %d problems, n = %d, d = %d; best of %d (seconds)"
              % (a.batch, a.n, a.d, a.repeat))
        print("%-10s %-9s %10s %10s %-10s" % ("method", "binary", "compute", "wall", "ran"))
        for m in a.methods.split(","):
            best = {name: (float("inf"), float("inf"), "") for name, _ in binaries}
            for _ in range(a.repeat):
                for name, b in binaries:  # interleaved: both see the same machine
                    c, w, ran = run_once(b, bundle, m, out, rep)
                    old = best[name]
                    best[name] = (min(old[0], c), min(old[1], w), ran)
            for name, _ in binaries:
                c, w, ran = best[name]
                print("%-10s %-9s %10.4f %10.4f %-10s" % (m, name, c, w, ran))
            if a.baseline:
                print("%-10s %-9s %9.1fx %9.1fx" % (m, "speedup", best["baseline"][0] / best["new"][0],
                                                    best["baseline"][1] / best["new"][1]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
