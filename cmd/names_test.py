"""Dumps as model code writes them, through run and grad: q/k/v found by the names check knows
(HF's query_states, Meta's xq, q_proj, with layer prefixes), --set NAME exactly as check lists
it, --names for anything else, and grouped-query attention (k, v with H/g heads: HF's
repeat_kv) against numpy."""
import json
import os

import numpy as np

from frtest import fastrope, run_all, test, tmpdir
import reference as ref
import reference_grad

rng = np.random.default_rng(61)


def save(members):
    d = tmpdir()
    p = os.path.join(d, "dump.npz")
    np.savez(p, **members)
    return d, p


def run(p, *flags, expect=0):
    out = os.path.join(os.path.dirname(p), "out.npy")
    r = fastrope("run", "--input", p, "-o", out, "--method", "exact", "--quiet", *flags)
    assert r.returncode == expect, (flags, r.returncode, r.stderr.decode())
    return np.load(out) if expect == 0 else r.stderr.decode()


def layer(h=2, n=11, d=4):
    return [rng.uniform(-1, 1, (h, n, d)) for _ in range(3)]


@test
def real_names_are_recognised_with_their_prefixes():
    for words in (("query_states", "key_states", "value_states"), ("xq", "xk", "xv"),
                  ("q_proj", "k_proj", "v_proj"), ("query", "key", "value")):
        q, k, v = layer()
        pre = "model.layers.3.self_attn."
        _, p = save({pre + words[0]: q, pre + words[1]: k, pre + words[2]: v,
                     pre + "attn_weights": rng.uniform(size=(2, 11, 11))})
        np.testing.assert_allclose(run(p), ref.attention(q, k, v), rtol=0, atol=1e-13)


@test
def set_picks_one_set_named_as_check_lists_it():
    layers = [layer() for _ in range(3)]
    members = {}
    for i, (q, k, v) in enumerate(layers):
        for w, a in zip(("query_states", "key_states", "value_states"), (q, k, v)):
            members[f"model.layers.{i}.self_attn.{w}"] = a
    _, p = save(members)
    msg = run(p, expect=3)
    assert "3 sets" in msg and "--set" in msg and "model.layers.2.self_attn" in msg, msg
    r = fastrope("check", p, "--format", "jsonl", "--quiet")
    names = [json.loads(line)["set"] for line in r.stdout.decode().splitlines()]
    assert len(names) == 3, r.stdout
    for name in names:
        q, k, v = layers[int(name.split(".")[2])]
        np.testing.assert_allclose(run(p, "--set", name), ref.attention(q, k, v), rtol=0,
                                   atol=1e-13)
    msg = run(p, "--set", "model.layers.9.self_attn", expect=3)
    assert "no set 'model.layers.9.self_attn'" in msg and "model.layers.0.self_attn" in msg, msg


@test
def names_maps_anything_else():
    q, k, v = layer()
    _, p = save({"blk.0.wq": q, "blk.0.wk": k, "blk.0.wv": v})
    msg = run(p, expect=3)
    assert "--names" in msg, msg
    np.testing.assert_allclose(run(p, "--names", "q=wq,k=wk,v=wv"), ref.attention(q, k, v),
                               rtol=0, atol=1e-13)
    for bad in ("q=", "x=wq", "q=a,q=b"):
        r = fastrope("run", "--input", p, "-o", "o.npy", "--names", bad)
        assert r.returncode == 2 and r.stderr.count(b"\n") == 1, (bad, r.stderr)
    r = fastrope("run", "-q", p, "-k", p, "-v", p, "-o", "o.npy", "--set", "x")
    assert r.returncode == 2 and b"--input" in r.stderr, r.stderr


def gqa(lead, h, g, n, d, dv):
    q = rng.uniform(-1, 1, lead + (h, n, d))
    k = rng.uniform(-1, 1, lead + (h // g, n, d))
    v = rng.uniform(-1, 1, lead + (h // g, n, dv))
    return q, k, v


def repeat_kv(x, g):
    return np.repeat(x, g, axis=-3)  # HF: kv head j serves query heads j*g .. j*g+g-1


@test
def grouped_query_attention_is_hf_repeat_kv():
    q, k, v = gqa((2,), 6, 3, 13, 4, 5)
    d, p = save({"q": q, "k": k, "v": v})
    want = ref.attention(q, repeat_kv(k, 3), repeat_kv(v, 3), causal=True)
    np.testing.assert_allclose(run(p, "--causal"), want, rtol=0, atol=1e-13)
    # the fast methods too, within their bound
    out, rep = os.path.join(d, "f.npy"), os.path.join(d, "r.json")
    r = fastrope("run", "--input", p, "-o", out, "--method", "polyrope", "--eps", "1e-6",
                 "--causal", "--report", rep, "--quiet")
    assert r.returncode == 0, r.stderr
    assert np.max(np.abs(np.load(out) - want)) <= 1e-6
    with open(rep) as f:
        j = json.load(f)
    assert j["batch"] == 12 and len(j["entries"]) == 12 and j["error"]["max_abs"] <= 1e-6, j
    # multi-query: one key/value head
    q, k, v = gqa((), 4, 4, 9, 4, 4)
    _, p = save({"q": q, "k": k, "v": v})
    np.testing.assert_allclose(run(p), ref.attention(q, repeat_kv(k, 4), repeat_kv(v, 4)),
                               rtol=0, atol=1e-13)
    # heads that do not divide, or a grouped axis that is not the heads'
    for qshape, kshape in (((6, 9, 4), (4, 9, 4)), ((2, 6, 9, 4), (1, 6, 9, 4))):
        bad = {"q": rng.uniform(size=qshape), "k": rng.uniform(size=kshape),
               "v": rng.uniform(size=kshape)}
        _, p = save(bad)
        msg = run(p, expect=3)
        assert "dump.npz:k" in msg and str(list(kshape)) in msg.replace("(", "["), msg


@test
def grouped_query_gradients_sum_over_the_group():
    q, k, v = gqa((), 4, 2, 10, 4, 3)
    dout = rng.uniform(-1, 1, (4, 10, 3))
    d, p = save({"q": q, "k": k, "v": v})
    np.save(os.path.join(d, "dout.npy"), dout)
    g = os.path.join(d, "g.npz")
    r = fastrope("grad", "--input", p, "--dout", os.path.join(d, "dout.npy"), "-o", g,
                 "--method", "exact", "--causal", "--quiet")
    assert r.returncode == 0, r.stderr
    got = np.load(g)
    want = reference_grad.gradients(q, repeat_kv(k, 2), repeat_kv(v, 2), dout=dout, causal=True)
    assert got["dk"].shape == k.shape and got["dv"].shape == v.shape
    np.testing.assert_allclose(got["dq"], want["dq"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["out"], want["t"], rtol=0, atol=1e-12)
    for m in ("dk", "dv"):
        summed = want[m].reshape(2, 2, 10, -1).sum(axis=1)  # the group's heads, summed
        np.testing.assert_allclose(got[m], summed, rtol=0, atol=1e-12)


run_all()
