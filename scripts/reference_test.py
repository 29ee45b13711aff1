"""reference_test.py - reference.attention against a naive double loop over (i, j) with W_delta
built entry by entry from the RoPE definition."""

import math
import sys

import numpy as np

import reference

failures = 0


def check(name, cond, detail=""):
    global failures
    print(("ok " if cond else "FAIL ") + name + ("" if cond else " " + detail))
    failures += not cond


def naive_w(d, delta, base=10000.0, half=False, pos_scale=1.0, r=None, clip=None):
    r = d if r is None else r
    if clip is not None:
        delta = max(-clip, min(clip, delta))
    w = [[1.0 if a == b else 0.0 for b in range(d)] for a in range(d)]
    for m in range(r // 2):
        a, b = (m, m + r // 2) if half else (2 * m, 2 * m + 1)
        t = delta / pos_scale * base ** (-2.0 * m / r)
        w[a][a], w[a][b], w[b][a], w[b][b] = math.cos(t), -math.sin(t), math.sin(t), math.cos(t)
    return w


def naive(q, k, v, wfun, tau, causal=False, window=None):
    n, d = q.shape
    out = np.zeros((n, v.shape[1]))
    for i in range(n):
        s = {}
        for j in range(n):
            if causal and j > i:
                continue
            if window is not None and abs(j - i) > window:
                continue
            w = wfun(j - i)
            s[j] = tau * sum(q[i, a] * w[a][b] * k[j, b] for a in range(d) for b in range(d))
        mx = max(s.values())
        den = sum(math.exp(x - mx) for x in s.values())
        for j, x in s.items():
            out[i] += math.exp(x - mx) / den * v[j]
    return out


def rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


rng = np.random.default_rng(1)
n, d, dv = 13, 6, 5
q, k, v = rng.uniform(-1, 1, (n, d)), rng.uniform(-1, 1, (n, d)), rng.uniform(-1, 1, (n, dv))

cases = [
    ("rope", dict(), dict()),
    ("rope_half_partial", dict(pairs="half", rotary_dim=4, pos_scale=2.5, base=100.0),
     dict(half=True, r=4, pos_scale=2.5, base=100.0)),
    ("clip", dict(rotation="clip", clip=2), dict(clip=2)),
    ("none", dict(rotation="none"), dict(r=0)),
]
for name, kw, nkw in cases:
    for causal, window in ((False, None), (True, None), (False, 3), (True, 2)):
        got = reference.attention(q, k, v, causal=causal, window=window, chunk=4, **kw)
        want = naive(q, k, v, lambda t: naive_w(d, t, **nkw), 1.0 / d, causal, window)
        e = rel(got, want)
        check("%s causal=%d window=%s" % (name, causal, window), e < 1e-13, "rel err %g" % e)

# Explicit W: the RoPE matrices give the RoPE answer; a random W matches the naive loop.
w = reference.rope_matrices(n, d, pairs="half")
e = rel(reference.attention(q, k, v, rotation=w), reference.attention(q, k, v, pairs="half"))
check("explicit rope W equals rope", e < 1e-13, "rel err %g" % e)
wr = rng.uniform(-1, 1, (2 * n - 1, d, d))
got = reference.attention(q, k, v, rotation=wr, causal=True, scale="sdpa")
want = naive(q, k, v, lambda t: wr[t + n - 1].tolist(), 1 / math.sqrt(d), causal=True)
check("explicit random W, sdpa, causal", rel(got, want) < 1e-13, "rel err %g" % rel(got, want))
rm = reference.rope_matrices(n, d, clip=3)
check("rope_matrices clip", np.allclose(rm[0], naive_w(d, -3)) and np.allclose(rm[-1], naive_w(d, 3))
      and np.allclose(rm[n], naive_w(d, 1)), "")

# Batches: leading axes are independent problems; a W with the same leading axes is per entry.
qb, kb, vb = (rng.uniform(-1, 1, (2, 3, n, x)) for x in (d, d, dv))
got = reference.attention(qb, kb, vb, causal=True)
ok = all(np.allclose(got[a, b], reference.attention(qb[a, b], kb[a, b], vb[a, b], causal=True),
                     rtol=0, atol=1e-15) for a in range(2) for b in range(3))
check("batch axes", ok and got.shape == (2, 3, n, dv))
wb = rng.uniform(-1, 1, (2, 3, 2 * n - 1, d, d))
got = reference.attention(qb, kb, vb, rotation=wb)
ok = np.allclose(got[1, 2], reference.attention(qb[1, 2], kb[1, 2], vb[1, 2], rotation=wb[1, 2]))
check("batched W", ok)

# Large entries: no overflow.
big = reference.attention(30 * q, 30 * k, v, scale="sdpa")
check("B = 30 finite", bool(np.all(np.isfinite(big))))

sys.exit(1 if failures else 0)
