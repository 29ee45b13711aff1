#!/usr/bin/python3
"""bench_grad.py - backward (fastrope grad) against forward (fastrope run), per method.

    FASTROPE=build/fastrope /usr/bin/python3 scripts/bench_grad.py [--quick] [--out DIR]

For d in {4, 8}, clipped RoPE (C = 64, the general-W path) and standard RoPE, and n in
{1K, 4K, 16K, 64K, 256K} (B = 1, one head, eps 1e-3, a random upstream gradient), times the
forward (`fastrope run`) and the backward (`fastrope grad --dout`) of exact, polyfft and
polyrope (standard RoPE only: it refuses a general W), reading `time_s.compute` from the
report (--check-rows 0). Exact is measured up to --exact-max-n and extrapolated beyond as
c n^2 from the largest measured size ('~'). A method whose backward is not implemented yet is
reported as such, not as a failure of the script.

Targets (printed as verdicts): a fast backward costs at most 3x its own forward, and its
crossover with the exact backward comes no later than the forward's crossover with the exact
forward. Writes DIR/bench_grad.csv and prints a table. Wall-clock times: the machine must be
quiet.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from bench_polyfft import crossover

HERE = os.path.dirname(os.path.abspath(__file__))
FASTROPE = os.environ.get("FASTROPE") or os.path.join(HERE, "..", "build", "fastrope")
ROTATIONS = {"clip64": ["--rope-clip", "64"], "rope": ["--rope"]}
METHODS = ["exact", "polyfft", "polyrope"]
TARGET_RATIO = 3.0


def run(args, timeout):
    """Run fastrope; returns an error string or None."""
    try:
        p = subprocess.run([FASTROPE] + [str(a) for a in args], capture_output=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip().splitlines()
        msg = err[-1] if err else ""
        if "not implemented" in msg:
            return "not implemented"
        return "exit %d: %s" % (p.returncode, msg)
    return None


def inputs(n, d, tmp):
    inp = os.path.join(tmp, "in_%d_%d.npz" % (n, d))
    up = os.path.join(tmp, "up_%d_%d.npy" % (n, d))
    if not os.path.exists(inp):
        err = run(["gen", "--n", n, "--d", d, "--B", 1, "--seed", 1, "-o", inp], 600)
        if err:
            sys.exit("gen failed: " + err)
        np.save(up, np.random.default_rng(n + d).normal(size=(n, d)))
    return inp, up


def timed(kind, inp, up, rot, method, eps, tmp, timeout):
    """(compute seconds, degree) of `fastrope run` (kind 'fwd') or `fastrope grad` ('bwd')."""
    rep = os.path.join(tmp, "rep.json")
    if os.path.exists(rep):
        os.remove(rep)
    common = ROTATIONS[rot] + ["--method", method, "--eps", eps, "--report", rep,
                               "--check-rows", "0", "--quiet"]
    if kind == "fwd":
        args = ["run", "--input", inp, "-o", os.path.join(tmp, "out.npy")] + common
    else:
        args = ["grad", "--input", inp, "--dout", up, "-o", os.path.join(tmp, "g.npz")] + common
    err = run(args, timeout)
    if err:
        return None, None, err
    with open(rep) as f:
        r = json.load(f)
    return r["time_s"]["compute"], (r.get("poly") or {}).get("degree"), None


def fmt(row, key):
    t = row.get(key)
    if t is None:
        note = row.get(key + "_note") or "-"
        return "n/i" if note == "not implemented" else "-"
    return ("~" if row.get(key + "_note") == "extrapolated" else "") + "%.4g" % t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--quick", action="store_true", help="a smoke test: small sizes only")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "build", "bench"))
    ap.add_argument("--eps", default="1e-3")
    ap.add_argument("--dims", default=None, help="comma list of d (default 4,8)")
    ap.add_argument("--sizes", default=None, help="comma list of n (default 1K..256K)")
    ap.add_argument("--exact-max-n", type=int, default=16384)
    ap.add_argument("--timeout", type=float, default=1800.0)
    a = ap.parse_args()
    dims = [int(x) for x in (a.dims or ("4" if a.quick else "4,8")).split(",")]
    sizes = [int(x) for x in (a.sizes or ("256,1024" if a.quick else
                                           "1024,4096,16384,65536,262144")).split(",")]
    if a.quick:
        a.exact_max_n = min(a.exact_max_n, 512)
    os.makedirs(a.out, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for d in dims:
            for rot in ROTATIONS:
                exact_last = {}
                for n in sizes:
                    inp, up = inputs(n, d, tmp)
                    row = {"d": d, "rotation": rot, "n": n}
                    for m in METHODS:
                        if m == "polyrope" and rot != "rope":
                            continue
                        for kind in ("fwd", "bwd"):
                            key = "%s_%s" % (m, kind)
                            t, note = None, ""
                            if m == "exact" and n > a.exact_max_n and kind in exact_last:
                                n0, t0 = exact_last[kind]
                                t, note = t0 * (n / n0) ** 2, "extrapolated"
                            else:
                                t, g, err = timed(kind, inp, up, rot, m, a.eps, tmp, a.timeout)
                                note = err or ""
                                if g is not None:
                                    row[m + "_degree"] = g
                                if m == "exact" and t:
                                    exact_last[kind] = (n, t)
                            row[key], row[key + "_note"] = t, note
                    rows.append(row)
                    print("d=%d %-6s n=%-7d %s" % (d, rot, n, "  ".join(
                        "%s=%s/%s" % (m, fmt(row, m + "_fwd"), fmt(row, m + "_bwd"))
                        for m in METHODS if m + "_fwd" in row)), flush=True)

    path = os.path.join(a.out, "bench_grad.csv")
    keys = ["d", "rotation", "n"] + sum([["%s_degree" % m] + sum(
        [["%s_%s" % (m, k), "%s_%s_note" % (m, k)] for k in ("fwd", "bwd")], [])
        for m in METHODS], [])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)

    print("\nseconds forward / backward (bwd/fwd ratio); ~ extrapolated, n/i not implemented")
    print("%-3s %-7s %8s  %-26s %-26s %-26s" % ("d", "rot", "n", "exact", "polyfft", "polyrope"))
    verdicts = []
    for d in dims:
        for rot in ROTATIONS:
            rs = [r for r in rows if r["d"] == d and r["rotation"] == rot]
            for r in rs:
                cells = []
                for m in METHODS:
                    if m + "_fwd" not in r:
                        cells.append("")
                        continue
                    f, b = r[m + "_fwd"], r[m + "_bwd"]
                    ratio = " (%.2fx)" % (b / f) if f and b else ""
                    cells.append("%s / %s%s" % (fmt(r, m + "_fwd"), fmt(r, m + "_bwd"), ratio))
                print("%-3d %-7s %8d  %-26s %-26s %-26s" % (d, rot, r["n"], *cells))
            ns = [r["n"] for r in rs]
            for m in ("polyfft", "polyrope"):
                if not rs or m + "_fwd" not in rs[0]:
                    continue
                ratios = [r[m + "_bwd"] / r[m + "_fwd"] for r in rs
                          if r[m + "_bwd"] and r[m + "_fwd"]]
                if not ratios:
                    note = rs[-1].get(m + "_bwd_note") or "no data"
                    verdicts.append("d=%d %s %s: backward %s" % (d, rot, m, note))
                    continue
                cf = crossover(ns, [r[m + "_fwd"] for r in rs], [r["exact_fwd"] for r in rs])
                cb = crossover(ns, [r[m + "_bwd"] for r in rs], [r["exact_bwd"] for r in rs])
                worst = max(ratios)
                ok_ratio = worst <= TARGET_RATIO
                ok_cross = cb is not None and (cf is None or cb <= cf)
                verdicts.append(
                    "d=%d %s %s: backward/forward max %.2fx (target <= %.0fx: %s); crossover "
                    "with exact: forward n ~ %s, backward n ~ %s (target backward <= forward: "
                    "%s)" % (d, rot, m, worst, TARGET_RATIO, "met" if ok_ratio else "MISSED",
                             cf or "-", cb or "-", "met" if ok_cross else "MISSED"))
    print()
    for v in verdicts:
        print(v)
    print("wrote " + path)


if __name__ == "__main__":
    main()
