"""reference_grad.py - analytic gradients of RoPE attention in plain numpy float64 (ALGORITHM.md 7):
the independent reference for `fastrope grad`. Dense and direct (O(n^2 d^2) time, an n x n
matrix): for small n only.

    import reference_grad
    g = reference_grad.gradients(q, k, v, dout=G)                  # dL/dT given
    g = reference_grad.gradients(q, k, v, target=E, causal=True)   # L = 1/2 ||T - E||_F^2
    g["t"], g["dq"], g["dk"], g["dv"]      # and g["loss"] (target), g["dw"] (W given as array)

Options are those of reference.attention (rotation, base, pairs, pos_scale, rotary_dim, clip,
scale, causal, window). With s_ij = tau q_i W_{j-i} k_j^T, P = softmax rows, T = P V,
G = dL/dT and Delta_i = G_i . T_i:

    dV = P^T G,  dS_ij = P_ij (G_i . V_j - Delta_i),
    dq_i = tau sum_j dS_ij k_j W_{j-i}^T,  dk_j = tau sum_i dS_ij q_i W_{j-i},
    dW_delta = tau sum_{j-i=delta} dS_ij q_i^T k_j.

Leading axes are independent problems; a W shared by the batch gets the sum of their dW.
"""

import numpy as np

import reference


def _w_tensor(rotation, n, d, rope):
    """Every W_delta as a [2n-1, d, d] array, whatever the rotation kind."""
    if isinstance(rotation, np.ndarray):
        return rotation
    if rotation == "none":
        return np.broadcast_to(np.eye(d), (2 * n - 1, d, d))
    kw = {x: rope[x] for x in ("base", "pairs", "pos_scale", "rotary_dim")}
    return reference.rope_matrices(n, d, clip=rope["clip"] if rotation == "clip" else None, **kw)


def _keep(n, causal, window):
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    keep = np.ones((n, n), dtype=bool)
    if causal:
        keep &= j <= i
    if window is not None and window >= 0:
        keep &= np.abs(j - i) <= window
    return keep


def _one(q, k, v, g_or_e, is_target, w, tau, causal, window):
    n, d = q.shape
    if w.shape != (2 * n - 1, d, d):
        raise ValueError("W must be [2n-1, d, d] = [%d, %d, %d], got %s"
                         % (2 * n - 1, d, d, w.shape))
    # qw[i, j] = q_i W_{j-i}: row i of the scores needs W_{j-i} for j = 0..n-1, which is the
    # slice w[n-1-i : 2n-1-i].
    qw = np.empty((n, n, d))
    for i in range(n):
        qw[i] = q[i] @ w[n - 1 - i:2 * n - 1 - i]
    s = tau * np.einsum("ijb,jb->ij", qw, k)
    s = np.where(_keep(n, causal, window), s, -np.inf)
    s -= s.max(axis=1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=1, keepdims=True)
    t = p @ v
    g = t - g_or_e if is_target else g_or_e
    delta = np.einsum("im,im->i", g, t)
    ds = p * (g @ v.T - delta[:, None])
    dq = np.empty((n, d))
    dw = np.zeros((2 * n - 1, d, d))
    for i in range(n):
        wi = w[n - 1 - i:2 * n - 1 - i]
        dq[i] = tau * np.einsum("j,jab,jb->a", ds[i], wi, k)
        dw[n - 1 - i:2 * n - 1 - i] += tau * np.einsum("j,a,jb->jab", ds[i], q[i], k)
    dk = tau * np.einsum("ij,ijb->jb", ds, qw)
    out = {"t": t, "dq": dq, "dk": dk, "dv": p.T @ g, "dw": dw}
    if is_target:
        out["loss"] = 0.5 * float(np.sum((t - g_or_e) ** 2))
    return out


def gradients(q, k, v, dout=None, target=None, rotation="rope", base=10000.0,
              pairs="interleaved", pos_scale=1.0, rotary_dim=None, clip=None, scale=None,
              causal=False, window=None):
    """Gradients of L (dout = dL/dT, or target E for L = 1/2 ||T - E||_F^2) with respect to
    q, k, v (and W when rotation is an array). Returns a dict of arrays: t, dq, dk, dv, plus dw
    (explicit W: [2n-1, d, d], or [..., 2n-1, d, d] for a W with leading axes) and loss (a float,
    or an array over the leading axes, when target is given)."""
    if (dout is None) == (target is None):
        raise ValueError("give exactly one of dout and target")
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    ge = np.asarray(dout if target is None else target, dtype=np.float64)
    n, d = q.shape[-2:]
    if k.shape != q.shape or v.shape[:-1] != q.shape[:-1] or ge.shape != v.shape:
        raise ValueError("shapes: q %s, k %s, v %s, dout/target %s"
                         % (q.shape, k.shape, v.shape, ge.shape))
    explicit = not isinstance(rotation, str)
    if explicit:
        rotation = np.asarray(rotation, dtype=np.float64)
    elif rotation not in ("rope", "clip", "none"):
        raise ValueError("rotation must be 'rope', 'clip', 'none' or a W array")
    elif rotation == "clip" and clip is None:
        raise ValueError("rotation 'clip' needs clip")
    reference._rotary_dim(d, rotary_dim)  # validates
    tau = reference._tau(scale, d)
    rope = dict(base=base, pairs=pairs, pos_scale=pos_scale, rotary_dim=rotary_dim, clip=clip)
    lead = q.shape[:-2]
    qf, kf = q.reshape(-1, n, d), k.reshape(-1, n, d)
    vf, gf = v.reshape(-1, n, v.shape[-1]), ge.reshape(-1, n, v.shape[-1])
    per_batch_w = explicit and rotation.ndim > 3
    wf = rotation.reshape(-1, 2 * n - 1, d, d) if per_batch_w else None
    shared_w = None if per_batch_w else _w_tensor(rotation, n, d, rope)
    res = {x: np.empty(a.shape) for x, a in (("t", vf), ("dq", qf), ("dk", kf), ("dv", vf))}
    dws, losses = [], []
    for b in range(qf.shape[0]):
        w = wf[b] if per_batch_w else shared_w
        r = _one(qf[b], kf[b], vf[b], gf[b], target is not None, w, tau, causal, window)
        for x in ("t", "dq", "dk", "dv"):
            res[x][b] = r[x]
        dws.append(r["dw"])
        if target is not None:
            losses.append(r["loss"])
    out = {"t": res["t"].reshape(v.shape), "dq": res["dq"].reshape(q.shape),
           "dk": res["dk"].reshape(k.shape), "dv": res["dv"].reshape(v.shape)}
    if explicit:
        out["dw"] = (np.stack(dws).reshape(rotation.shape) if per_batch_w
                     else np.sum(dws, axis=0))
    if target is not None:
        out["loss"] = losses[0] if not lead else np.array(losses).reshape(lead)
    return out
