#!/usr/bin/env python3
"""train_tiny.py - a small byte-level RoPE language model trained twice from the same start on
the same batches: once with fastrope's attention (fastrope_torch.rope_attention, method auto,
forward and backward in libfastrope) and once with plain PyTorch attention, to compare the
loss curves.

The queries and keys are normalised per head (QK-normalisation) and the scores multiplied by a
fixed temperature tau, so every score lies in [-tau, tau] whatever the weights become: the
bound R fastrope plans on stays tau, and at long contexts and small head dimensions `auto`
can choose the polynomial method (polyrope) for the whole run. The text is whatever licence
and copyright files the machine has (bytes, so no tokenizer).

    PYTHONPATH=scripts python3 scripts/examples/train_tiny.py [--steps 150] [--png loss.png]

Prints the time per step of each run, the method auto chose with its degree and R, the final
losses and their relative difference; --png draws both loss curves (needs matplotlib).
"""
import argparse
import glob
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fastrope_torch import rope_attention  # noqa: E402

TEXT_GLOBS = ("/usr/share/common-licenses/*", "/usr/share/doc/*/copyright")


def corpus(limit):
    """The machine's licence texts, concatenated (sorted, so every run reads the same bytes)."""
    chunks, size = [], 0
    for pattern in TEXT_GLOBS:
        for path in sorted(glob.glob(pattern)):
            if size >= limit:
                break
            try:
                with open(path, "rb") as f:
                    b = f.read()
            except OSError:  # a dangling link, a directory, no permission: not text for us
                continue
            chunks.append(b)
            size += len(b)
    data = np.frombuffer(b"".join(chunks)[:limit], dtype=np.uint8)
    if data.size < 4096:
        sys.exit("train_tiny.py: found too little text under " + ", ".join(TEXT_GLOBS))
    return torch.from_numpy(data.astype(np.int64))


def rotate(x, base=10000.0):
    """RoPE with fastrope's default convention (interleaved pairs, base 10000): row p of x
    turned by the angles p base^(-2m/d), so rot(q_i) . rot(k_j) = q_i W_{j-i} k_j."""
    n, d = x.shape[-2:]
    freq = base ** (-2.0 * torch.arange(d // 2, dtype=x.dtype) / d)
    ang = torch.arange(n, dtype=x.dtype)[:, None] * freq
    c, s = torch.cos(ang), torch.sin(ang)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)


_masks = {}


def plain_attention(q, k, v, tau):
    """Causal softmax(tau rot(q) rot(k)^T) v, the n x n scores materialised: the mask added in
    the same product (baddbmm), the way a plain implementation keeps its passes few."""
    *lead, n, d = q.shape
    key = (n, q.dtype)
    if key not in _masks:
        _masks[key] = torch.full((n, n), float("-inf"), dtype=q.dtype).triu(1)
    rq, rk = rotate(q).reshape(-1, n, d), rotate(k).reshape(-1, n, d)
    s = torch.baddbmm(_masks[key].expand(rq.shape[0], n, n), rq, rk.transpose(1, 2), alpha=tau)
    return (torch.softmax(s, dim=-1) @ v.reshape(-1, n, v.shape[-1])).view(*lead, n, -1)


class FastropeAttention:
    """rope_attention (method auto unless told), keeping what each call's plan chose."""

    def __init__(self, method, eps):
        self.method, self.eps, self.infos = method, eps, []

    def __call__(self, q, k, v, tau):
        out, info = rope_attention(q, k, v, causal=True, scale=tau, method=self.method,
                                   eps=self.eps, return_info=True)
        self.infos.append(info)
        return out


class Block(torch.nn.Module):
    def __init__(self, width, heads, attend, tau):
        super().__init__()
        self.heads, self.attend, self.tau = heads, attend, tau
        self.norm1, self.norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.qkv = torch.nn.Linear(width, 3 * width, bias=False)
        self.proj = torch.nn.Linear(width, width, bias=False)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(),
                                       torch.nn.Linear(4 * width, width))

    def forward(self, x):
        b, n, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        # QK-normalisation: unit rows, so |tau q_i W k_j| <= tau for any weights.
        q, k = F.normalize(q, dim=-1).contiguous(), F.normalize(k, dim=-1).contiguous()
        a = self.attend(q, k, v.contiguous(), self.tau)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, width))
        return x + self.mlp(self.norm2(x))


class TinyLM(torch.nn.Module):
    def __init__(self, width, heads, layers, attend, tau):
        super().__init__()
        self.embed = torch.nn.Embedding(256, width)
        self.blocks = torch.nn.ModuleList(Block(width, heads, attend, tau) for _ in range(layers))
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, 256, bias=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x))


def train(name, attend, data, starts, a, dtype):
    """One run: the model from seed a.seed, the batches at `starts`; returns (losses, seconds
    per step)."""
    torch.manual_seed(a.seed)
    model = TinyLM(a.width, a.heads, a.layers, attend, a.tau).to(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    warm = max(1, a.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    losses, times = [], []
    offs = torch.arange(a.context + 1)
    for step in range(a.steps):
        seq = data[starts[step][:, None] + offs]
        x, y = seq[:, :-1], seq[:, 1:]
        t0 = time.perf_counter()
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
        if a.verbose and (step % a.verbose == 0 or step == a.steps - 1):
            print(f"  {name:8s} step {step + 1:4d}  loss {losses[-1]:.4f}  "
                  f"{times[-1]:.3f} s/step", flush=True)
    return np.array(losses), np.array(times)


def summary_of_plans(infos):
    """What auto chose over the run: methods with counts, degrees, R's range."""
    methods, degrees = {}, set()
    rs = [i["bounds"]["R"] for i in infos]
    for i in infos:
        methods[i["method"]] = methods.get(i["method"], 0) + 1
        if i["method"] != "exact":
            degrees.add(i["degree"])
    return methods, sorted(degrees), min(rs), max(rs)


def tail_mean(x, k):
    return float(np.mean(x[-k:]))


def plot(path, steps, ours, theirs, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is missing: no plot written to {path}")
        return
    fig, (ax, dx) = plt.subplots(2, 1, figsize=(7, 5.6), sharex=True,
                                 gridspec_kw={"height_ratios": (3, 1.3)})
    ax.plot(steps, theirs, label="plain PyTorch attention", color="tab:blue", lw=2.2)
    ax.plot(steps, ours, label="fastrope rope_attention", color="tab:orange", lw=1.2, ls="--")
    ax.set_ylabel("training loss (nats per byte)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    # The curves lie on each other: their difference gets a panel of its own.
    dx.plot(steps, (ours - theirs) / theirs, color="tab:red", lw=1)
    dx.set_xlabel("step")
    dx.set_ylabel("relative difference", fontsize=8)
    dx.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    dx.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot: {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--context", type=int, default=2048, help="tokens per sequence (n)")
    ap.add_argument("--batch", type=int, default=1, help="sequences per step")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--heads", type=int, default=8, help="head dimension d = width / heads")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--tau", type=float, default=2.0, help="the fixed temperature")
    ap.add_argument("--method", default="auto", help="fastrope's method (default auto)")
    ap.add_argument("--eps", type=float, default=1e-3, help="fastrope's error target")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text-bytes", type=int, default=4 << 20)
    ap.add_argument("--png", help="write the two loss curves here")
    ap.add_argument("--verbose", type=int, default=0, help="print every N steps")
    a = ap.parse_args()
    if a.width % a.heads or (a.width // a.heads) % 2:
        sys.exit("train_tiny.py: width / heads must be an even head dimension (RoPE pairs)")
    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    data = corpus(a.text_bytes)
    if data.numel() <= a.context + 1:
        sys.exit(f"train_tiny.py: {data.numel()} bytes of text, fewer than a context")
    rng = np.random.default_rng(a.seed)
    starts = [torch.from_numpy(rng.integers(0, data.numel() - a.context - 1, a.batch))
              for _ in range(a.steps)]
    d = a.width // a.heads
    params = sum(p.numel() for p in TinyLM(a.width, a.heads, a.layers, None, a.tau).parameters())
    print(f"text: {data.numel()} bytes; model: {a.layers} layers, width {a.width}, {a.heads} "
          f"heads of d = {d}, {params} parameters, {a.dtype}; {a.batch} x {a.context} tokens "
          f"per step, tau = {a.tau}, {a.threads} threads")

    fr = FastropeAttention(a.method, a.eps)
    ours, t_ours = train("fastrope", fr, data, starts, a, dtype)
    theirs, t_theirs = train("pytorch", plain_attention, data, starts, a, dtype)

    methods, degrees, rlo, rhi = summary_of_plans(fr.infos)
    k = max(1, min(10, a.steps // 10))
    lo, lp = tail_mean(ours, k), tail_mean(theirs, k)
    rel = abs(lo - lp) / lp
    # The first step's warm-up (library loading, allocations) is left out of the per-step times.
    skip = 1 if a.steps > 1 else 0
    print(f"fastrope {a.method} chose: {', '.join(f'{m} x {c}' for m, c in methods.items())} "
          f"(calls, {a.layers} per step); degree {', '.join(map(str, degrees)) or '-'}; "
          f"R from {rlo:.6g} to {rhi:.6g}; eps {a.eps:g}")
    print(f"time per step: fastrope {np.median(t_ours[skip:]):.3f} s, plain PyTorch "
          f"{np.median(t_theirs[skip:]):.3f} s (median over {a.steps - skip} steps)")
    print(f"loss after {a.steps} steps (mean of the last {k}): fastrope {lo:.4f}, plain PyTorch "
          f"{lp:.4f}; relative difference {100 * rel:.2f}%")
    print(f"loss at step 1: fastrope {ours[0]:.6f}, plain PyTorch {theirs[0]:.6f}; "
          f"largest difference over the run {np.max(np.abs(ours - theirs)):.4g}")
    if a.png:
        deg = f" (degree {', '.join(map(str, degrees))})" if degrees else ""
        title = (f"{a.layers} layers, width {a.width}, {a.heads} heads of d = {d}, "
                 f"n = {a.context}, tau = {a.tau}; {a.method} chose {', '.join(methods)}{deg}")
        plot(a.png, np.arange(1, a.steps + 1), ours, theirs, title)
    return 0 if math.isfinite(lo) and math.isfinite(lp) else 1


if __name__ == "__main__":
    sys.exit(main())
