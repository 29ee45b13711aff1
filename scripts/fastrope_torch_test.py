"""Tests of scripts/fastrope_torch.py: torch.autograd.gradcheck in double for exact and polyrope
(and an explicit W's gradient), the forward and gradients against plain PyTorch attention
written here, the backward of the method that ran (the library's own gradient, to the bit),
grouped-query attention, any batch axes, float32 tensors, and errors."""
import os
import subprocess
import sys

if os.environ.get("FASTROPE_SAN") == "1" and "libasan" not in os.environ.get("LD_PRELOAD", ""):
    # The sanitizer build's library needs the ASan runtime loaded first (see
    # fastrope_inproc_test.py); torch itself runs unchanged.
    asan = subprocess.run([os.environ.get("CC", "cc"), "-print-file-name=libasan.so"],
                          capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(asan):
        print(f"# skipped: the ASan runtime was not found ({asan!r})")
        sys.exit(0)
    env = dict(os.environ, LD_PRELOAD=asan, ASAN_OPTIONS="detect_leaks=0")
    sys.exit(subprocess.run([sys.executable] + sys.argv, env=env).returncode)

try:
    import torch
except ImportError as e:  # scripts/deps.sh installs python3-torch; say why nothing ran
    print(f"# skipped: PyTorch is not installed ({e}); scripts/deps.sh installs python3-torch")
    sys.exit(0)

import numpy as np  # noqa: E402

import fastrope  # noqa: E402
from fastrope_torch import rope_attention  # noqa: E402
from frtest import run_all, test  # noqa: E402

torch.manual_seed(20)
torch.set_num_threads(1)  # the library has the cores; gradcheck's own work is tiny


def tensors(n, d, dv=None, lead=(), kv_lead=None, B=1.0, dtype=torch.float64):
    dv = d if dv is None else dv
    kl = lead if kv_lead is None else kv_lead
    make = (lambda *s: ((torch.rand(*s, dtype=dtype) * 2 - 1) * B).requires_grad_())
    return make(*lead, n, d), make(*kl, n, d), make(*kl, n, dv)


def rotate(x, base=10000.0):
    """Row p turned by R_p: pair (2m, 2m+1) by the angle p base^(-2m/d) (interleaved RoPE)."""
    n, d = x.shape[-2:]
    ang = torch.arange(n, dtype=x.dtype)[:, None] * base ** (-2.0 * torch.arange(d // 2,
                                                                                dtype=x.dtype) / d)
    c, s = torch.cos(ang), torch.sin(ang)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)


def plain_attention(q, k, v, causal=False, scale=None, groups=1):
    """softmax(tau rot(q) rot(k)^T) v in PyTorch, with k, v's heads repeated for GQA."""
    if groups > 1:
        k, v = (x.repeat_interleave(groups, dim=-3) for x in (k, v))
    n, d = q.shape[-2:]
    s = rotate(q) @ rotate(k).transpose(-1, -2) * (1.0 / d if scale is None else scale)
    if causal:
        s = s.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


@test
def gradcheck_exact():
    for kw, lead, kv_lead in (({}, (), None), ({"causal": True}, (2,), None),
                              ({"causal": True, "window": 2}, (2, 3), None),
                              ({"preset": "llama"}, (1, 4), (1, 2))):
        q, k, v = tensors(6, 4, 3, lead=lead, kv_lead=kv_lead)
        assert torch.autograd.gradcheck(
            lambda a, b, c: rope_attention(a, b, c, method="exact", **kw), (q, k, v),
            eps=1e-6, atol=1e-7, rtol=1e-5), kw


def with_a_fixed_largest_row(free):
    """free's rows, then a last row of ones: larger than every free row in norm and in each
    coordinate, so the bounds the plan fits its polynomial on (R from the row norms or the
    column maxima) do not move when gradcheck perturbs the free rows."""
    big = torch.ones(*free.shape[:-2], 1, free.shape[-1], dtype=free.dtype)
    return torch.cat((free, big), dim=-2)


@test
def gradcheck_polyrope():
    # At a low degree the polynomial attention differs from exact attention by ~1e-3 (a forced
    # degree must still certify eps, hence eps = 0.1), so this checks polyrope's own gradient: exact attention's would fail it (asserted below).
    for kw, lead in (({}, (2,)), ({"causal": True}, (3,)), ({"window": 2}, ())):
        qf, kf, v = tensors(8, 4, 3, lead=lead, B=0.4)
        v = torch.cat((v, v[..., :1, :]), dim=-2).detach().requires_grad_()

        def f(a, b, c, method="polyrope"):
            return rope_attention(with_a_fixed_largest_row(a), with_a_fixed_largest_row(b), c,
                                  method=method, degree=2 if method == "polyrope" else None,
                                  eps=0.1, **kw)
        out, info = rope_attention(with_a_fixed_largest_row(qf), with_a_fixed_largest_row(kf),
                                   v, method="polyrope", degree=2, eps=0.1, return_info=True, **kw)
        assert info["method"] == "polyrope" and info["degree"] == 2
        assert torch.autograd.gradcheck(f, (qf, kf, v), eps=1e-6, atol=1e-7, rtol=1e-5), kw
        g = torch.randn_like(out)
        poly = torch.autograd.grad(f(qf, kf, v), (qf, kf), g)
        exact = torch.autograd.grad(f(qf, kf, v, "exact"), (qf, kf), g)
        assert max(float((a - b).abs().max()) for a, b in zip(poly, exact)) > 1e-5, \
            "degree 2 is indistinguishable from exact: the check above proves nothing"


@test
def gradcheck_explicit_w():
    n, d = 5, 4
    q, k, v = tensors(n, d, lead=(2,))
    w = (torch.randn(2 * n - 1, d, d, dtype=torch.float64) * 0.4).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b, c, x: rope_attention(a, b, c, w=x, method="exact"), (q, k, v, w),
        eps=1e-6, atol=1e-7, rtol=1e-5)


@test
def exact_equals_plain_pytorch_attention():
    q, k, v = tensors(37, 8, 5, lead=(2, 4), kv_lead=(2, 2))
    for kw in ({}, {"causal": True}, {"causal": True, "scale": "sdpa"}):
        out = rope_attention(q, k, v, method="exact", **kw)
        scale = 1 / 8 ** 0.5 if kw.get("scale") == "sdpa" else None
        want = plain_attention(q, k, v, causal=kw.get("causal", False), scale=scale, groups=2)
        assert out.shape == (2, 4, 37, 5) and torch.allclose(out, want, rtol=0, atol=1e-13)
        g = torch.randn_like(out)
        got = torch.autograd.grad(out, (q, k, v), g)
        ref = torch.autograd.grad(want, (q, k, v), g)
        for a, b in zip(got, ref):
            assert a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=1e-12), kw


@test
def backward_is_the_librarys_gradient_of_the_method_that_ran():
    q, k, v = tensors(200, 4, 3, lead=(3,), B=0.5)
    for method in ("polyrope", "polyfft", "auto"):
        out, info = rope_attention(q, k, v, method=method, causal=True, return_info=True)
        g = torch.randn_like(out)
        out.backward(g)
        arrays = [x.detach().numpy() for x in (q, k, v)]
        want, winfo = fastrope.attention_grad(*arrays, dout=g.numpy(), method=method,
                                              causal=True)
        assert info["method"] == winfo["method"] and info["degree"] == winfo["degree"]
        assert np.array_equal(out.detach().numpy(), want["out"]), method
        for name, x in (("dq", q), ("dk", k), ("dv", v)):
            assert np.array_equal(x.grad.numpy(), want[name]), (method, name)
            x.grad = None


@test
def float32_tensors_and_partial_gradients():
    q, k, v = tensors(20, 4, lead=(2,), dtype=torch.float32)
    k.requires_grad_(False)
    out = rope_attention(q, k, v, method="exact", causal=True)
    assert out.dtype == torch.float32
    out.square().sum().backward()
    assert q.grad.dtype == torch.float32 and v.grad.dtype == torch.float32 and k.grad is None
    want = plain_attention(q.double(), k.double(), v.double(), causal=True)
    assert torch.allclose(out.double(), want, rtol=0, atol=1e-6)
    with torch.no_grad():  # no graph: nothing kept for a backward
        assert rope_attention(q, k, v, method="exact").requires_grad is False


@test
def errors_are_fastrope_errors_and_unknown_keywords_type_errors():
    q, k, v = tensors(8, 4)
    for kw, code in (({"method": "magic"}, 2), ({"eps": 0}, 2)):
        try:
            rope_attention(q, k, v, **kw)
        except fastrope.FastropeError as e:
            assert e.returncode == code, e
        else:
            raise AssertionError(kw)
    try:
        rope_attention(q, k[:5], v)
    except fastrope.FastropeError as e:
        assert e.returncode == 3, e
    for kw in ({"windw": 2}, {"out": None}, {"binary": "x"}):
        try:
            rope_attention(q, k, v, **kw)
        except TypeError:
            pass
        else:
            raise AssertionError(kw)


@test
def train_tiny_smoke_trains_both_models_alike():
    """scripts/examples/train_tiny.py for 3 steps at a short context, polyrope forced (auto
    would choose exact there): both runs start from the same loss, learn, and stay together."""
    import re
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples",
                          "train_tiny.py")
    r = subprocess.run([sys.executable, script, "--steps", "3", "--context", "128", "--batch",
                        "1", "--text-bytes", "65536", "--method", "polyrope"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"polyrope chose: polyrope x 6 .*degree \d+; R from 2 to 2", r.stdout), \
        r.stdout
    first = re.search(r"loss at step 1: fastrope ([\d.]+), plain PyTorch ([\d.]+)", r.stdout)
    last = re.search(r"loss after 3 steps .*: fastrope ([\d.]+), plain PyTorch ([\d.]+)",
                     r.stdout)
    f0, p0 = map(float, first.groups())
    f3, p3 = map(float, last.groups())
    assert abs(f0 - p0) <= 1e-4 * p0 and abs(f3 - p3) <= 0.02 * p3, r.stdout
    assert f3 < f0 - 0.05 and p3 < p0 - 0.05, r.stdout  # three steps of Adam lower the loss


run_all()
