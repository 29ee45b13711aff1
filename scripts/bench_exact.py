"""bench_exact.py - the exact engine against what this machine allows, and against its peers.

    FASTROPE=build/fastrope PYTHONPATH=scripts /usr/bin/python3 scripts/bench_exact.py [--quick]

First measures this machine's limits with scripts/limits.c (built here, with the project's
flags): the FMA peak and glibc's vector exp rate, in double and single, on all cores. Then times
`fastrope run` (forward) and `fastrope grad --dout` (backward: T and every gradient) with
--method exact at n = 16384, scale 1/sqrt(d), RoPE, for d in {8, 64, 128}, unmasked and causal,
in double and (when the build has --precision) single, and prints each time as a multiple of
its limit:

    forward    2 n^2 (d + dv) / peak + n^2 / exp_rate
    backward   2 n^2 (4 d + 3 dv) / peak + 2 n^2 / exp_rate
               (the forward's products and exps once for T and the row sums, then S again,
               G V^T, P^T G, dS K and dS^T Q, and P again)

with n^2 the pairs the mask keeps (a causal mask halves the limit). Times are the CLI report's
time_s.compute (no file I/O, no check rows), the best of --repeat runs (2): the machine must be
quiet (hold the team's CPU lock). Two backward ratios: the backward pass alone, given the
forward's row statistics (grad's time less run's, since grad runs the forward first), over the
forward (bwd/fwd: the issue's "at most 2.5x its forward"); and the whole grad call over the run
call (grad/run: at d = dv it cannot go below ~3.5, five products and an exp against two and an
exp). Then, when Debian's python3-torch is installed, PyTorch's float32 chunked attention on
the same inputs (all threads), and the ratio to fastrope; last, the issue's targets, each met or
not.

Checks: fastrope agrees with the numpy reference at n = 4096 (relative 1e-10 in double, 1e-5 in
single); peak RSS < 100 MB at n = 65536, d = 8.
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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")


def run(cmd, check=True):
    r = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    if check and r.returncode != 0:
        sys.exit("command failed (%d): %s\n%s" % (r.returncode, " ".join(map(str, cmd)),
                                                  r.stderr))
    return r


def measure_limits(outdir):
    """This machine's limits (scripts/limits.c), compiled with the project's flags."""
    exe = os.path.join(outdir, "limits")
    src = os.path.join(HERE, "limits.c")
    cc = os.environ.get("CC", "cc")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        run([cc, "-O2", "-march=native", "-fopenmp", "-fno-math-errno", src, "-o", exe, "-lm"])
    return json.loads(run([exe]).stdout)


def limit_s(lim, prec, direction, n, d, dv, causal):
    pairs = n * (n + 1) / 2 if causal else float(n) * n
    peak = lim["fma_gflops_" + prec] * 1e9
    exp_rate = lim["exp_gps_" + prec] * 1e9
    if direction == "fwd":
        return 2 * pairs * (d + dv) / peak + pairs / exp_rate
    return 2 * pairs * (4 * d + 3 * dv) / peak + 2 * pairs / exp_rate


def compute_time(report):
    with open(report) as f:
        return json.load(f)["time_s"]["compute"]


def fastrope_time(exe, direction, bundle, up, prec, causal, tmp, repeat=1):
    """Compute seconds of the best of repeat exact runs, or None when the build lacks the
    precision."""
    best = None
    for _ in range(repeat):
        t = fastrope_time_once(exe, direction, bundle, up, prec, causal, tmp)
        if t is None:
            return None
        best = t if best is None else min(best, t)
    return best


def fastrope_time_once(exe, direction, bundle, up, prec, causal, tmp):
    report = os.path.join(tmp, "r.json")
    common = ["--method", "exact", "--scale", "sdpa", "--check-rows", "0", "--quiet",
              "--report", report]
    if causal:
        common.append("--causal")
    if prec != "f64":
        common += ["--precision", prec]
    if direction == "fwd":
        cmd = [exe, "run", "--input", bundle, "-o", os.path.join(tmp, "out.npy")] + common
    else:
        cmd = [exe, "grad", "--input", bundle, "--dout", up, "-o",
               os.path.join(tmp, "g.npz")] + common
    r = run(cmd, check=prec == "f64")
    if r.returncode != 0:
        return None
    return compute_time(report)


def has_precision(exe):
    r = run([exe, "run", "--help"], check=False)
    return "--precision" in (r.stdout + r.stderr)


def torch_chunked(q, k, v, causal, chunk=1024):
    """PyTorch float32 attention, a block of query rows at a time (what a user without a fused
    CPU kernel writes to stay out of n x n memory), RoPE applied first. Seconds of the best of
    one run after a warm-up on a small slice."""
    import torch

    torch.set_num_threads(os.cpu_count())
    n, d = q.shape
    tau = 1 / np.sqrt(d)
    qr = torch.from_numpy(reference.rotate(q).astype(np.float32))
    kr = torch.from_numpy(reference.rotate(k).astype(np.float32))
    vt = torch.from_numpy(v.astype(np.float32))

    def attend(rows):
        out = torch.empty((rows, vt.shape[1]), dtype=torch.float32)
        with torch.no_grad():
            for i0 in range(0, rows, chunk):
                i1 = min(rows, i0 + chunk)
                s = (qr[i0:i1] @ kr.T) * tau
                if causal:
                    j = torch.arange(n)
                    i = torch.arange(i0, i1)[:, None]
                    s = s.masked_fill(j[None, :] > i, float("-inf"))
                out[i0:i1] = torch.softmax(s, dim=1) @ vt
        return out

    attend(min(n, 2 * chunk))
    t0 = time.perf_counter()
    out = attend(n)
    return time.perf_counter() - t0, out.numpy()


def peak_rss_mb(cmd):
    """Max resident set size of cmd in MB, from GNU time -v."""
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit("command failed: %s\n%s" % (" ".join(cmd), r.stderr))
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return int(m.group(1)) / 1024.0 if m else float("nan")


def print_targets(results, limits, torch_s, n):
    """Issue 17's targets at this n, each met or not (or not measured in this run)."""
    print("\ntargets (issue 17; n = %d, all cores, this run):" % n)

    def line(what, value, ok, fmt="%.2fx"):
        if value is None:
            print("  %-58s not measured" % what)
        else:
            print("  %-58s %s  %s" % (what, fmt % value, "met" if ok(value) else "NOT met"))

    for prec, dims in (("f64", (64, 8)), ("f32", (64, 128))):
        for d in dims:
            key = (prec, d, False, "fwd")
            x = results[key] / limits[key] if key in results else None
            line("exact %s, d = %d: within 1.5x of the limit" % (prec, d), x, lambda v: v <= 1.5)
    for prec in ("f64", "f32"):
        worst = None
        for (p, d, causal, direction), t in results.items():
            fwd = results.get((p, d, causal, "fwd"))
            if p == prec and direction == "bwd" and fwd:
                r = (t - fwd) / fwd
                worst = r if worst is None else max(worst, r)
        line("exact %s backward pass: at most 2.5x its forward (worst)" % prec, worst,
             lambda v: v <= 2.5)
    t32 = results.get(("f32", 64, False, "fwd"))
    line("exact f32 against PyTorch f32 chunked, d = 64: at least 20x",
         torch_s[64] / t32 if t32 and 64 in torch_s else None, lambda v: v >= 20, "%.1fx")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only (smoke test)")
    ap.add_argument("--n", type=int, default=None, help="problem size (16384)")
    ap.add_argument("--dims", default=None, help="comma list of d (8,64,128)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per time, the best kept (2)")
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "bench"))
    args = ap.parse_args()
    exe = os.environ.get("FASTROPE", os.path.join(ROOT, "build", "fastrope"))
    n = args.n or (1024 if args.quick else 16384)
    dims = [int(x) for x in (args.dims or ("8" if args.quick else "8,64,128")).split(",")]
    check_n = 512 if args.quick else 4096
    mem_n = 4096 if args.quick else 65536
    os.makedirs(args.out, exist_ok=True)

    lim = measure_limits(args.out)
    print("limits (scripts/limits.c, %d threads, %s): FMA %.1f GFLOP/s double, %.1f single; "
          "vector exp %.2f G/s double, %.2f single"
          % (lim["threads"], lim["cpu"], lim["fma_gflops_f64"], lim["fma_gflops_f32"],
             lim["exp_gps_f64"], lim["exp_gps_f32"]))
    precs = ["f64"] + (["f32"] if has_precision(exe) else [])
    if len(precs) == 1:
        print("(this build has no --precision: double only)")
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
        print("(python3-torch not installed: no PyTorch peer)")

    print("\nexact attention, n = %d, RoPE, scale 1/sqrt(d), dv = d, best of %d runs (x limit: "
          "time over the limit above; bwd/fwd: the backward pass, grad's time less run's, over "
          "run's; grad/run: grad's time over run's)" % (n, args.repeat))
    print("%4s %4s %7s %4s %10s %10s %8s %8s %8s" % ("prec", "d", "mask", "dir", "time_s",
                                                     "limit_s", "x_limit", "bwd/fwd", "grad/run"))
    results, limits, torch_s = {}, {}, {}
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle, up = os.path.join(tmp, "in.npz"), os.path.join(tmp, "up.npy")
        for d in dims:
            run([exe, "gen", "--n", n, "--d", d, "--seed", "1", "-o", bundle])
            np.save(up, np.random.default_rng(d).normal(size=(n, d)))
            for prec in precs:
                for causal in (False, True):
                    fwd = None
                    for direction in ("fwd", "bwd"):
                        t = fastrope_time(exe, direction, bundle, up, prec, causal, tmp,
                                          args.repeat)
                        if t is None:
                            print("%4s %4d %7s %4s %10s" % (prec, d, "causal" if causal
                                                             else "none", direction, "n/a"))
                            continue
                        lm = limit_s(lim, prec, direction, n, d, d, causal)
                        results[(prec, d, causal, direction)] = t
                        limits[(prec, d, causal, direction)] = lm
                        pass_ratio = call_ratio = ""
                        if direction == "bwd" and fwd:
                            pass_ratio = "%7.2fx" % ((t - fwd) / fwd)
                            call_ratio = "%7.2fx" % (t / fwd)
                        if direction == "fwd":
                            fwd = t
                        print("%4s %4d %7s %4s %10.4f %10.4f %7.2fx %8s %8s"
                              % (prec, d, "causal" if causal else "none", direction, t, lm,
                                 t / lm, pass_ratio, call_ratio))
                        sys.stdout.flush()
            if have_torch and d in (8, 64, 128):
                with np.load(bundle) as z:
                    q, k, v = z["q"], z["k"], z["v"]
                tt, _ = torch_chunked(q, k, v, False)
                torch_s[d] = tt
                line = "  PyTorch f32 chunked attention, d = %d: %.4f s" % (d, tt)
                for prec in precs:
                    t = results.get((prec, d, False, "fwd"))
                    if t:
                        line += "; fastrope %s %.1fx faster" % (prec, tt / t)
                print(line)

        # correctness against numpy (and torch, the peer, must agree too)
        d = dims[0]
        run([exe, "gen", "--n", check_n, "--d", d, "--seed", "2", "-o", bundle])
        with np.load(bundle) as z:
            q, k, v = z["q"], z["k"], z["v"]
        ref = reference.attention(q, k, v, scale="sdpa")
        out = os.path.join(tmp, "out.npy")
        for prec, tol in (("f64", 1e-10), ("f32", 1e-5)):
            if prec not in precs:
                continue
            extra = ["--precision", prec] if prec != "f64" else []
            run([exe, "run", "--input", bundle, "--method", "exact", "--scale", "sdpa",
                 "--check-rows", "0", "--quiet", "-o", out, *extra])
            got = np.load(out)
            err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
            print("n = %d, d = %d: fastrope %s against numpy: max relative error %.1e "
                  "(tolerance %.0e)" % (check_n, d, prec, err, tol))
            if not err <= tol:
                failed.append("%s disagrees with numpy (%.1e)" % (prec, err))
        if have_torch:
            _, tout = torch_chunked(q, k, v, False)
            err = float(np.max(np.abs(tout - ref)) / np.max(np.abs(ref)))
            print("n = %d, d = %d: PyTorch f32 chunked against numpy: %.1e" % (check_n, d, err))

        run([exe, "gen", "--n", mem_n, "--d", 8, "--seed", "1", "-o", bundle])
        rss = peak_rss_mb([exe, "run", "--input", bundle, "--method", "exact", "--check-rows",
                           "0", "--quiet", "-o", out, "--report", os.path.join(tmp, "r.json")])
        print("peak memory, n = %d, d = 8: %.1f MB max RSS (compute %.3f s)"
              % (mem_n, rss, compute_time(os.path.join(tmp, "r.json"))))
        if not args.quick and rss >= 100:
            failed.append("peak RSS %.1f MB >= 100 MB" % rss)

    print_targets(results, limits, torch_s, n)
    if failed:
        print("FAILED: " + "; ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
