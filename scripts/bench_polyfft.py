#!/usr/bin/python3
"""bench_polyfft.py - the polynomial + FFT pipeline: polyfft (spectral accumulation) on each
FFT back end (KissFFT, FFTW double, FFTW float) vs polyfft-literal (the paper's algorithm as
written) vs exact attention.

    FASTROPE=build/fastrope /usr/bin/python3 scripts/bench_polyfft.py [--quick] [--out DIR]

For d in {4, 8}, clipped RoPE (C = 64, the general-W path) and standard RoPE, and n in
{1K, 4K, 16K, 64K, 256K} (B = 1, one head, eps 1e-3), runs `fastrope run --method M [--fft F]`
and reads `time_s.compute` from the report. polyfft-literal (on the default back end) runs only
while its next size is predicted (n log n from the last one) to stay under --literal-timeout.
Exact is measured up to --exact-max-n and beyond that extrapolated as c n^2 from the largest
measured size (marked '~' in the table, `extrapolated` in the CSV). Also the peak memory (max
RSS, /usr/bin/time -v) of polyfft at n = 2^20, d = 4, on the first rotation, on each back end
that certifies eps there, unless --quick or --no-mem (a back end the certificate refuses there is
reported as refused, with the certified rounding bound the command gave).

FFTW measures its plans once per machine and size and keeps them (wisdom) in the cache directory
($XDG_CACHE_HOME/fastrope): before timing an FFTW back end at a size, one cheap untimed run
(--degree 1) makes sure the plans are there, so the figures are those of every run after the
first on this machine.

A single-precision back end whose certificate refuses eps (its certified rounding is normwise
and passes 1 near n = 64K, so `fastrope run` exits 4 at any eps) is timed instead by
scripts/bench_pass.c (built here against build/libfastrope.a): plan + execute of the same pass at
the degree the double back end's certified run used, without the certificate. Such cells are
marked '*' in the table and `forced degree G, uncertified` in the CSV.

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
FFTS = ["kissfft", "fftw", "fftw-float"]
# A method column: the CLI method and its FFT back end (None: the default).
COLUMNS = {"polyfft-" + f: ("polyfft", f) for f in FFTS}
COLUMNS.update({"polyfft-literal": ("polyfft-literal", None), "exact": ("exact", None)})


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


def fft_args(fft):
    return ["--fft", fft] if fft else []


def prime_wisdom(inp, rot, fft, tmp, timeout):
    """One untimed polyfft run of degree 1 (a handful of transforms) on FFTW, so that the plans of
    this transform size are measured and in the wisdom before anything is timed. eps 1e30: the
    certificate must accept it (degree 0 it never does: exp's fit by a constant is off by 100%),
    or nothing is planned."""
    if fft and fft.startswith("fftw"):
        run(["run", "--input", inp] + ROTATIONS[rot] + ["--method", "polyfft", "--degree", "1",
                                                         "--eps", "1e30"] +
            fft_args(fft) + ["-o", os.path.join(tmp, "out.npy"), "--check-rows", "0", "--quiet"],
            timeout)


def time_method(inp, rot, column, eps, tmp, timeout, repeat=1, repeat_below=0.0):
    """The report of the fastest of up to `repeat` runs (one when the first takes longer than
    repeat_below seconds)."""
    rep = os.path.join(tmp, "rep.json")
    method, fft = COLUMNS[column]
    prime_wisdom(inp, rot, fft, tmp, timeout)
    best = None
    for i in range(repeat):
        _, err = run(["run", "--input", inp] + ROTATIONS[rot] +
                     ["--method", method, "--eps", eps] + fft_args(fft) +
                     ["-o", os.path.join(tmp, "out.npy"),
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


def build_pass(tmp):
    """scripts/bench_pass.c against the built library, with the project's optimisation flags."""
    exe = os.path.join(tmp, "bench_pass")
    lib = os.path.join(os.path.dirname(os.path.abspath(FASTROPE)), "libfastrope.a")
    libs = subprocess.run(["pkg-config", "--libs", "kissfft-float", "fftw3", "fftw3f"],
                          capture_output=True, text=True).stdout.split()
    r = subprocess.run(["cc", "-std=c11", "-D_GNU_SOURCE", "-O2", "-march=native", "-fopenmp",
                        "-fno-math-errno", "-I" + os.path.join(HERE, "..", "core"),
                        os.path.join(HERE, "bench_pass.c"), lib, "-o", exe] + libs + ["-lm"],
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit("building bench_pass failed: " + r.stderr)
    return exe


def time_pass(exe, n, d, rot, degree, fft, repeat, timeout):
    """(seconds, None) or (None, error): the pass at a forced degree, uncertified."""
    clip = ROTATIONS[rot][1] if rot.startswith("clip") else "-1"
    try:
        p = subprocess.run([str(x) for x in (exe, n, d, clip, degree, fft, repeat)],
                           capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "timeout"
    if p.returncode:
        return None, "bench_pass: " + p.stderr.strip()
    return json.loads(p.stdout)["seconds"], None


def gen(n, d, seed, tmp):
    path = os.path.join(tmp, "in_%d_%d.npz" % (n, d))
    if not os.path.exists(path):
        _, err = run(["gen", "--n", n, "--d", d, "--B", 1, "--seed", seed, "-o", path], 600)
        if err:
            sys.exit("gen failed: " + err)
    return path


def mark(row, m):
    note = row[m + "_note"]
    return "~" if note == "extrapolated" else "*" if note.startswith("forced") else ""


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


def refusal(err):
    """'refused by the certificate (...)' when the command's stderr says the plan refused eps
    (exit 4 before any computation), naming the certified rounding bound it gave; else None."""
    if "refused" not in err:
        return None
    m = re.search(r"certified rounding bound of a row with all (\d+) keys is ([0-9.eE+-]+)", err)
    if m:
        return "refused by the certificate (certified rounding bound %s at %s keys)" % (
            m.group(2), m.group(1))
    if "exceeds the smallest row sum" in err:
        # The rounding bound on a row sum is above the smallest row sum itself: no finite bound.
        return ("refused by the certificate (certified rounding bound unbounded: the rounding "
                "bound on a row sum exceeds the smallest row sum)")
    return "refused by the certificate"


def peak_memory(n, d, rot, eps, fft, tmp, timeout):
    inp = gen(n, d, 1, tmp)
    # No priming run: wisdom changes the time, not the peak, and a back end the certificate
    # refuses stops before planning any transform.
    err, e = run(["run", "--input", inp] + ROTATIONS[rot] + ["--method", "polyfft", "--eps", eps] +
                 fft_args(fft) + ["-o", os.path.join(tmp, "out.npy"), "--check-rows", "0",
                                  "--quiet"], timeout, prefix=["/usr/bin/time", "-v"])
    if e:
        return None, refusal(err) or e
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
    ap.add_argument("--no-mem", action="store_true", help="skip the peak memory runs at 2^20")
    ap.add_argument("--ffts", default=",".join(FFTS),
                    help="comma list of FFT back ends for polyfft (default all: %s)" %
                    ",".join(FFTS))
    ap.add_argument("--no-literal", action="store_true", help="skip polyfft-literal")
    ap.add_argument("--rotations", default=",".join(ROTATIONS),
                    help="comma list of rotations (default all: %s)" % ",".join(ROTATIONS))
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs ...")
    ap.add_argument("--repeat-below", type=float, default=10.0,
                    help="... for runs shorter than this many seconds")
    a = ap.parse_args()
    dims = [int(x) for x in (a.dims or ("4" if a.quick else "4,8")).split(",")]
    sizes = [int(x) for x in (a.sizes or ("256,1024" if a.quick else
                                           "1024,4096,16384,65536,262144")).split(",")]
    ffts = [f for f in a.ffts.split(",") if f]
    bad = [f for f in ffts if f not in FFTS]
    if bad:
        sys.exit("--ffts: unknown back end(s) %s (known: %s)" % (",".join(bad), ",".join(FFTS)))
    rots = [r for r in a.rotations.split(",") if r]
    if [r for r in rots if r not in ROTATIONS]:
        sys.exit("--rotations: known ones are %s" % ",".join(ROTATIONS))
    fast = ["polyfft-" + f for f in ffts]
    methods = fast + ([] if a.no_literal else ["polyfft-literal"]) + ["exact"]
    fftw_cols = [m for m in fast if "fftw" in m]
    if a.quick:
        a.exact_max_n = min(a.exact_max_n, 1024)
    os.makedirs(a.out, exist_ok=True)
    rows = []
    mems = {}
    exe = None
    with tempfile.TemporaryDirectory() as tmp:
        for d in dims:
            for rot in rots:
                lit_last = None
                exact_last = None
                for n in sizes:
                    inp = gen(n, d, 1, tmp)
                    row = {"d": d, "rotation": rot, "n": n}
                    for m in methods:
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
                                if m in fast:
                                    row["degree"] = (rep.get("poly") or {}).get("degree")
                                if m == "polyfft-literal":
                                    lit_last = (n, t)
                                if m == "exact":
                                    exact_last = (n, t)
                        row[m] = t
                        row[m + "_note"] = note
                    for m in fast:
                        if row[m] is None and "exit 4" in row[m + "_note"] and row.get("degree"):
                            exe = exe or build_pass(tmp)
                            t, err = time_pass(exe, n, d, rot, row["degree"], COLUMNS[m][1],
                                               a.repeat, a.timeout)
                            row[m] = t
                            row[m + "_note"] = err or ("forced degree %d, uncertified" %
                                                       row["degree"])
                    rows.append(row)
                    print("d=%d %-6s n=%-7d %s" % (d, rot, n, "  ".join(
                        "%s=%s%s" % (m, mark(row, m),
                                     "%.4g" % row[m] if row[m] is not None else "-")
                        for m in methods)), flush=True)
        if not a.quick and not a.no_mem:
            for m in fast:
                mem, err = peak_memory(1 << 20, 4, rots[0], a.eps, COLUMNS[m][1], tmp,
                                       a.timeout)
                if err and err.startswith("refused"):
                    mems[m] = err
                elif err:
                    print("peak memory run (%s) failed: %s" % (m, err))
                else:
                    mems[m] = mem

    def best_fftw(r):
        ts = [(r[m], m) for m in fftw_cols if r.get(m)]
        return min(ts) if ts else (None, None)

    path = os.path.join(a.out, "bench_polyfft.csv")
    keys = ["d", "rotation", "n", "degree"] + sum([[m, m + "_note"] for m in methods], [])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)

    short = {"polyfft-kissfft": "kissfft s", "polyfft-fftw": "fftw s",
             "polyfft-fftw-float": "fftw-f s", "polyfft-literal": "literal s", "exact": "exact s"}
    extra = ["vs kiss", "vs exact"] if fftw_cols else ["vs exact"]
    print("\n%-3s %-7s %8s %4s " % ("d", "rot", "n", "g") +
          " ".join("%11s" % short[m] for m in methods) + " " +
          " ".join("%9s" % e for e in extra))
    summary = []
    for d in dims:
        for rot in rots:
            rs = [r for r in rows if r["d"] == d and r["rotation"] == rot]
            for r in rs:
                def fmt(m):
                    if r[m] is None:
                        return "-"
                    return mark(r, m) + "%.4g" % r[m]
                tb, _ = best_fftw(r) if fftw_cols else (r.get(fast[0]) if fast else None, None)
                cells = []
                if fftw_cols:
                    k = r.get("polyfft-kissfft")
                    cells.append("%.2fx" % (k / tb) if k and tb else "-")
                cells.append("%.2fx" % (r["exact"] / tb) if r["exact"] and tb else "-")
                print("%-3d %-7s %8d %4s " % (d, rot, r["n"], r.get("degree", "") or "") +
                      " ".join("%11s" % fmt(m) for m in methods) + " " +
                      " ".join("%9s" % c for c in cells))
            ns = [r["n"] for r in rs]
            line = []
            for m in fast + (["polyfft-literal"] if "polyfft-literal" in methods else []):
                big = [(r["n"], r[m]) for r in rs if r["n"] >= 4096 and r[m]]
                e = fit_exponent([x[0] for x in big], [x[1] for x in big]) \
                    if m != "polyfft-literal" else fit_exponent(ns, [r[m] for r in rs])
                cross = crossover(ns, [r[m] for r in rs], [r["exact"] for r in rs])
                summary.append((d, rot, m, e, cross))
                line.append("%s n^%s, crossover n ~ %s" % (m, "%.2f" % e if e else "-",
                                                           cross or "-"))
            print("    d=%d %s: %s" % (d, rot, "; ".join(line)))
    for m, mem in mems.items():
        print("peak memory (max RSS), %s n = 2^20, d = 4, %s, eps %s: %s" %
              (m, rots[0], a.eps, mem if isinstance(mem, str) else "%.0f MB" % mem))
    print("(vs kiss: KissFFT's polyfft time over the best FFTW back end's; vs exact: exact over "
          "the best FFTW back end's (or the only polyfft); ~: exact extrapolated as c n^2 from "
          "the largest measured size; *: refused by the certificate, the pass timed at the double "
          "back end's degree without it, scripts/bench_pass.c)")
    print("wrote " + path)

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    fig, axes = plt.subplots(1, len(dims), figsize=(6 * len(dims), 4.5), squeeze=False)
    styles = {"polyfft-kissfft": "-o", "polyfft-fftw": "-D", "polyfft-fftw-float": "-v",
              "polyfft-literal": "--s", "exact": ":^"}
    for ax, d in zip(axes[0], dims):
        for rot in rots:
            rs = [r for r in rows if r["d"] == d and r["rotation"] == rot]
            for m in methods:
                pts = [(r["n"], r[m]) for r in rs if r[m]]
                if not pts:
                    continue
                lab = "%s %s" % (m, rot)
                s_m = [x for x in summary if x[0] == d and x[1] == rot and x[2] == m]
                if s_m and s_m[0][3]:
                    lab += " (n^%.2f)" % s_m[0][3]
                if m == "exact":
                    lab += " (dotted beyond %d: extrapolated)" % a.exact_max_n
                ax.loglog([p[0] for p in pts], [p[1] for p in pts], styles[m], label=lab)
        ax.set_xlabel("n")
        ax.set_ylabel("compute time (s)")
        ax.set_title("d = %d, eps %s" % (d, a.eps))
        ax.legend(fontsize=6)
        ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    png = os.path.join(a.out, "bench_polyfft.png")
    fig.savefig(png, dpi=120)
    print("wrote " + png)

if __name__ == "__main__":
    main()
