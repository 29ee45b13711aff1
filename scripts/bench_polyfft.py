#!/usr/bin/python3
"""bench_polyfft.py - the polynomial + FFT pipeline: polyfft (spectral accumulation) vs
polyfft-literal (the paper's algorithm as written) vs exact attention.

    FASTROPE=build/fastrope /usr/bin/python3 scripts/bench_polyfft.py [--quick] [--out DIR]

For d in {4, 8}, clipped RoPE (C = 64, the general-W path) and standard RoPE, and n in
{1K, 4K, 16K, 64K, 256K} (B = 1, one head, eps 1e-3), runs `fastrope run --method M` and reads
`time_s.compute` from the report. polyfft-literal runs only while its next size is predicted
(n log n from the last one) to stay under --literal-timeout. Exact is measured up to
--exact-max-n and beyond that extrapolated as c n^2 from the largest measured size (marked '~'
in the table, `extrapolated` in the CSV). Also the peak memory of polyfft at n = 2^20, d = 4,
standard RoPE (/usr/bin/time -v), unless --quick or --no-mem.

Every method's run that takes under --repeat-below seconds is repeated, best of --repeat (3):
this VM's timings drift by 10-20% from run to run, and the crossover compares close numbers.

Writes DIR/bench_polyfft.csv and DIR/bench_polyfft.png (log-log time vs n, with fitted
exponents and the polyfft/exact crossover) and prints a table. Wall-clock times: the machine
must be quiet.
"""
import argparse
import csv
import json
import math
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FASTROPE = os.environ.get("FASTROPE") or os.path.join(HERE, "..", "build", "fastrope")
ROTATIONS = {"clip64": ["--rope-clip", "64"], "rope": ["--rope"]}
METHODS = ["polyfft", "polyfft-literal", "exact"]


def run(args, timeout, prefix=()):
    """Run fastrope; returns (stderr text, error or None)."""
    try:
        p = subprocess.run(list(prefix) + [FASTROPE] + [str(a) for a in args],
                           capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "", "timeout"
    err = p.stderr.decode(errors="replace")
    if p.returncode != 0:
        return err, "exit %d: %s" % (p.returncode, err.strip().splitlines()[-1:] or "")
    return err, None


def time_method(inp, rot, method, eps, tmp, timeout, repeat=1, repeat_below=0.0):
    """The report of the fastest of up to `repeat` runs (one when the first takes longer than
    repeat_below seconds)."""
    rep = os.path.join(tmp, "rep.json")
    best = None
    for i in range(repeat):
        _, err = run(["run", "--input", inp] + ROTATIONS[rot] +
                     ["--method", method, "--eps", eps, "-o", os.path.join(tmp, "out.npy"),
                      "--report", rep, "--check-rows", "0", "--quiet"], timeout)
        if err:
            return None, err
        with open(rep) as f:
            r = json.load(f)
        if best is None or r["time_s"]["compute"] < best["time_s"]["compute"]:
            best = r
        if r["time_s"]["compute"] >= repeat_below:
            break
    return best, None


def gen(n, d, seed, tmp):
    path = os.path.join(tmp, "in_%d_%d.npz" % (n, d))
    if not os.path.exists(path):
        _, err = run(["gen", "--n", n, "--d", d, "--B", 1, "--seed", seed, "-o", path], 600)
        if err:
            sys.exit("gen failed: " + err)
    return path


def fit_exponent(ns, ts):
    """Least-squares slope of log t against log n (None with fewer than 2 points)."""
    pts = [(math.log(n), math.log(t)) for n, t in zip(ns, ts) if t and t > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def crossover(ns, fast, slow):
    """Smallest n where fast < slow, interpolated log-log between the sizes around it."""
    prev = None
    for n, a, b in zip(ns, fast, slow):
        if a is None or b is None:
            continue
        if a < b:
            if prev is None:
                return n
            n0, a0, b0 = prev
            r0, r1 = math.log(a0 / b0), math.log(a / b)
            x = math.log(n0) + (math.log(n) - math.log(n0)) * r0 / (r0 - r1)
            return int(round(math.exp(x)))
        prev = (n, a, b)
    return None


def peak_memory(n, d, eps, tmp, timeout):
    inp = gen(n, d, 1, tmp)
    err, e = run(["run", "--input", inp, "--rope", "--method", "polyfft", "--eps", eps, "-o",
                  os.path.join(tmp, "out.npy"), "--check-rows", "0", "--quiet"], timeout,
                 prefix=["/usr/bin/time", "-v"])
    if e:
        return None, e
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    return (int(m.group(1)) / 1024.0 if m else None), None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--quick", action="store_true", help="a smoke test: small sizes only")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "build", "bench"))
    ap.add_argument("--eps", default="1e-3")
    ap.add_argument("--dims", default=None, help="comma list of d (default 4,8)")
    ap.add_argument("--sizes", default=None, help="comma list of n (default 1K..256K)")
    ap.add_argument("--exact-max-n", type=int, default=16384)
    ap.add_argument("--literal-timeout", type=float, default=180.0)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--no-mem", action="store_true", help="skip the peak memory run at 2^20")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs ...")
    ap.add_argument("--repeat-below", type=float, default=10.0,
                    help="... for runs shorter than this many seconds")
    a = ap.parse_args()
    dims = [int(x) for x in (a.dims or ("4" if a.quick else "4,8")).split(",")]
    sizes = [int(x) for x in (a.sizes or ("256,1024" if a.quick else
                                           "1024,4096,16384,65536,262144")).split(",")]
    if a.quick:
        a.exact_max_n = min(a.exact_max_n, 1024)
    os.makedirs(a.out, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for d in dims:
            for rot in ROTATIONS:
                lit_last = None
                exact_last = None
                for n in sizes:
                    inp = gen(n, d, 1, tmp)
                    row = {"d": d, "rotation": rot, "n": n}
                    for m in METHODS:
                        t, note = None, ""
                        if m == "polyfft-literal" and lit_last:
                            n0, t0 = lit_last
                            pred = t0 * n * math.log(n) / (n0 * math.log(n0))
                            if pred > a.literal_timeout:
                                note = "skipped (predicted %.0f s)" % pred
                        if m == "exact" and n > a.exact_max_n and exact_last:
                            n0, t0 = exact_last
                            t, note = t0 * (n / n0) ** 2, "extrapolated"
                        if t is None and not note:
                            tl = a.literal_timeout if m == "polyfft-literal" else a.timeout
                            rep, err = time_method(inp, rot, m, a.eps, tmp, tl, a.repeat,
                                                   a.repeat_below)
                            if err:
                                note = err
                            else:
                                t = rep["time_s"]["compute"]
                                if m == "polyfft":
                                    row["degree"] = (rep.get("poly") or {}).get("degree")
                                if m == "polyfft-literal":
                                    lit_last = (n, t)
                                if m == "exact":
                                    exact_last = (n, t)
                        row[m] = t
                        row[m + "_note"] = note
                    rows.append(row)
                    print("d=%d %-6s n=%-7d %s" % (d, rot, n, "  ".join(
                        "%s=%s%s" % (m, "~" if row[m + "_note"] == "extrapolated" else "",
                                     "%.4g" % row[m] if row[m] is not None else "-")
                        for m in METHODS)), flush=True)
        mem = None
        if not a.quick and not a.no_mem:
            mem, err = peak_memory(1 << 20, 4, a.eps, tmp, a.timeout)
            if err:
                print("peak memory run failed: " + err)

    path = os.path.join(a.out, "bench_polyfft.csv")
    keys = ["d", "rotation", "n", "degree"] + sum([[m, m + "_note"] for m in METHODS], [])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)

    print("\n%-3s %-7s %8s %4s %12s %16s %12s %9s" % ("d", "rot", "n", "g", "polyfft s",
                                                       "literal s", "exact s", "speedup"))
    summary = []
    for d in dims:
        for rot in ROTATIONS:
            rs = [r for r in rows if r["d"] == d and r["rotation"] == rot]
            for r in rs:
                def fmt(m):
                    if r[m] is None:
                        return "-"
                    return ("~" if r[m + "_note"] == "extrapolated" else "") + "%.4g" % r[m]
                sp = (r["exact"] / r["polyfft"]) if r["exact"] and r["polyfft"] else None
                print("%-3d %-7s %8d %4s %12s %16s %12s %9s" % (
                    d, rot, r["n"], r.get("degree", "") or "", fmt("polyfft"),
                    fmt("polyfft-literal"), fmt("exact"), "%.2fx" % sp if sp else "-"))
            ns = [r["n"] for r in rs]
            big = [(r["n"], r["polyfft"]) for r in rs if r["n"] >= 4096 and r["polyfft"]]
            e_fft = fit_exponent([x[0] for x in big], [x[1] for x in big])
            e_lit = fit_exponent(ns, [r["polyfft-literal"] for r in rs])
            cross = crossover(ns, [r["polyfft"] for r in rs], [r["exact"] for r in rs])
            summary.append((d, rot, e_fft, e_lit, cross))
            print("    d=%d %s: polyfft exponent %s (n >= 4K), literal exponent %s, crossover "
                  "with exact at n ~ %s" % (d, rot, "%.2f" % e_fft if e_fft else "-",
                                            "%.2f" % e_lit if e_lit else "-", cross or "-"))
    if mem is not None:
        print("peak memory, polyfft n = 2^20, d = 4, standard RoPE, eps %s: %.0f MB" %
              (a.eps, mem))
    print("(~: exact extrapolated as c n^2 from the largest measured size)")
    print("wrote " + path)

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    fig, axes = plt.subplots(1, len(dims), figsize=(6 * len(dims), 4.5), squeeze=False)
    styles = {"polyfft": "-o", "polyfft-literal": "--s", "exact": ":^"}
    for ax, d in zip(axes[0], dims):
        for rot in ROTATIONS:
            rs = [r for r in rows if r["d"] == d and r["rotation"] == rot]
            s = [x for x in summary if x[0] == d and x[1] == rot][0]
            for m in METHODS:
                pts = [(r["n"], r[m]) for r in rs if r[m]]
                if not pts:
                    continue
                lab = "%s %s" % (m, rot)
                if m == "polyfft" and s[2]:
                    lab += " (n^%.2f)" % s[2]
                if m == "polyfft-literal" and s[3]:
                    lab += " (n^%.2f)" % s[3]
                if m == "exact":
                    lab += " (dotted beyond %d: extrapolated)" % a.exact_max_n
                ax.loglog([p[0] for p in pts], [p[1] for p in pts], styles[m], label=lab)
            if s[4]:
                ax.axvline(s[4], color="gray", lw=0.5)
        ax.set_xlabel("n")
        ax.set_ylabel("compute time (s)")
        ax.set_title("d = %d, eps %s" % (d, a.eps))
        ax.legend(fontsize=7)
        ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    png = os.path.join(a.out, "bench_polyfft.png")
    fig.savefig(png, dpi=120)
    print("wrote " + png)


if __name__ == "__main__":
    main()
