"""bench_exact.py - the exact engine (fastrope run --method exact) against the numpy reference,
on the same inputs in the same run, plus the engine's peak memory at a large n.

    FASTROPE=build/fastrope PYTHONPATH=scripts /usr/bin/python3 scripts/bench_exact.py [--quick]

Times are wall-clock seconds of the attention itself: time_s.compute from the CLI's JSON report
(no file I/O, no check rows) and the reference.attention call for numpy. Targets: >= 10x faster
than numpy at n = 16384, d = 8 on 2 cores; peak RSS < 100 MB at n = 65536, d = 8.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

import reference


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit("command failed (%d): %s\n%s" % (r.returncode, " ".join(cmd), r.stderr))
    return r


def fastrope_exact(exe, bundle, out, report, extra=()):
    run([exe, "run", "--input", bundle, "--method", "exact", "--check-rows", "0", "--quiet",
         "-o", out, "--report", report, *extra])
    with open(report) as f:
        return json.load(f)["time_s"]["compute"]


def peak_rss_mb(cmd):
    """Max resident set size of cmd in MB, from GNU time -v."""
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit("command failed: %s\n%s" % (" ".join(cmd), r.stderr))
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return int(m.group(1)) / 1024.0 if m else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only (smoke test)")
    ap.add_argument("--reps", type=int, default=1, help="best of this many runs per size")
    args = ap.parse_args()
    exe = os.environ.get("FASTROPE", "build/fastrope")
    ns = [256, 1024] if args.quick else [1024, 4096, 16384]
    ds = [4, 8] if args.quick else [4, 8, 64]
    mem_n = 4096 if args.quick else 65536

    print("exact attention: fastrope --method exact vs numpy reference (float64, RoPE, "
          "tau = 1/d, no mask; threads: OMP_NUM_THREADS=%s, %d cores)"
          % (os.environ.get("OMP_NUM_THREADS", "default"), os.cpu_count()))
    print("%7s %4s %12s %12s %8s %10s" % ("n", "d", "fastrope_s", "numpy_s", "ratio", "max_rel"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle, out, report = (os.path.join(tmp, x) for x in ("in.npz", "out.npy", "r.json"))
        for n in ns:
            for d in ds:
                run([exe, "gen", "--n", str(n), "--d", str(d), "--seed", "1", "-o", bundle])
                t_fr = min(fastrope_exact(exe, bundle, out, report) for _ in range(args.reps))
                with np.load(bundle) as z:
                    q, k, v = z["q"], z["k"], z["v"]
                t_np = float("inf")
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    ref = reference.attention(q, k, v)
                    t_np = min(t_np, time.perf_counter() - t0)
                got = np.load(out)
                err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
                print("%7d %4d %12.4f %12.4f %7.1fx %10.1e" % (n, d, t_fr, t_np, t_np / t_fr, err))
                sys.stdout.flush()
                rows.append((n, d, t_fr, t_np, err))

        d = 8
        run([exe, "gen", "--n", str(mem_n), "--d", str(d), "--seed", "1", "-o", bundle])
        rss = peak_rss_mb([exe, "run", "--input", bundle, "--method", "exact", "--check-rows",
                           "0", "--quiet", "-o", out, "--report", report])
        with open(report) as f:
            t_big = json.load(f)["time_s"]["compute"]
        print("peak memory, n = %d, d = %d, causal off: %.1f MB max RSS (compute %.3f s)"
              % (mem_n, d, rss, t_big))

    bad = [r for r in rows if r[4] > 1e-10]
    if bad:
        print("FAILED: fastrope and numpy disagree: %s" % bad)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
