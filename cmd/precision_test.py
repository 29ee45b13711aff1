"""CLI tests of `--precision f32` on run and grad: single-precision exact attention and its
gradients against the numpy reference in double (on the inputs rounded to float32, as the run
reads them), for every rotation, mask and batch layout (leading axes, grouped-query, a W per
head), odd n, n = 1, dv != d; the report's check against the double exact reference; the
outputs' dtype; and the refusals."""
import json
import os

import numpy as np

from frtest import fastrope, run_all, test, tmpdir
import reference
import reference_grad

rng = np.random.default_rng(17)

# (name, n, d, dv, leading axes of q, of k and v, flags, reference keywords)
CASES = [
    ("rope_odd_n", 37, 4, 4, (), (), [], {}),
    ("n1", 1, 4, 3, (), (), [], {}),
    ("half_dv_batch", 29, 6, 2, (2, 3), (2, 3), ["--rope-pairs", "half"], {"pairs": "half"}),
    ("clip_causal", 70, 4, 5, (3,), (3,), ["--rope-clip", "3", "--causal"],
     {"rotation": "clip", "clip": 3, "causal": True}),
    ("window_sdpa_gqa", 45, 8, 8, (4,), (2,), ["--window", "5", "--scale", "sdpa"],
     {"window": 5, "scale": "sdpa"}),
    ("none_causal_gqa", 33, 6, 7, (2, 4), (2, 1), ["--no-rope", "--causal"],
     {"rotation": "none", "causal": True}),
]


def f32(x):
    """The values a single-precision run reads."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def inputs(n, d, dv, lead, kv_lead):
    return {"q": rng.uniform(-1, 1, lead + (n, d)), "k": rng.uniform(-1, 1, kv_lead + (n, d)),
            "v": rng.uniform(-1, 1, kv_lead + (n, dv))}


def repeat_kv(x, lead):
    """k or v with its heads repeated to q's leading axes (HF's repeat_kv)."""
    g = lead[-1] // x.shape[-3] if lead else 1
    return np.repeat(x, g, axis=-3) if g > 1 else x


def sum_groups(x, kv_lead):
    """A gradient of the repeated k or v summed back over each group."""
    g = x.shape[-3] // kv_lead[-1] if kv_lead else 1
    if g == 1:
        return x
    return x.reshape(x.shape[:-3] + (kv_lead[-1], g) + x.shape[-2:]).sum(axis=-3)


def run_cli(cmd, b, *flags, up=None, w=None, expect=0, out="o.npy"):
    d = tmpdir()
    np.savez(os.path.join(d, "in.npz"), **b)
    args = [cmd, "--input", os.path.join(d, "in.npz"), "--report", os.path.join(d, "r.json"),
            "--quiet", "--precision", "f32"]
    if up is not None:
        np.save(os.path.join(d, "up.npy"), up)
        args += ["--dout", os.path.join(d, "up.npy")]
    if w is not None:
        np.save(os.path.join(d, "w.npy"), w)
        args += ["-w", os.path.join(d, "w.npy")]
    args += ["-o", os.path.join(d, out)]
    r = fastrope(*args, *flags)
    assert r.returncode == expect, (r.returncode, r.stderr.decode())
    if expect:
        return None, r.stderr.decode()
    with open(os.path.join(d, "r.json")) as f:
        rep = json.load(f)
    got = np.load(os.path.join(d, out))
    return (dict(got) if out.endswith(".npz") else got), rep


def close(a, b, tol, what=""):
    assert a.shape == b.shape, (what, a.shape, b.shape)
    err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)
    assert err <= tol, f"{what}: normwise relative error {err:.3g} > {tol}"


def make_forward(name, n, d, dv, lead, kv_lead, flags, kw):
    def t():
        b = inputs(n, d, dv, lead, kv_lead)
        out, rep = run_cli("run", b, "--method", "exact", *flags)
        assert out.dtype == np.float32, out.dtype
        want = reference.attention(f32(b["q"]), repeat_kv(f32(b["k"]), lead),
                                   repeat_kv(f32(b["v"]), lead), **kw)
        close(out.astype(np.float64), want, 1e-5, name)
        # the report checked the rows against the double exact reference
        assert rep["plan"]["precision"] == "f32" and rep["method"] == "exact", rep["plan"]
        e = rep["error"]
        assert e["rows_checked"] == int(np.prod(lead)) * n and e["max_rel"] <= 1e-5, e
        assert all(x["max_abs"] <= 1e-5 for x in rep["entries"]), rep["entries"]
        # single precision has a certified bound of its own, and it holds
        assert 0 < e["rounding_bound"] == e["a_priori_bound"] and \
            e["max_abs"] <= e["a_priori_bound"], e
    t.__name__ = "f32_run_" + name
    test(t)


def make_backward(name, n, d, dv, lead, kv_lead, flags, kw):
    def t():
        b = inputs(n, d, dv, lead, kv_lead)
        up = rng.normal(size=lead + (n, dv))
        g, rep = run_cli("grad", b, "--method", "exact", *flags, up=up, out="g.npz")
        want = reference_grad.gradients(f32(b["q"]), repeat_kv(f32(b["k"]), lead),
                                        repeat_kv(f32(b["v"]), lead), dout=f32(up), **kw)
        for x, ref in (("dq", want["dq"]), ("dk", sum_groups(want["dk"], kv_lead)),
                       ("dv", sum_groups(want["dv"], kv_lead)), ("out", want["t"])):
            assert g[x].dtype == np.float32, (x, g[x].dtype)
            close(g[x].astype(np.float64), ref, 2e-5, f"{name} {x}")
        e = rep["error"]
        assert rep["plan"]["precision"] == "f32" and e["rows_checked"] > 0, rep
        for x in ("dq", "dk", "dv"):
            assert e[x]["max_rel"] <= 2e-5, (x, e[x])
    t.__name__ = "f32_grad_" + name
    test(t)


for c in CASES:
    make_forward(*c)
    make_backward(*c)


@test
def f32_explicit_w_per_head_and_shared():
    n, d, dv = 21, 4, 3
    b = inputs(n, d, dv, (2,), (2,))
    up = rng.normal(size=(2, n, dv))
    for w in (rng.uniform(-0.5, 0.5, (2 * n - 1, d, d)),
              rng.uniform(-0.5, 0.5, (2, 2 * n - 1, d, d))):
        g, rep = run_cli("grad", b, "--method", "exact", "--grad-w", up=up, w=w, out="g.npz")
        want = reference_grad.gradients(f32(b["q"]), f32(b["k"]), f32(b["v"]), dout=f32(up),
                                        rotation=w)
        for x in ("dq", "dk", "dv", "dw"):
            close(g[x].astype(np.float64), want[x], 2e-5, f"W {w.shape} {x}")
        assert rep["error"]["dw"]["max_rel"] <= 2e-5, rep["error"]


@test
def f32_auto_is_exact_and_dtype_follows():
    b = inputs(30, 4, 4, (), ())
    out, rep = run_cli("run", b)  # auto
    assert rep["method"] == "exact" and "single precision" in rep["plan"]["reason"], rep["plan"]
    assert out.dtype == np.float32
    out, rep = run_cli("run", b, "--dtype", "f8")
    assert out.dtype == np.float64
    close(out, reference.attention(f32(b["q"]), f32(b["k"]), f32(b["v"])), 1e-5)


@test
def f32_refusals():
    b = inputs(30, 4, 4, (), ())
    for m in ("polyrope", "polyfft", "polyfft-literal"):
        _, err = run_cli("run", b, "--method", m, expect=2)
        assert "--precision f32 runs exact attention only" in err and m in err, err
    d = tmpdir()
    np.savez(os.path.join(d, "in.npz"), **b)
    r = fastrope("run", "--input", os.path.join(d, "in.npz"), "--precision", "f16", "-o",
                 os.path.join(d, "o.npy"))
    assert r.returncode == 2 and b"f16" in r.stderr, r.stderr
    # a NaN is named in single precision too
    b["k"][3, 1] = np.nan
    _, err = run_cli("run", b, expect=3)
    assert "NaN at index [3, 1]" in err, err


run_all()
