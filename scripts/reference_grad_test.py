"""reference_grad_test.py - reference_grad.gradients against central differences of
reference.attention (the forward it differentiates), for every rotation kind, masks, both
losses, batches and n = 1."""

import sys

import numpy as np

import reference
import reference_grad

failures = 0


def check(name, cond, detail=""):
    global failures
    print(("ok " if cond else "FAIL ") + name + ("" if cond else " " + detail))
    failures += not cond


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def numeric(loss, x, h=1e-5):
    """Central differences of loss() in every entry of x (modified in place, restored)."""
    g = np.empty(x.shape)
    for e in np.ndindex(x.shape):
        x0 = x[e]
        x[e] = x0 + h
        lp = loss()
        x[e] = x0 - h
        lm = loss()
        x[e] = x0
        g[e] = (lp - lm) / (2 * h)
    return g


def case(name, n=5, d=4, dv=3, lead=(), use_target=False, w=None, seed=0, **opt):
    rng = np.random.default_rng(seed)
    q = rng.uniform(-1.5, 1.5, lead + (n, d))
    k = rng.uniform(-1.5, 1.5, lead + (n, d))
    v = rng.uniform(-1, 1, lead + (n, dv))
    ge = rng.uniform(-1, 1, lead + (n, dv))
    if w is not None:
        opt["rotation"] = w

    def loss():
        t = reference.attention(q, k, v, **opt)
        return 0.5 * np.sum((t - ge) ** 2) if use_target else np.sum(ge * t)

    kw = dict(target=ge) if use_target else dict(dout=ge)
    g = reference_grad.gradients(q, k, v, **kw, **opt)
    errs = {"t": rel(g["t"], reference.attention(q, k, v, **opt))}
    for x, arr in (("dq", q), ("dk", k), ("dv", v)) + ((("dw", w),) if w is not None else ()):
        errs[x] = rel(g[x], numeric(loss, arr))
    if use_target:
        errs["loss"] = abs(np.sum(g["loss"]) - loss()) / abs(loss())
    bad = {x: e for x, e in errs.items() if not e < 1e-7}
    check(name, not bad, "errors %s" % bad)


def main():
    rng = np.random.default_rng(7)
    n = 5
    case("rope_interleaved")
    case("rope_half_causal", pairs="half", causal=True, use_target=True)
    case("rope_partial_window", rotary_dim=2, window=1, scale="sdpa")
    case("rope_base_pos_scale", base=100.0, pos_scale=2.5, pairs="half", rotary_dim=2)
    case("clip", rotation="clip", clip=1, causal=True)
    case("clip_target", rotation="clip", clip=2, use_target=True, window=3)
    case("none", rotation="none", use_target=True)
    case("explicit_random", w=rng.uniform(-1, 1, (2 * n - 1, 4, 4)), use_target=True)
    case("explicit_random_window", w=rng.uniform(-1, 1, (2 * n - 1, 4, 4)), window=2,
         causal=True)
    case("explicit_rope_matrices", w=reference.rope_matrices(n, 4, base=9.0), scale=0.7)
    case("batch_shared_w", lead=(2,), w=rng.uniform(-1, 1, (2 * n - 1, 4, 4)))
    case("batch_per_entry_w", lead=(2, 1), w=rng.uniform(-1, 1, (2, 1, 2 * n - 1, 4, 4)),
         use_target=True)
    case("batch_rope", lead=(3,), causal=True, use_target=True)
    case("n1", n=1, dv=2)
    case("odd_n_dv_gt_d", n=7, d=2, dv=5, causal=True, window=2)

    # B = 30: scores in the thousands stay finite (max-subtracted softmax)
    q = rng.uniform(-30, 30, (6, 4))
    g = reference_grad.gradients(q, q[::-1].copy(), q[:, :3], dout=np.ones((6, 3)), scale=1.0)
    check("large_entries_finite", all(np.all(np.isfinite(g[x])) for x in ("dq", "dk", "dv")))

    try:
        reference_grad.gradients(q, q, q, dout=q, target=q)
        check("both_dout_and_target_rejected", False, "no error")
    except ValueError:
        check("both_dout_and_target_rejected", True)
    sys.exit(1 if failures else 0)


main()
