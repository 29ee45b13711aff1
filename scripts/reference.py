"""reference.py - RoPE attention in plain numpy float64: the independent reference that the CLI
tests and the benchmarks compare fastrope with (ALGORITHM.md 1).

Written "the obvious fast way": rotate every row by its position, then per chunk of query rows
one matrix product for the scores, a max-subtracted exp, one matrix product with V.

    import reference
    T = reference.attention(q, k, v)                         # standard RoPE, tau = 1/d
    T = reference.attention(q, k, v, rotation="clip", clip=8, causal=True, scale="sdpa")
    W = reference.rope_matrices(n, d)                        # [2n-1, d, d], W_delta at delta+n-1
    T = reference.attention(q, k, v, rotation=W)             # any explicit W (slow: O(n^2 d^2))

Conventions: theta_m = base^(-2m/r); pair m is (2m, 2m+1) ("interleaved") or (m, m + r/2)
("half"); R_p rotates pair m by p * theta_m / pos_scale as (x, y) -> (x c - y s, x s + y c);
s_ij = tau * q_i W_{j-i} k_j^T (row vectors).
"""

import numpy as np


def _pairs(r, pairs):
    m = np.arange(r // 2)
    if pairs == "interleaved":
        return 2 * m, 2 * m + 1
    if pairs == "half":
        return m, m + r // 2
    raise ValueError("pairs must be 'interleaved' or 'half', got %r" % (pairs,))


def _rotary_dim(d, rotary_dim):
    r = d if rotary_dim in (None, 0) else int(rotary_dim)
    if r % 2 or r > d or r < 0:
        raise ValueError("rotary dimension must be even and <= d = %d, got %d" % (d, r))
    return r


def _angles(positions, r, base, pos_scale):
    theta = float(base) ** (-2.0 * np.arange(r // 2) / r)
    return np.multiply.outer(np.asarray(positions, dtype=np.float64) / pos_scale, theta)


def rotate(x, positions=None, base=10000.0, pairs="interleaved", pos_scale=1.0, rotary_dim=None):
    """R_p x_p for every row p of x [..., n, d] (positions default to 0..n-1)."""
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape[-2:]
    r = _rotary_dim(d, rotary_dim)
    if positions is None:
        positions = np.arange(n)
    ang = _angles(positions, r, base, pos_scale)  # [n, r/2]
    c, s = np.cos(ang), np.sin(ang)
    a, b = _pairs(r, pairs)
    out = x.copy()
    out[..., a] = x[..., a] * c - x[..., b] * s
    out[..., b] = x[..., a] * s + x[..., b] * c
    return out


def rope_matrices(n, d, base=10000.0, pairs="interleaved", pos_scale=1.0, rotary_dim=None,
                  clip=None):
    """The [2n-1, d, d] tensor of W_delta = R_delta (or R_clip(delta, -clip, clip)), delta =
    -(n-1)..n-1 stored at delta + n - 1, acting on row vectors as q W k^T."""
    r = _rotary_dim(d, rotary_dim)
    delta = np.arange(-(n - 1), n)
    if clip is not None:
        delta = np.clip(delta, -clip, clip)
    ang = _angles(delta, r, base, pos_scale)
    c, s = np.cos(ang), np.sin(ang)
    a, b = _pairs(r, pairs)
    w = np.zeros((2 * n - 1, d, d))
    w[:, np.arange(d), np.arange(d)] = 1.0
    w[:, a, a] = c
    w[:, b, b] = c
    w[:, a, b] = -s
    w[:, b, a] = s
    return w


def _tau(scale, d):
    if scale is None or scale == "paper":
        return 1.0 / d
    if scale == "sdpa":
        return 1.0 / np.sqrt(d)
    return float(scale)


def _mask(i, n, causal, window):
    """Boolean keep-mask [len(i), n] for query rows i."""
    j = np.arange(n)
    keep = np.ones((len(i), n), dtype=bool)
    if causal:
        keep &= j[None, :] <= i[:, None]
    if window is not None and window >= 0:
        keep &= np.abs(j[None, :] - i[:, None]) <= window
    return keep


def _softmax_v(s, keep, v):
    s = np.where(keep, s, -np.inf)
    s -= s.max(axis=-1, keepdims=True)
    a = np.exp(s)
    return (a @ v) / a.sum(axis=-1, keepdims=True)


def _one(q, k, v, rotation, tau, causal, window, rope, chunk):
    """One problem: q, k [n, d], v [n, dv]."""
    n, d = q.shape
    out = np.empty((n, v.shape[1]))
    if isinstance(rotation, np.ndarray):
        w = rotation
        if w.shape != (2 * n - 1, d, d):
            raise ValueError("W must be [2n-1, d, d] = [%d, %d, %d], got %s"
                             % (2 * n - 1, d, d, w.shape))
        for i in range(n):
            wi = w[n - 1 - i:2 * n - 1 - i]  # W_{j-i} for j = 0..n-1
            s = tau * np.einsum("jb,jb->j", np.einsum("a,jab->jb", q[i], wi), k)
            out[i] = _softmax_v(s[None, :], _mask(np.array([i]), n, causal, window), v)[0]
        return out
    clip = rope["clip"] if rotation == "clip" else None
    if rotation == "none":
        qr, kr = q, k
    else:
        kw = {x: rope[x] for x in ("base", "pairs", "pos_scale", "rotary_dim")}
        qr, kr = rotate(q, **kw), rotate(k, **kw)
        if clip is not None and clip < n - 1:
            kw["clip"] = clip
            wc = rope_matrices(clip + 1, d, **kw)  # offsets -clip..clip
            q_plus, q_minus = q @ wc[-1], q @ wc[0]  # q R_C, q R_{-C}
    j = np.arange(n)
    for i0 in range(0, n, chunk):
        i = np.arange(i0, min(n, i0 + chunk))
        s = qr[i] @ kr.T
        if clip is not None and clip < n - 1:
            delta = j[None, :] - i[:, None]
            s = np.where(delta > clip, q_plus[i] @ k.T, s)
            s = np.where(delta < -clip, q_minus[i] @ k.T, s)
        out[i] = _softmax_v(tau * s, _mask(i, n, causal, window), v)
    return out


def attention(q, k, v, rotation="rope", base=10000.0, pairs="interleaved", pos_scale=1.0,
              rotary_dim=None, clip=None, scale=None, causal=False, window=None, chunk=None):
    """softmax(tau q W k^T) v for q, k [..., n, d], v [..., n, dv] (leading axes: independent
    problems). rotation: "rope", "clip" (needs clip), "none", or a W array [2n-1, d, d], shared,
    or [..., 2n-1, d, d] with the same leading axes as q. scale: None/"paper" (1/d), "sdpa"
    (1/sqrt d) or a number. window: keep |j - i| <= window (None: no window)."""
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    n, d = q.shape[-2:]
    if k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise ValueError("shapes: q %s, k %s, v %s" % (q.shape, k.shape, v.shape))
    if isinstance(rotation, str):
        if rotation not in ("rope", "clip", "none"):
            raise ValueError("rotation must be 'rope', 'clip', 'none' or a W array")
        if rotation == "clip" and clip is None:
            raise ValueError("rotation 'clip' needs clip")
    else:
        rotation = np.asarray(rotation, dtype=np.float64)
    tau = _tau(scale, d)
    rope = dict(base=base, pairs=pairs, pos_scale=pos_scale, rotary_dim=rotary_dim, clip=clip)
    if chunk is None:
        chunk = max(1, min(n, (1 << 22) // n))  # ~32 MB of scores per chunk
    lead = q.shape[:-2]
    qf, kf, vf = q.reshape(-1, n, d), k.reshape(-1, n, d), v.reshape(-1, n, v.shape[-1])
    wf = None
    if isinstance(rotation, np.ndarray) and rotation.ndim > 3:
        wf = rotation.reshape(-1, *rotation.shape[-3:])
    out = np.empty(vf.shape)
    for b in range(qf.shape[0]):
        rot = wf[b] if wf is not None else rotation
        out[b] = _one(qf[b], kf[b], vf[b], rot, tau, causal, window, rope, chunk)
    return out.reshape(v.shape)
