"""reproduce.py - the papers' claims, measured from the shell (driven by scripts/reproduce.sh).

Five experiments, each a CSV table, a Markdown section and (with matplotlib) a PNG plot in the
results folder:

  1. degree needed against B for several eps, and against n at fixed B / sqrt(ln n)
     (the polynomial-method side of the theorems);
  2. observed error against the a-priori bound over a sweep of B and eps on generated inputs
     (the bound must hold on every row);
  3. the bounded-entry threshold: fast-path time relative to exact as B grows past sqrt(ln n);
  4. scaling of the forward and backward passes with n;
  5. gradient error against eps (the backward paper).

Everything goes through the `fastrope` binary ($FASTROPE) and numpy; nothing here computes
attention itself. --quick shrinks every sweep so that the whole script runs in a test.
"""
import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np

FASTROPE = os.environ.get("FASTROPE") or os.path.join(os.path.dirname(__file__), "..", "build",
                                                      "fastrope")
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:  # plots are optional; the tables are the results
    plt = None


def fr(*args, check=True):
    r = subprocess.run([FASTROPE] + [str(a) for a in args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"fastrope {' '.join(map(str, args))}: {r.stderr.strip()}")
    return r


class Results:
    def __init__(self, out):
        self.out = out
        self.md = []
        self.failures = []
        os.makedirs(out, exist_ok=True)

    def table(self, name, rows, cols):
        with open(os.path.join(self.out, name + ".csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow(r)
        self.md.append("| " + " | ".join(cols) + " |")
        self.md.append("|" + "---|" * len(cols))
        for r in rows:
            self.md.append("| " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
        self.md.append("")

    def text(self, s):
        self.md.append(s)
        self.md.append("")

    def plot(self, name, caption, draw):
        if plt is None:
            self.text(f"*{name}.png not drawn: matplotlib is not installed.*")
            return
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        draw(ax)
        fig.tight_layout()
        fig.savefig(os.path.join(self.out, name + ".png"), dpi=110)
        plt.close(fig)
        self.text(f"![{caption}]({name}.png)\n\n*{caption}*")

    def write(self):
        with open(os.path.join(self.out, "results.md"), "w") as f:
            f.write("\n".join(self.md) + "\n")


def fmt(x):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def gen(tmp, n, d, B, seed=1, dv=None):
    path = os.path.join(tmp, f"in_{n}_{d}_{B}_{seed}.npz")
    if not os.path.exists(path):
        fr("gen", "--n", n, "--d", d, "--dv", dv or d, "--B", B, "--seed", seed, "-o", path)
    return path


def run(tmp, inp, method, *flags):
    rep = os.path.join(tmp, "rep.json")
    r = fr("run", "--input", inp, "--method", method, "-o", os.path.join(tmp, "out.npy"),
           "--report", rep, "--quiet", *flags, check=False)
    if r.returncode != 0:
        return None, r.stderr.strip()
    with open(rep) as f:
        return json.load(f), None


def grad(tmp, inp, method, n, dv, *flags):
    up = os.path.join(tmp, f"dout_{n}_{dv}.npy")
    if not os.path.exists(up):
        np.save(up, np.random.default_rng(5).normal(size=(n, dv)))
    rep = os.path.join(tmp, "grep.json")
    r = fr("grad", "--input", inp, "--dout", up, "--method", method, "-o",
           os.path.join(tmp, "g.npz"), "--report", rep, "--quiet", *flags, check=False)
    if r.returncode != 0:
        return None, r.stderr.strip()
    with open(rep) as f:
        return json.load(f), None


# ---- 1 ---------------------------------------------------------------------------------------

def degree_experiment(res, quick):
    res.text("## 1. Degree needed against the entry bound B\n\n"
             "`fastrope bound` (no data): the smallest polynomial degree whose certified "
             "relative error eta meets eps through the a-priori bound 2 eta/(1-eta) B, for "
             "standard RoPE with the papers' scale 1/d (so R = B^2), d = 8, n = 4096.")
    Bs = "0.25:3:0.25" if not quick else "0.5:2:0.5"
    epss = [1e-2, 1e-3, 1e-4, 1e-6] if not quick else [1e-2, 1e-4]
    rows = json.loads(fr("bound", "--n", 4096, "--d", 8, "--B", Bs, "--eps",
                         ",".join(map(str, epss)), "--format", "json").stdout)
    res.table("degree_vs_B", rows, ["B", "eps", "R", "degree", "eta", "a_priori_bound"])

    def draw(ax):
        for e in epss:
            xs = [r["B"] for r in rows if r["eps"] == e and r["degree"] is not None]
            ys = [r["degree"] for r in rows if r["eps"] == e and r["degree"] is not None]
            ax.plot(xs, ys, "o-", label=f"eps = {e:g}")
        ax.set_xlabel("entry bound B")
        ax.set_ylabel("polynomial degree g")
        ax.legend()
    res.plot("degree_vs_B", "Degree needed against B (standard RoPE, d = 8, scale 1/d); "
             "missing points: no fast method certifies eps there (the degree it needs is "
             "above --max-degree 24, or its plan too large, or its certified rounding above "
             "eps; `fastrope bound` says which).", draw)

    ns = [2 ** k for k in (range(10, 25, 2) if not quick else (10, 14, 18))]
    rows2 = []
    for c in (0.25, 0.5, 0.75):
        for n in ns:
            B = c * np.sqrt(np.log(n))
            r = json.loads(fr("bound", "--n", n, "--d", 8, "--B", repr(B), "--format",
                              "json").stdout)[0]
            r["c"] = c
            rows2.append(r)
    res.text("Degree against n at fixed B / sqrt(ln n) = c (eps = 1e-3): the theorems' regime "
             "B = o(sqrt(log n)) keeps the degree growing slowly with n.")
    res.table("degree_vs_n", rows2, ["c", "n", "B", "R", "degree", "eta"])

    def draw2(ax):
        for c in (0.25, 0.5, 0.75):
            pts = [(r["n"], r["degree"]) for r in rows2 if r["c"] == c and r["degree"] is not None]
            if pts:
                ax.semilogx(*zip(*pts), "o-", base=2, label=f"B / sqrt(ln n) = {c}")
        ax.set_xlabel("n (tokens)")
        ax.set_ylabel("polynomial degree g")
        ax.legend()
    res.plot("degree_vs_n", "Degree against n at fixed B / sqrt(ln n) (d = 8, eps = 1e-3).", draw2)


# ---- 2 ---------------------------------------------------------------------------------------

def error_experiment(res, tmp, quick):
    res.text("## 2. Observed error against the a-priori bound\n\n"
             "Generated uniform inputs with entries in [-B, B], standard RoPE, n = "
             f"{1024 if not quick else 256}, d = 4, every row checked against exact attention. "
             "The bound holds on every row when observed <= bound.")
    n = 1024 if not quick else 256
    rows = []
    for B in ([0.5, 1.0, 1.5, 2.0] if not quick else [0.5, 1.0]):
        for eps in ([1e-2, 1e-3, 1e-4, 1e-5] if not quick else [1e-2, 1e-4]):
            inp = gen(tmp, n, 4, B)
            for method in ("polyrope", "polyfft"):
                rep, err = run(tmp, inp, method, "--eps", eps, "--check-rows", "all")
                row = {"B": B, "eps": eps, "method": method}
                if rep is None:
                    row["note"] = err.replace("fastrope: ", "")[:60]
                else:
                    e = rep["error"]
                    row.update(degree=rep["poly"]["degree"], observed=e["max_abs"],
                               bound=e["a_priori_bound"],
                               ratio=e["max_abs"] / e["a_priori_bound"],
                               holds=e["max_abs"] <= e["a_priori_bound"])
                    if not row["holds"]:
                        res.failures.append(f"error bound violated: {row}")
                rows.append(row)
    res.table("error_vs_bound", rows, ["B", "eps", "method", "degree", "observed", "bound",
                                       "ratio", "holds", "note"])

    def draw(ax):
        for m, mk in (("polyrope", "o"), ("polyfft", "s")):
            pts = [(r["bound"], r["observed"]) for r in rows if r["method"] == m and "bound" in r]
            if pts:
                ax.loglog(*zip(*pts), mk, label=m)
        lo = min([r["observed"] for r in rows if "observed" in r] + [1e-12])
        hi = max([r["bound"] for r in rows if "bound" in r] + [1e-2])
        ax.loglog([lo, hi], [lo, hi], "k--", label="observed = bound")
        ax.set_xlabel("a-priori bound 2 eta/(1-eta) B_v")
        ax.set_ylabel("observed max |T_fast - T|")
        ax.legend()
    res.plot("error_vs_bound", "Observed max error against the a-priori bound (every point must "
             "lie below the dashed line).", draw)


# ---- 3 ---------------------------------------------------------------------------------------

def threshold_experiment(res, tmp, quick):
    n = 16384 if not quick else 512
    res.text("## 3. The bounded-entry threshold\n\n"
             f"Time of the fast path relative to exact attention as B grows, n = {n}, d = 4, "
             "standard RoPE, eps = 1e-3 (compute time, one run each). Past B ~ sqrt(ln n) the "
             "degree, and with it the cost, grows until the fast path stops paying or refuses.")
    rows = []
    exact_rep, _ = run(tmp, gen(tmp, n, 4, 1.0), "exact")
    t_exact = exact_rep["time_s"]["compute"]
    for B in (np.arange(0.25, 3.01, 0.25) if not quick else [0.5, 1.0, 3.0]):
        inp = gen(tmp, n, 4, float(B))
        row = {"B": float(B), "B_over_sqrt_ln_n": float(B) / np.sqrt(np.log(n)),
               "exact_s": t_exact}
        # The cost model says how long a run would take: past a minute it is reported, not run.
        pred = json.loads(fr("bound", "--n", n, "--d", 4, "--B", repr(float(B)),
                             "--format", "json").stdout)[0]["predicted_s"]
        for m in ("polyrope", "polyfft"):
            if pred.get(m) is not None and pred[m] > 60:
                row[m + "_s"] = None
                row[m + "_note"] = f"skipped: predicted {pred[m]:.0f} s"
                continue
            rep, err = run(tmp, inp, m, "--check-rows", 0)
            if rep is None:
                row[m + "_s"] = None
                refused = any(w in err for w in ("refused", "fast regime", "below", "beyond"))
                row[m + "_note"] = "refused" if refused else err[:40]
            else:
                row[m + "_s"] = rep["time_s"]["compute"]
                row[m + "_degree"] = rep["poly"]["degree"]
                row[m + "_ratio"] = rep["time_s"]["compute"] / t_exact
        rows.append(row)
    res.table("threshold", rows, ["B", "B_over_sqrt_ln_n", "exact_s", "polyrope_degree",
                                  "polyrope_s", "polyrope_ratio", "polyrope_note",
                                  "polyfft_degree", "polyfft_s", "polyfft_ratio",
                                  "polyfft_note"])

    def draw(ax):
        for m in ("polyrope", "polyfft"):
            pts = [(r["B_over_sqrt_ln_n"], r[m + "_ratio"]) for r in rows if r.get(m + "_ratio")]
            if pts:
                ax.semilogy(*zip(*pts), "o-", label=m)
        ax.axhline(1, color="k", ls="--", label="exact")
        ax.set_xlabel("B / sqrt(ln n)")
        ax.set_ylabel("time relative to exact")
        ax.legend()
    res.plot("threshold", f"Fast-path time relative to exact against B / sqrt(ln n) (n = {n}, "
             "d = 4); points end where the method refuses.", draw)


# ---- 4 ---------------------------------------------------------------------------------------

def scaling_experiment(res, tmp, quick):
    ns = [1024, 4096, 16384, 65536] if not quick else [128, 256]
    res.text("## 4. Scaling with n (forward and backward)\n\n"
             "B = 1 uniform inputs, d = 4, standard RoPE and clipped RoPE (C = 64), eps = 1e-3; "
             "compute time in seconds (no check). Exact is measured up to "
             f"n = {ns[-1] if quick else 16384} and extrapolated as c n^2 beyond (marked ~).")
    rows = []
    exact_max = 16384 if not quick else ns[-1]
    for rot in (["--rope"], ["--rope-clip", "64"]):
        for n in ns:
            inp = gen(tmp, n, 4, 1.0)
            row = {"rotation": " ".join(rot), "n": n}
            for m in ("exact", "polyrope", "polyfft"):
                if m == "polyrope" and rot[0] != "--rope":
                    continue
                if m == "exact" and n > exact_max:
                    continue
                rep, _ = run(tmp, inp, m, "--check-rows", 0, *rot)
                row[m + "_fwd"] = rep["time_s"]["compute"] if rep else None
                rep, _ = grad(tmp, inp, m, n, 4, "--check-rows", 0, *rot)
                row[m + "_bwd"] = rep["time_s"]["compute"] if rep else None
            rows.append(row)
        # exact beyond the measured range: c n^2 from the largest measured n
        meas = [r for r in rows if r["rotation"] == " ".join(rot) and r.get("exact_fwd")]
        if meas:
            last = meas[-1]
            for r in rows:
                if r["rotation"] == " ".join(rot) and "exact_fwd" not in r:
                    f = (r["n"] / last["n"]) ** 2
                    r["exact_fwd"] = f"~{last['exact_fwd'] * f:.3g}"
                    if last.get("exact_bwd"):
                        r["exact_bwd"] = f"~{last['exact_bwd'] * f:.3g}"
    res.table("scaling", rows, ["rotation", "n", "exact_fwd", "exact_bwd", "polyrope_fwd",
                                "polyrope_bwd", "polyfft_fwd", "polyfft_bwd"])

    def draw(ax):
        for rot in ("--rope", "--rope-clip 64"):
            for m, ls in (("exact", ":"), ("polyrope", "-"), ("polyfft", "--")):
                for pas in ("fwd", "bwd"):
                    pts = [(r["n"], r[f"{m}_{pas}"]) for r in rows if r["rotation"] == rot and
                           isinstance(r.get(f"{m}_{pas}"), float)]
                    if pts:
                        ax.loglog(*zip(*pts), ls, marker="o" if pas == "fwd" else "x",
                                  label=f"{m} {pas} ({rot.strip('-')})")
        ax.set_xlabel("n (tokens)")
        ax.set_ylabel("compute time (s)")
        ax.legend(fontsize=6)
    res.plot("scaling", "Forward (o) and backward (x) compute time against n, d = 4, B = 1, "
             "eps = 1e-3.", draw)


# ---- 5 ---------------------------------------------------------------------------------------

def grad_error_experiment(res, tmp, quick):
    n = 512 if not quick else 128
    res.text("## 5. Gradient error against eps\n\n"
             f"`fastrope grad --dout G` with G standard normal, n = {n}, d = 4, B = 1, standard "
             "RoPE; max abs difference of each fast gradient from the exact gradient, all rows.")
    rows = []
    inp = gen(tmp, n, 4, 1.0)
    for eps in ([1e-2, 1e-3, 1e-4, 1e-5, 1e-6] if not quick else [1e-2, 1e-4]):
        for m in ("polyrope", "polyfft"):
            rep, err = grad(tmp, inp, m, n, 4, "--eps", eps)
            row = {"eps": eps, "method": m}
            if rep is None:
                row["note"] = err.replace("fastrope: ", "")[:60]
            else:
                e = rep["error"]
                row.update(degree=rep["poly"]["degree"], dq=e["dq"]["max_abs"],
                           dk=e["dk"]["max_abs"], dv=e["dv"]["max_abs"])
            rows.append(row)
    res.table("grad_error", rows, ["eps", "method", "degree", "dq", "dk", "dv", "note"])

    def draw(ax):
        for m, mk in (("polyrope", "o"), ("polyfft", "s")):
            for g, ls in (("dq", "-"), ("dk", "--"), ("dv", ":")):
                pts = [(r["eps"], r[g]) for r in rows if r["method"] == m and g in r]
                if pts:
                    ax.loglog(*zip(*pts), ls, marker=mk, label=f"{m} {g}")
        ax.set_xlabel("requested eps (forward)")
        ax.set_ylabel("max |grad_fast - grad_exact|")
        ax.legend(fontsize=7)
    res.plot("grad_error", "Gradient error against the requested forward eps (n = "
             f"{n}, d = 4).", draw)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sweeps (a test)")
    ap.add_argument("--out", default="build/reproduce")
    ap.add_argument("--only", help="comma list of experiment numbers")
    a = ap.parse_args()
    res = Results(a.out)
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    res.text(f"# fastrope: reproducing the papers\n\nRun {datetime.date.today()} on "
             f"{platform.node()} ({cpu}, {os.cpu_count()} cores){' in --quick mode' if a.quick else ''}"
             f" with `{os.path.basename(FASTROPE)}` "
             f"{fr('--version').stdout.strip()}: `scripts/reproduce.sh{' --quick' if a.quick else ''}`.")
    only = set(a.only.split(",")) if a.only else {"1", "2", "3", "4", "5"}
    with tempfile.TemporaryDirectory(prefix="fr-repro-") as tmp:
        steps = [("1", lambda: degree_experiment(res, a.quick)),
                 ("2", lambda: error_experiment(res, tmp, a.quick)),
                 ("3", lambda: threshold_experiment(res, tmp, a.quick)),
                 ("4", lambda: scaling_experiment(res, tmp, a.quick)),
                 ("5", lambda: grad_error_experiment(res, tmp, a.quick))]
        for k, step in steps:
            if k in only:
                print(f"reproduce: experiment {k}", file=sys.stderr, flush=True)
                step()
    if plt is None:
        print("reproduce: matplotlib is not installed: tables only, no plots", file=sys.stderr)
    res.write()
    print(f"reproduce: results in {a.out}/results.md", file=sys.stderr)
    for f in res.failures:
        print("reproduce: FAILED:", f, file=sys.stderr)
    return 1 if res.failures else 0


if __name__ == "__main__":
    sys.exit(main())
