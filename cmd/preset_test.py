"""--preset against attention written the way model code writes it: HF's LLaMA (rotate_half,
apply_rotary_pos_emb), GPT-NeoX (rotate_half on the first rotary_ndims coordinates) and GPT-J
(rotate_every_two, sin/cos repeated per pair, a partial rotary_dim), each with its score scale
and its causal mask, in plain numpy. Each preset must reproduce its family to 1e-12, explicit
options must override it, and the papers' preset is the default convention."""
import os

import numpy as np

from frtest import fastrope, run_all, test, tmpdir
import reference as ref

rng = np.random.default_rng(16)


def softmax_attention(q, k, v, scale, causal):
    s = q @ np.swapaxes(k, -1, -2) * scale
    if causal:
        n = s.shape[-1]
        s = np.where(np.tril(np.ones((n, n), dtype=bool)), s, -np.inf)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    return (p / p.sum(axis=-1, keepdims=True)) @ v


# ---- LLaMA / GPT-NeoX, as HF writes them ----------------------------------------------------

def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return np.concatenate((-x2, x1), axis=-1)


def llama_cos_sin(n, dim, base=10000.0):
    inv_freq = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    freqs = np.outer(np.arange(n, dtype=np.float64), inv_freq)
    emb = np.concatenate((freqs, freqs), axis=-1)
    return np.cos(emb), np.sin(emb)


def apply_rotary_pos_emb(q, k, cos, sin):
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def llama_attention(q, k, v, rotary_ndims=None):
    """LLaMA (rotary_ndims None) or GPT-NeoX (the first rotary_ndims coordinates rotate)."""
    d = q.shape[-1]
    r = d if rotary_ndims is None else rotary_ndims
    cos, sin = llama_cos_sin(q.shape[-2], r)
    q_rot, k_rot = apply_rotary_pos_emb(q[..., :r], k[..., :r], cos, sin)
    q = np.concatenate((q_rot, q[..., r:]), axis=-1)
    k = np.concatenate((k_rot, k[..., r:]), axis=-1)
    return softmax_attention(q, k, v, 1 / np.sqrt(d), causal=True)


# ---- GPT-J, as HF writes it ------------------------------------------------------------------

def create_sinusoidal_positions(num_pos, dim):
    inv_freq = 1.0 / (10000 ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    sinusoid_inp = np.einsum("i,j->ij", np.arange(num_pos, dtype=np.float64), inv_freq)
    return np.concatenate((np.sin(sinusoid_inp), np.cos(sinusoid_inp)), axis=1)


def rotate_every_two(x):
    x1 = x[..., ::2]
    x2 = x[..., 1::2]
    return np.stack((-x2, x1), axis=-1).reshape(x.shape)


def gptj_apply_rotary_pos_emb(t, sin, cos):
    sin = np.repeat(sin, 2, axis=-1)  # torch.repeat_interleave(sin, 2, 3)
    cos = np.repeat(cos, 2, axis=-1)
    return t * cos + rotate_every_two(t) * sin


def gptj_attention(q, k, v, rotary_dim):
    n, d = q.shape[-2:]
    sincos = create_sinusoidal_positions(n, rotary_dim)
    sin, cos = sincos[:, : rotary_dim // 2], sincos[:, rotary_dim // 2:]
    q = np.concatenate((gptj_apply_rotary_pos_emb(q[..., :rotary_dim], sin, cos),
                        q[..., rotary_dim:]), axis=-1)
    k = np.concatenate((gptj_apply_rotary_pos_emb(k[..., :rotary_dim], sin, cos),
                        k[..., rotary_dim:]), axis=-1)
    return softmax_attention(q, k, v, 1 / np.sqrt(d), causal=True)


# ---- the command -----------------------------------------------------------------------------

def heads(h, n, d, dv=None):
    dv = d if dv is None else dv
    return {"q": rng.normal(size=(h, n, d)), "k": rng.normal(size=(h, n, d)),
            "v": rng.normal(size=(h, n, dv))}


def run(b, *flags):
    d = tmpdir()
    inp, out = os.path.join(d, "in.npz"), os.path.join(d, "out.npy")
    np.savez(inp, **b)
    r = fastrope("run", "--input", inp, "-o", out, "--method", "exact", "--quiet", *flags)
    assert r.returncode == 0, (flags, r.stderr.decode())
    return np.load(out)


def close(got, want, tol=1e-12):
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert err <= tol, f"relative error {err:.3g} > {tol}"


def far(got, want):
    assert np.max(np.abs(got - want)) > 1e-3 * np.max(np.abs(want)), "conventions not told apart"


@test
def llama_preset_is_hf_llama():
    b = heads(3, 37, 16)
    want = llama_attention(b["q"], b["k"], b["v"])
    close(run(b, "--preset", "llama"), want)
    far(run(b), want)  # the default (the papers') convention is another one


@test
def neox_preset_with_partial_rotary_is_hf_gpt_neox():
    b = heads(2, 29, 16, 8)
    want = llama_attention(b["q"], b["k"], b["v"], rotary_ndims=4)  # Pythia's rotary_pct 0.25
    close(run(b, "--preset", "neox", "--rotary-dim", "4"), want)
    far(run(b, "--preset", "neox"), want)


@test
def gptj_preset_with_rotary_dim_is_hf_gptj():
    b = heads(2, 31, 16)
    want = gptj_attention(b["q"], b["k"], b["v"], rotary_dim=8)  # GPT-J: 64 of 256
    close(run(b, "--preset", "gptj", "--rotary-dim", "8"), want)
    full = gptj_attention(b["q"], b["k"], b["v"], rotary_dim=16)
    close(run(b, "--preset", "gptj"), full)
    far(run(b, "--preset", "llama"), full)  # rotate_half is not rotate_every_two


@test
def paper_preset_is_the_default_convention():
    b = heads(2, 23, 8)
    want = ref.attention(b["q"], b["k"], b["v"])  # interleaved pairs, tau = 1/d, no mask
    close(run(b, "--preset", "paper"), want)
    close(run(b), want)


@test
def explicit_options_override_the_preset_in_any_order():
    b = heads(2, 19, 8)
    q, k, v = b["q"], b["k"], b["v"]
    # the scale
    cos, sin = llama_cos_sin(19, 8)
    qr, kr = apply_rotary_pos_emb(q, k, cos, sin)
    want = softmax_attention(qr, kr, v, 1 / 8, causal=True)
    close(run(b, "--preset", "llama", "--scale", "paper"), want)
    close(run(b, "--scale", "paper", "--preset", "llama"), want)
    # the mask
    want = softmax_attention(qr, kr, v, 1 / np.sqrt(8), causal=False)
    close(run(b, "--preset", "llama", "--no-causal"), want)
    # the pairs: Meta's original LLaMA code rotates adjacent pairs (complex multiplication)
    close(run(b, "--preset", "llama", "--rope-pairs", "interleaved"),
          gptj_attention(q, k, v, rotary_dim=8))
    # the mask added to the papers' preset
    close(run(b, "--preset", "paper", "--causal"), ref.attention(q, k, v, causal=True))


@test
def the_report_names_the_preset_and_what_it_set():
    import json
    b = heads(1, 9, 4)
    d = tmpdir()
    inp, out = os.path.join(d, "in.npz"), os.path.join(d, "o.npy")
    np.savez(inp, **b)
    r = fastrope("run", "--input", inp, "-o", out, "--method", "exact", "--preset", "gptj",
                 "--report", "-", "--quiet")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["preset"] == "gptj" and rep["causal"] is True, rep
    assert rep["rotation"]["pairs"] == "interleaved" and abs(rep["scale"] - 0.5) < 1e-15, rep


run_all()
