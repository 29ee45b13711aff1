"""CLI tests of `fastrope grad`: exact gradients against the numpy analytic reference, fast
gradients against exact, outputs, the loss, and the errors."""
import json
import os

import numpy as np

from frtest import fastrope, run_all, test, tmpdir
import reference
import reference_grad

rng = np.random.default_rng(11)


def inputs(n, d, dv=None, lead=(), B=1.0):
    dv = d if dv is None else dv
    return {"q": rng.uniform(-B, B, lead + (n, d)), "k": rng.uniform(-B, B, lead + (n, d)),
            "v": rng.uniform(-B, B, lead + (n, dv))}


def grad(b, up, *flags, target=False, w=None, expect=0, extra=()):
    d = tmpdir()
    np.savez(os.path.join(d, "in.npz"), **b)
    np.save(os.path.join(d, "up.npy"), up)
    args = ["grad", "--input", os.path.join(d, "in.npz"), "--target" if target else "--dout",
            os.path.join(d, "up.npy"), "-o", os.path.join(d, "g.npz"), "--report",
            os.path.join(d, "r.json"), "--quiet"]
    if w is not None:
        np.save(os.path.join(d, "w.npy"), w)
        args += ["-w", os.path.join(d, "w.npy")]
    r = fastrope(*args, *flags, *extra)
    assert r.returncode == expect, (r.returncode, r.stderr.decode())
    if expect:
        assert not os.path.exists(os.path.join(d, "g.npz")), "partial output left behind"
        return None, r.stderr.decode()
    with open(os.path.join(d, "r.json")) as f:
        return dict(np.load(os.path.join(d, "g.npz"))), json.load(f)


def close(a, b, tol, floor=1e-300):
    """Normwise relative; floor is the scale when b is (mathematically) zero, as dq and dk are
    at n = 1, where a fast method's rounding is measured against the gradients' scale."""
    assert a.shape == b.shape, (a.shape, b.shape)
    err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), floor)
    assert err <= tol, f"normwise relative error {err:.3g} > {tol}"


CASES = [
    ("rope_odd_n", 13, 4, 4, [], {}),
    ("n1", 1, 4, 3, [], {}),
    ("dv_ne_d_half", 17, 6, 2, ["--rope-pairs", "half"], {"pairs": "half"}),
    ("clip_causal", 19, 4, 4, ["--rope-clip", "3", "--causal"],
     {"rotation": "clip", "clip": 3, "causal": True}),
    ("window_sdpa", 16, 8, 5, ["--window", "2", "--scale", "sdpa"],
     {"window": 2, "scale": 1 / np.sqrt(8)}),
    ("no_rope_rotary", 15, 6, 6, ["--no-rope"], {"rotation": "none"}),
]


def make_exact(name, n, d, dv, flags, kw):
    def t():
        b = inputs(n, d, dv)
        for target in (False, True):
            up = rng.normal(size=(n, dv))
            g, rep = grad(b, up, "--method", "exact", *flags, target=target)
            want = reference_grad.gradients(b["q"], b["k"], b["v"],
                                            **({"target": up} if target else {"dout": up}), **kw)
            for x in ("dq", "dk", "dv"):
                close(g[x], want[x], 1e-11)
            close(g["out"], want["t"], 1e-12)
            if target:
                assert abs(rep["loss"] - want["loss"]) <= 1e-10 * abs(want["loss"]), rep["loss"]
            else:
                assert rep["loss"] is None
            assert rep["error"] is None and rep["method"] == "exact"
    t.__name__ = "exact_grad_" + name
    test(t)


for c in CASES:
    make_exact(*c)


@test
def exact_grad_batched_with_per_entry_w_and_dw():
    n, d = 7, 4
    b = inputs(n, d, 3, lead=(2,))
    w = rng.normal(size=(2, 2 * n - 1, d, d)) * 0.4
    up = rng.normal(size=(2, n, 3))
    g, _ = grad(b, up, "--method", "exact", "--grad-w", w=w)
    for i in range(2):
        want = reference_grad.gradients(b["q"][i], b["k"][i], b["v"][i], dout=up[i],
                                        rotation=w[i])
        for x in ("dq", "dk", "dv", "dw"):
            close(g[x][i], want[x], 1e-11)


@test
def exact_dw_of_shared_w_sums_the_batch():
    n, d = 6, 4
    b = inputs(n, d, lead=(3,))
    w = rng.normal(size=(2 * n - 1, d, d)) * 0.4
    up = rng.normal(size=(3, n, d))
    g, _ = grad(b, up, "--method", "exact", "--grad-w", w=w)
    want = reference_grad.gradients(b["q"], b["k"], b["v"], dout=up, rotation=w)
    assert g["dw"].shape == w.shape
    close(g["dw"], want["dw"], 1e-11)


def fast_available(method):
    b = inputs(5, 4)
    d = tmpdir()
    np.savez(os.path.join(d, "in.npz"), **b)
    np.save(os.path.join(d, "up.npy"), np.ones((5, 4)))
    r = fastrope("grad", "--input", os.path.join(d, "in.npz"), "--dout",
                 os.path.join(d, "up.npy"), "-o", os.path.join(d, "g.npz"), "--method", method)
    return b"not implemented" not in r.stderr


FAST = [
    ("rope", 21, 4, 4, []),
    ("clip_causal", 23, 4, 3, ["--rope-clip", "4", "--causal"]),
    ("window_batch", 18, 4, 4, ["--window", "3"]),
    ("n1", 1, 4, 4, []),
]


def make_fast(method, name, n, d, dv, flags):
    def t():
        if not fast_available(method):
            raise AssertionError(f"{method} backward is not implemented")
        lead = (2,) if "batch" in name else ()
        b = inputs(n, d, dv, lead=lead, B=0.7)
        up = rng.normal(size=lead + (n, dv))
        g, rep = grad(b, up, "--method", method, "--eps", "1e-4", *flags)
        ge, _ = grad(b, up, "--method", "exact", *flags)
        for x in ("dq", "dk", "dv", "out"):
            close(g[x], ge[x], 2e-3, floor=np.max(np.abs(ge["dv"])))
        assert rep["error"]["rows_checked"] == n * (2 if lead else 1)
        for x in ("dq", "dk", "dv"):
            e = rep["error"][x]
            assert e["max_abs"] == np.max(np.abs(g[x] - ge[x])) or \
                abs(e["max_abs"] - np.max(np.abs(g[x] - ge[x]))) <= 1e-12, (x, e)
    t.__name__ = f"{method.replace('-', '_')}_grad_{name}"
    test(t)


for m in ("polyfft", "polyrope"):
    for c in FAST:
        if m == "polyrope" and "clip" in c[0]:
            continue
        make_fast(m, *c)


def sparse_w(lead, n, d):
    """Random per offset on six of the d*d entries (dW is still dense: off-support entries move
    the scores too)."""
    w = np.zeros(lead + (2 * n - 1, d, d))
    for a, c in ((0, 0), (1, 1), (1, 2), (2, 0), (3, 3), (3, 1)):
        w[..., a, c] = rng.normal(size=lead + (2 * n - 1,)) * 0.5
    return w


@test
def polyfft_grad_w_matches_exact():
    n, d = 21, 4  # rows with >= 16 keys go through the FFTs, the others are exact
    for lead, per_entry, flags, w in (
            ((), False, [], rng.normal(size=(2 * n - 1, d, d)) * 0.3),
            ((), False, ["--causal"], sparse_w((), n, d)),
            ((2,), True, ["--window", "12"], sparse_w((2,), n, d)),
            ((3,), False, [], sparse_w((), n, d))):  # shared W: dW sums the batch
        b = inputs(n, d, 3, lead=lead, B=0.7)
        up = rng.normal(size=lead + (n, 3))
        g, rep = grad(b, up, "--method", "polyfft", "--eps", "1e-4", "--grad-w", *flags, w=w)
        ge, _ = grad(b, up, "--method", "exact", "--grad-w", *flags, w=w)
        assert rep["method"] == "polyfft", rep["method"]
        assert g["dw"].shape == w.shape, (g["dw"].shape, w.shape)
        for x in ("dq", "dk", "dv", "out", "dw"):
            close(g[x], ge[x], 2e-3)
        if "--causal" in flags:  # masked offsets (delta > 0, stored past n - 1) are exactly 0
            assert not np.any(g["dw"][..., n:, :, :]), "dW at masked offsets"


@test
def polyrope_grad_refuses_a_general_w():
    b = inputs(9, 4)
    _, msg = grad(b, np.ones((9, 4)), "--method", "polyrope", "--rope-clip", "2", expect=2)
    assert "polyfft" in msg, msg


@test
def separate_output_files():
    d = tmpdir()
    b = inputs(8, 4, 3)
    np.savez(os.path.join(d, "in.npz"), **b)
    np.save(os.path.join(d, "e.npy"), np.zeros((8, 3)))
    r = fastrope("grad", "--input", os.path.join(d, "in.npz"), "--target",
                 os.path.join(d, "e.npy"), "--dq", os.path.join(d, "dq.npy"), "--dv",
                 os.path.join(d, "dv.json"), "--method", "exact")
    assert r.returncode == 0, r.stderr
    want = reference_grad.gradients(b["q"], b["k"], b["v"], target=np.zeros((8, 3)))
    close(np.load(os.path.join(d, "dq.npy")), want["dq"], 1e-11)
    with open(os.path.join(d, "dv.json")) as f:
        close(np.array(json.load(f)), want["dv"], 1e-11)
    assert not os.path.exists(os.path.join(d, "dk.npy"))


@test
def usage_and_input_errors():
    b = inputs(8, 4)
    _, msg = grad(b, np.ones((8, 5)), "--method", "exact", expect=3)
    assert "[8, 5]" in msg and "[8, 4]" in msg, msg
    up = np.ones((8, 4))
    up[2, 1] = np.nan
    _, msg = grad(b, up, "--method", "exact", expect=3)
    assert "NaN" in msg and "[2, 1]" in msg, msg
    _, msg = grad(b, np.ones((8, 4)), "--grad-w", expect=2)
    assert "explicit" in msg, msg
    for args in (["grad"], ["grad", "--dout", "a", "--target", "b", "-o", "x.npz"],
                 ["grad", "--dout", "a"]):
        r = fastrope(*args)
        assert r.returncode == 2, (args, r.stderr)


run_all()
