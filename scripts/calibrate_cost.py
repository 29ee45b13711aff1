#!/usr/bin/python3
"""calibrate_cost.py - measure the cost model's constants (core/cost.c) on this machine.

    FASTROPE=build/fastrope /usr/bin/python3 scripts/calibrate_cost.py [--quick] [--repeat R]

Runs small timed cases of each method through the CLI (`fastrope run ... --report`, reading
`time_s.compute`, the best of --repeat runs), fits each method's constants by least squares on
the operation counts core/cost.c uses, and prints the C lines to paste into core/cost.c. Takes
about a minute (--quick: a few seconds, for a smoke test; its constants are not meant to be
pasted). Run it on a quiet machine: the constants are wall-clock seconds per operation with
OpenMP on every core.

    exact     t = c0 + pairs * (c_flop * (score_len + dv) + c_exp)
    polyfft   t = c0 + c_fft * ffts * N log2 N + c_acc * alphas * (N/2 + 1) * (dv + 1)
    polyrope  t = c0 + c_row * n + c_rope * n * C(g + d, d) * (dv + 1), times a mask factor
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FASTROPE = os.environ.get("FASTROPE") or os.path.join(HERE, "..", "build", "fastrope")


def fastrope(*args):
    p = subprocess.run([FASTROPE] + [str(a) for a in args], capture_output=True, timeout=600)
    if p.returncode != 0:
        sys.exit("calibrate_cost: fastrope %s failed: %s" %
                 (" ".join(map(str, args[:3])), p.stderr.decode(errors="replace").strip()))


class Runner:
    def __init__(self, repeat):
        self.tmp = tempfile.mkdtemp(prefix="calibrate-")
        self.repeat = repeat
        self.inputs = {}

    def input(self, n, d):
        key = (n, d)
        if key not in self.inputs:
            path = os.path.join(self.tmp, "in_%d_%d.npz" % (n, d))
            fastrope("gen", "--n", n, "--d", d, "--B", 1, "--seed", 7, "-o", path)
            self.inputs[key] = path
        return self.inputs[key]

    def time(self, n, d, method, rot=("--rope",), mask=(), degree=None):
        """Best compute time of `repeat` runs, and the report of the last."""
        rep = os.path.join(self.tmp, "rep.json")
        best = math.inf
        for _ in range(self.repeat):
            extra = ("--degree", degree) if degree is not None else ()
            fastrope("run", "--input", self.input(n, d), *rot, *mask, *extra, "--method", method,
                     "--eps", "1e-3", "-o", os.path.join(self.tmp, "out.npy"), "--report", rep,
                     "--check-rows", 0)
            with open(rep) as f:
                r = json.load(f)
            best = min(best, r["time_s"]["compute"])
        return best, r


def lstsq_pos(A, y):
    """Least squares on relative error (each row divided by its time), constants kept >= 0."""
    A = np.asarray(A, float)
    y = np.asarray(y, float)
    w = 1 / y
    x, *_ = np.linalg.lstsq(A * w[:, None], y * w, rcond=None)
    # a negative constant is noise around zero: drop that column and refit
    if np.any(x < 0):
        keep = x >= 0
        x2, *_ = np.linalg.lstsq((A * w[:, None])[:, keep], y * w, rcond=None)
        x = np.zeros_like(x)
        x[keep] = np.maximum(x2, 0)
    return x


def kept_pairs(n, causal=False, window=None):
    if causal:
        return n * (n + 1) / 2
    if window is not None:
        return n * (2 * window + 1) - window * (window + 1)
    return float(n) * n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=None)
    a = ap.parse_args()
    R = Runner(a.repeat or (1 if a.quick else 3))
    s = 1 if a.quick else 4  # size multiplier

    # exact: vary d (score_len + dv) and n
    A, y = [], []
    # d from 4 to 64 separates the per-pair exp from the per-pair multiply-adds
    for n, d, rot, L in [(1024 * s, 4, ("--rope",), 4), (1024 * s, 8, ("--rope",), 8),
                         (1024 * s, 16, ("--rope",), 16), (1024 * s, 64, ("--rope",), 64),
                         (2048 * s, 8, ("--rope",), 8), (1024 * s, 4, ("--rope-clip", 16), 8),
                         (64, 8, ("--rope",), 8)]:
        t, _ = R.time(n, d, "exact", rot)
        p = kept_pairs(n)
        A.append([1, p * (L + d), p])
        y.append(t)
    e0, e_flop, e_exp = lstsq_pos(A, y)
    print("# exact fit on %d cases" % len(y), file=sys.stderr)

    # polyrope: sizes, d and forced degrees (so that the per-row work, rotation and
    # normalisation, separates from the per-feature work), then the mask factors at one size
    A, y = [], []
    for n, d, g in [(4096 * s, 4, 4), (16384 * s, 4, 2), (16384 * s, 4, 6), (4096 * s, 8, 6),
                    (8192 * s, 8, 3), (8192 * s, 8, 5), (256, 4, 3)]:
        t, r = R.time(n, d, "polyrope", degree=g)
        A.append([1, n, n * math.comb(g + d, d) * (d + 1)])
        y.append(t)
    r0, r_row, r1 = lstsq_pos(A, y)
    n, d = 8192 * s, 8
    base, _ = R.time(n, d, "polyrope")
    causal, _ = R.time(n, d, "polyrope", mask=("--causal",))
    window, _ = R.time(n, d, "polyrope", mask=("--window", n // 8))
    f_causal = max(1.0, (causal - r0 - r_row * n) / max(base - r0 - r_row * n, 1e-9))
    f_window = max(1.0, (window - r0 - r_row * n) / max(base - r0 - r_row * n, 1e-9))

    # polyfft: the counts come from the report (the back end's own)
    A, y = [], []
    # at one n, degrees 2..6 move the FFT count (~ C(g+d, d)) and the term count
    # (~ C(g+2d, 2d)) apart, which is what separates c_fft from c_acc
    for n, d, rot, g in [(4096 * s, 4, ("--rope",), 2), (4096 * s, 4, ("--rope",), 4),
                         (4096 * s, 4, ("--rope",), 6), (1024 * s, 4, ("--rope-clip", 16), 5),
                         (2048 * s, 8, ("--rope",), 2), (1024 * s, 8, ("--rope",), 3),
                         (128, 4, ("--rope",), 3)]:
        t, r = R.time(n, d, "polyfft", rot, degree=g)
        po = r["poly"]
        N = po["fft_size"]
        A.append([1, po["ffts"] * N * math.log2(max(N, 2)), po["alphas"] * (N / 2 + 1) * (d + 1)])
        y.append(t)
    f0, f_fft, f_acc = lstsq_pos(A, y)

    import datetime
    today = datetime.date.today().isoformat()
    print("/* measured %s by scripts/calibrate_cost.py%s */" % (today, " --quick" if a.quick else ""))
    print("static const double c_rope = %.3g;" % r1)
    print("static const double c_rope_row = %.3g;" % r_row)
    print("static const double c_rope_0 = %.3g;" % r0)
    print("static const double rope_causal = %.3g;" % f_causal)
    print("static const double rope_window = %.3g;" % f_window)
    print("static const double c_exact_flop = %.3g;" % e_flop)
    print("static const double c_exact_exp = %.3g;" % e_exp)
    print("static const double c_exact_0 = %.3g;" % e0)
    print("static const double c_fft = %.3g;" % f_fft)
    print("static const double c_acc = %.3g;" % f_acc)
    print("static const double c_fft_0 = %.3g;" % f0)


if __name__ == "__main__":
    main()
