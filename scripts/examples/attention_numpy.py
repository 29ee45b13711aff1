"""attention_numpy.py - RoPE attention through fastrope (scripts/fastrope.py) against plain numpy.

    /usr/bin/python3 scripts/examples/attention_numpy.py [--n 2048] [--d 4] [--batch 2]
        [--method auto] [--eps 1e-4] [--causal] [--B 1.0]

Draws a bounded random q, k, v (entries uniform in [-B, B]), computes the attention with the
helper, computes it again in numpy (rotate every row by its position, softmax, times V), and
prints the method fastrope chose, its own error report and the largest difference from numpy.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fastrope  # noqa: E402


def rope(x, base=10000.0):
    """Row p of x rotated by R_p: pair (2m, 2m+1) turns by p * base^(-2m/d)."""
    n, d = x.shape[-2:]
    ang = np.outer(np.arange(n), base ** (-2.0 * np.arange(d // 2) / d))
    c, s = np.cos(ang), np.sin(ang)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = a * s + b * c
    return out


def attention(q, k, v, causal=False):
    """softmax(tau * q_i R_{j-i} k_j^T) v with tau = 1/d, fastrope's default scale."""
    n, d = q.shape[-2:]
    s = rope(q) @ np.swapaxes(rope(k), -1, -2) / d
    if causal:
        s = np.where(np.tril(np.ones((n, n), bool)), s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--d", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--B", type=float, default=1.0, help="entry bound")
    ap.add_argument("--method", default="auto")
    ap.add_argument("--eps", type=float, default=1e-4)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    rng = np.random.default_rng(a.seed)
    q, k, v = (rng.uniform(-a.B, a.B, (a.batch, a.n, a.d)) for _ in range(3))
    t0 = time.perf_counter()
    out, report = fastrope.run(q, k, v, method=a.method, eps=a.eps, causal=a.causal)
    t1 = time.perf_counter()
    want = attention(q, k, v, causal=a.causal)
    t2 = time.perf_counter()
    err = np.max(np.abs(out - want))
    print(f"fastrope: method {report['method']}, {t1 - t0:.3f} s (including the pipes)")
    if report["error"]:
        e = report["error"]
        print(f"  its own check: max abs error {e['max_abs']:.3g} on {e['rows_checked']} rows "
              f"(all entries), eps {e['eps']:g}, a-priori bound {e['a_priori_bound']:.3g}")
    print(f"numpy:    {t2 - t1:.3f} s")
    print(f"max |fastrope - numpy| = {err:.3g} (max |numpy| = {np.max(np.abs(want)):.3g})")
    return 0 if err <= max(a.eps, 1e-10) * 10 else 1


if __name__ == "__main__":
    sys.exit(main())
