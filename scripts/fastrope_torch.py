"""fastrope_torch.py - fastrope's RoPE attention as a PyTorch autograd Function (CPU tensors).

    from fastrope_torch import rope_attention
    out = rope_attention(q, k, v, causal=True, eps=1e-3)      # q, k [..., n, d], v [..., n, dv]
    out.sum().backward()                                       # q.grad, k.grad, v.grad
    out, info = rope_attention(q, k, v, return_info=True)     # info: method, degree, bounds, ...

The forward runs in this process through the C library (scripts/fastrope.py's attention); the
backward calls the library's backward with the forward's own plan, so it is the exact gradient
of the method that ran (for polyrope and polyfft: of the polynomial attention they compute),
and a forward that chose exact attention is differentiated as exact attention. Any leading axes
are a batch; k and v may have fewer heads than q (grouped-query attention, HF's repeat_kv
order). float64 tensors are read in place; float32 ones are converted (the results come back
in float32). An explicit W (w=, [2n-1, d, d] or with q's leading axes in front) gets its
gradient too when it requires one (not under polyrope, whose W is not a free parameter).
"""
import numpy as np
import torch
from torch.autograd.function import once_differentiable

import fastrope

__all__ = ["rope_attention", "RopeAttention"]


def _array(t):
    """The tensor's memory as numpy (no copy for a CPU tensor)."""
    if t.device.type != "cpu":
        raise TypeError(f"fastrope_torch works on CPU tensors, not {t.device}")
    return t.detach().numpy()


class RopeAttention(torch.autograd.Function):
    """forward(q, k, v, w, options, info_box) -> out; backward through the same plan."""

    @staticmethod
    def forward(ctx, q, k, v, w, options, info_box):
        call = fastrope._Call("attention", _array(q), _array(k), _array(v),
                              None if w is None else _array(w), options,
                              backward=any(ctx.needs_input_grad[:4]))
        plan = call.plan(call.bounds())
        out, info = call.forward(plan)
        info_box.append(info)
        if any(ctx.needs_input_grad[:4]):
            # The plan (and the call's arrays) live until the graph is freed: the backward
            # must differentiate this forward's method and polynomial, not a new plan's.
            ctx.call, ctx.plan = call, plan
            ctx.save_for_backward(q, k, v, w)  # so that autograd notices in-place changes
        else:
            plan.free()
        return torch.from_numpy(out).to(q.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, w = ctx.saved_tensors
        grad_w = w is not None and ctx.needs_input_grad[3]
        g, _ = ctx.call.backward(ctx.plan, dout=_array(grad_out), want_out=False, grad_w=grad_w)
        grads = [torch.from_numpy(g[name]).to(x.dtype) if need else None
                 for name, x, need in (("dq", q, ctx.needs_input_grad[0]),
                                       ("dk", k, ctx.needs_input_grad[1]),
                                       ("dv", v, ctx.needs_input_grad[2]))]
        dw = torch.from_numpy(g["dw"]).to(w.dtype) if grad_w else None
        return grads[0], grads[1], grads[2], dw, None, None


def rope_attention(q, k, v, *, causal=False, method="auto", eps=1e-3, preset=None, w=None,
                   return_info=False, **options):
    """softmax(tau Q_i W_{j-i} K_j^T) V over the last two axes, differentiable.

    q, k: [..., n, d], v: [..., n, dv] CPU tensors (k, v may have fewer heads: grouped-query
    attention). Keywords as fastrope.attention's (the command's flags): causal, method, eps,
    preset (paper, llama, neox, gptj), scale, window, degree, max_degree, rope_base,
    rope_pairs, rope_scale, rotary_dim, no_rope, rope_clip, no_causal, ...; w= an explicit W
    tensor. Returns out [..., n, dv] (q's dtype), or (out, info) with return_info=True: info
    is the plan's description (method, degree, bounds with R, ...) as fastrope.attention
    gives it. A failure raises fastrope.FastropeError with the command's exit code.
    """
    opts = dict(options, causal=causal, method=method, eps=eps, preset=preset)
    if "out" in opts:
        raise TypeError("rope_attention() got an unexpected keyword argument 'out'")
    box = []
    out = RopeAttention.apply(q, k, v, w, opts, box)
    return (out, box[0]) if return_info else out
