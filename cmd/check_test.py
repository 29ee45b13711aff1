"""CLI tests of `fastrope check`: sets found by name, every format and dtype against numpy,
per-head rows, shards, errors amid good inputs, and agreement with `fastrope run`'s report.

Sizes are small and entries small (d = 16, |x| <= 0.4): the degree stays low, so the cost
model's term counting is quick."""
import csv
import io
import json
import os
import struct
import subprocess

import numpy as np

from frtest import FASTROPE, fastrope, run_all, test, tmpdir

D, DV = 16, 6


def qkv(seed, lead=(), n=19, scale=0.4):
    rng = np.random.default_rng(seed)
    q = rng.uniform(-scale, scale, lead + (n, D))
    k = rng.uniform(-scale, scale, lead + (n, D))
    v = rng.uniform(-2 * scale, 2 * scale, lead + (n, DV))
    return q, k, v


def check(*args, code=0):
    r = fastrope("check", "--format", "jsonl", *args)
    assert r.returncode == code, (r.returncode, r.stderr.decode())
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    return rows, r.stderr.decode()


def write_st(path, tensors, header_patch=None, raw_header=None, extra=b""):
    """A .safetensors by hand: {name: (array, DTYPE)}; DTYPE BF16 takes float32 (truncated)."""
    hdr, blobs, off = {}, [], 0
    for name, (a, dt) in tensors.items():
        a = np.asarray(a, order="C")  # (ascontiguousarray makes a scalar 1-d)
        if dt == "BF16":
            b = (a.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        hdr[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    hdr["__metadata__"] = {"format": "pt"}
    if header_patch:
        header_patch(hdr)
    h = raw_header if raw_header is not None else json.dumps(hdr).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs) + extra)


def bf16(a):
    u = (a.astype(np.float32).view(np.uint32) >> 16).astype(np.uint32) << 16
    return u.view(np.float32).astype(np.float64)


def expect_bounds(row, q, k, v, tol=0):
    for key, x in (("B_q", q), ("B_k", k), ("B_v", v)):
        want = float(np.abs(np.asarray(x, dtype=np.float64)).max())
        assert abs(row[key] - want) <= tol * want, (key, row[key], want)


def same(a, b):
    """check prints %.17g; run's report goes through cJSON, which may drop the last digit: the
    doubles are equal (tested to the bit in core/stats_test.c), their printings within 2 ulp."""
    return abs(a - b) <= 4.5e-16 * abs(b)


def run_report(q, k, v, *flags):
    dd = tmpdir()
    p = os.path.join(dd, "in.npz")
    np.savez(p, q=np.asarray(q, np.float64), k=np.asarray(k, np.float64),
             v=np.asarray(v, np.float64))
    r = fastrope("run", "--input", p, "-o", os.path.join(dd, "o.npy"), "--report",
                 os.path.join(dd, "r.json"), "--quiet", "--check-rows", 0, *flags)
    assert r.returncode == 0, r.stderr.decode()
    with open(os.path.join(dd, "r.json")) as f:
        return json.load(f)


@test
def names_group_into_sets():
    dd = tmpdir()
    q, k, v = qkv(1)
    members = {
        "layers.0.attn.q_proj": q, "layers.0.attn.k_proj": k, "layers.0.attn.v_proj": v,
        "Layers.1.Attn.QUERY": q * 0.5, "layers.1.attn.key": k, "layers.1.attn.value": v,
        "enc_q": q, "enc_k": k, "enc_v": v,
        "amb.k": k, "amb.key": k, "amb.q": q, "amb.v": v,    # two k's: ambiguous
        "half.q": q, "half.k": k,                            # no v: incomplete
        "mask": np.ones((3, 3)),                             # ignored where sets exist
    }
    np.savez(os.path.join(dd, "b.npz"), **members)
    rows, err = check(os.path.join(dd, "b.npz"), code=3)
    by = {r["set"]: r for r in rows}
    assert sorted(by) == ["Layers.1.Attn", "amb", "enc", "half", "layers.0.attn"], sorted(by)
    assert "ambiguous" in by["amb"]["error"] and "'amb.k'" in by["amb"]["error"], by["amb"]
    assert "incomplete" in by["half"]["error"] and "no v" in by["half"]["error"], by["half"]
    for s in ("layers.0.attn", "enc"):
        assert by[s]["verdict"] in ("fast", "marginal", "exact-only"), by[s]
        expect_bounds(by[s], q, k, v)
    expect_bounds(by["Layers.1.Attn"], q * 0.5, k, v)
    assert "incomplete set" in err and "ambiguous set" in err, err
    # a bare q/k/v bundle: the set has no name
    np.savez(os.path.join(dd, "plain.npz"), Q=q, K=k, V=v)
    rows, _ = check(os.path.join(dd, "plain.npz"))
    assert len(rows) == 1 and rows[0]["set"] == "", rows


@test
def real_names_and_members_beside_sets():
    """The names HF, Meta's LLaMA and hand-written dumps use, with layer prefixes; members that
    are not q/k/v (gradients, outputs, weights) neither fail nor become sets."""
    dd = tmpdir()
    q, k, v = qkv(12, lead=(2,))
    pre = "model.layers.%d.self_attn."
    members = {}
    for layer, (a, b, c) in enumerate((("query_states", "key_states", "value_states"),
                                       ("q_proj", "k_proj", "v_proj"), ("xq", "xk", "xv"),
                                       ("query", "key", "value"))):
        members[pre % layer + a] = q * (layer + 1) / 4
        members[pre % layer + b] = k
        members[pre % layer + c] = v
        for extra in ("attn_weights", "attn_output", "grad_q", "dq", "dk", "dv", "dout",
                      "grad_out", "rotary_emb.inv_freq"):
            members[pre % layer + extra] = np.ones((3,))  # shapes do not matter: not looked at
    # beside a bare set too, and gradients with no set of their own name
    members.update(q=q, k=k, v=v, grad_q=q, grad_k=k, grad_v=v, attn_weights=np.ones((2, 2)))
    p = os.path.join(dd, "hf.npz")
    np.savez(p, **members)
    rows, err = check(p)
    by = {r["set"]: r for r in rows}
    assert sorted(by) == [""] + sorted((pre % i)[:-1] for i in range(4)), sorted(by)
    # dq is both grad_q and dq, dout both dout and grad_out: left out, with a note, no error
    for layer in range(4):
        note = by[(pre % layer)[:-1]]["note"]
        assert "dq is both" in note and "dout is both" in note and "--names" in note, note
    assert "no dout" in by[""]["note"] and err.count("note:") == 5, err
    for layer in range(4):
        expect_bounds(by[(pre % layer)[:-1]], q * (layer + 1) / 4, k, v)
    expect_bounds(by[""], q, k, v)
    # the same names as files of a directory
    os.makedirs(os.path.join(dd, "files"))
    for nm, x in (("layer3_query_states", q), ("layer3_key_states", k),
                  ("layer3_value_states", v), ("layer3_grad_q", q), ("layer3_dq", q)):
        np.save(os.path.join(dd, "files", nm + ".npy"), x)
    rows, _ = check(os.path.join(dd, "files"))
    assert [r["set"] for r in rows] == ["layer3"] and "error" not in rows[0], rows


@test
def names_option_maps_other_names():
    dd = tmpdir()
    q, k, v = qkv(13)
    p = os.path.join(dd, "w.npz")
    # "q" here is something else (a quantisation scale): --names q=... replaces the word q
    np.savez(p, **{"blk.0.wq": q, "blk.0.wk": k, "blk.0.wv": v, "blk.1.wq": q / 2,
                   "blk.1.wk": k, "blk.1.wv": v, "q": np.ones(3), "k": np.ones(3)})
    rows, _ = check(p, code=3)  # without --names: q and k but no v
    assert [r["set"] for r in rows] == [""] and "incomplete" in rows[0]["error"], rows
    rows, err = check(p, "--names", "q=wq,k=wk,v=wv")
    assert [r["set"] for r in rows] == ["blk.0", "blk.1"], (rows, err)
    expect_bounds(rows[1], q / 2, k, v)
    # a whole member name works too, and its set is ""
    rows, _ = check(p, "--names", "q=blk.1.wq,k=blk.1.wk,v=blk.1.wv")
    assert [r["set"] for r in rows] == [""], rows
    expect_bounds(rows[0], q / 2, k, v)
    for bad, msg in (("q", "not ROLE=NAME"), ("x=a", "not a role"), ("q=a,q=b", "twice"),
                     ("q=", "needs a name"), ("q=a,k=a", "both q and k")):
        r = fastrope("check", p, "--names", bad)
        assert r.returncode == 2 and msg in r.stderr.decode(), (bad, r.stderr.decode())


# ---- HF-style attention in numpy: what a hook on a LLaMA layer dumps, under HF's names ----------

def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate((-x[..., h:], x[..., :h]), axis=-1)


def rope_cos_sin(n, hd, base=10000.0):
    inv_freq = 1.0 / base ** (np.arange(0, hd, 2) / hd)
    emb = np.concatenate([np.outer(np.arange(n), inv_freq)] * 2, axis=-1)
    return np.cos(emb), np.sin(emb)


def repeat_kv(x, n_rep):
    """HF's repeat_kv: [b, kv_heads, n, d] -> [b, kv_heads * n_rep, n, d]."""
    return np.repeat(x, n_rep, axis=1)


def llama_attention(hidden, wq, wk, wv, heads, kv_heads, dout=None):
    """LlamaAttention.forward (causal, scale 1/sqrt(head_dim), rotate_half RoPE, repeat_kv) in
    numpy, and with dout its backward: the tensors a hook dumps, by HF's names."""
    b, n, _ = hidden.shape
    hd = wq.shape[1] // heads
    g = heads // kv_heads
    query_states = (hidden @ wq).reshape(b, n, heads, hd).transpose(0, 2, 1, 3)
    key_states = (hidden @ wk).reshape(b, n, kv_heads, hd).transpose(0, 2, 1, 3)
    value_states = (hidden @ wv).reshape(b, n, kv_heads, hd).transpose(0, 2, 1, 3)
    cos, sin = rope_cos_sin(n, hd)
    qr = query_states * cos + rotate_half(query_states) * sin   # apply_rotary_pos_emb
    kr = repeat_kv(key_states * cos + rotate_half(key_states) * sin, g)
    vr = repeat_kv(value_states, g)
    scores = qr @ kr.transpose(0, 1, 3, 2) / np.sqrt(hd)
    scores = np.where(np.tril(np.ones((n, n), bool)), scores, -np.inf)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out = {"query_states": query_states, "key_states": key_states,
           "value_states": value_states, "attn_weights": w, "attn_output": w @ vr}
    if dout is None:
        return out
    dp = dout @ vr.transpose(0, 1, 3, 2)
    ds = w * (dp - (dp * w).sum(-1, keepdims=True)) / np.sqrt(hd)
    unrotate = lambda y: y * cos - rotate_half(y) * sin  # the transpose of the rotation
    group_sum = lambda y: y.reshape(b, kv_heads, g, n, hd).sum(2)
    out.update(grad_attn_output=dout, grad_query_states=unrotate(ds @ kr),
               grad_key_states=group_sum(unrotate(ds.transpose(0, 1, 3, 2) @ qr)),
               grad_value_states=group_sum(w.transpose(0, 1, 3, 2) @ dout))
    return out


LLAMA_FLAGS = ("--preset", "llama")  # rotate_half pairs, 1/sqrt(head_dim), causal


def llama_dump(path, seed, layers=2, heads=4, kv_heads=2, n=23, hd=16, grads=False):
    rng = np.random.default_rng(seed)
    members = {}
    for layer in range(layers):
        hidden = rng.standard_normal((2, n, 48))
        ws = [rng.standard_normal((48, h * hd)) * 0.07 for h in (heads, kv_heads, kv_heads)]
        dout = rng.standard_normal((2, heads, n, hd)) if grads else None
        for name, x in llama_attention(hidden, *ws, heads, kv_heads, dout).items():
            members["model.layers.%d.self_attn.%s" % (layer, name)] = x
    np.savez(path, **members)
    return members


@test
def hf_style_dump_verified_and_a_wrong_row_caught():
    dd = tmpdir()
    p = os.path.join(dd, "llama.npz")
    m = llama_dump(p, 20)
    rows, err = check(p, *LLAMA_FLAGS, "--check-rows", "all")
    assert [r["set"] for r in rows] == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
    for r in rows:
        assert r["out_max_rel"] < 1e-13 and r["out_rows"] == 8 * 23, r
        assert r["heads"] == 8 and r["kv_heads"] == 4 and r["verdict"] != "output-mismatch", r
    # one wrong output row (a kernel's bug) in one head of layer 1
    m["model.layers.1.self_attn.attn_output"][1, 2, 17, :] *= 1.001
    np.savez(p, **m)
    rows, err = check(p, *LLAMA_FLAGS, "--check-rows", "all", code=4)
    assert [r["verdict"] for r in rows][1] == "output-mismatch" and rows[0]["verdict"] != \
        "output-mismatch", rows
    assert 1e-4 < rows[1]["out_max_rel"] < 1e-2, rows[1]
    rows, _ = check(p, *LLAMA_FLAGS, "--check-rows", "all", "--per-head", code=4)
    bad = [(r["set"], r["head"], r["kv_head"]) for r in rows if r["verdict"] == "output-mismatch"]
    assert bad == [("model.layers.1.self_attn", 6, 3)], bad  # batch 1, head 2: index 1*4+2
    # the default samples 256 rows of each head: all 23 here, so the row is caught too
    check(p, *LLAMA_FLAGS, code=4)
    assert check(p, *LLAMA_FLAGS, "--tol", "1e-2")[0][1]["verdict"] != "output-mismatch"
    assert "out_max_rel" not in check(p, *LLAMA_FLAGS, "--check-rows", "0")[0][1]
    # the preset is these options, and the papers' default convention (interleaved pairs) is
    # caught as the wrong one
    rows, _ = check(p, "--rope-pairs", "half", "--scale", "sdpa", "--causal", code=4)
    assert [r["verdict"] for r in rows] == [rows[0]["verdict"], "output-mismatch"], rows
    rows, _ = check(p, "--scale", "sdpa", "--causal", code=4)
    assert all(r["verdict"] == "output-mismatch" and r["out_max_rel"] > 1e-2 for r in rows)


@test
def grouped_query_attention_against_numpy_repeat():
    dd = tmpdir()
    rng = np.random.default_rng(21)
    n = 19
    for heads, kv in ((6, 3), (6, 1), (4, 4)):  # grouped, multi-query, plain
        g = heads // kv
        q = rng.uniform(-0.5, 0.5, (2, heads, n, D))
        k = rng.uniform(-0.5, 0.5, (2, kv, n, D))
        v = rng.uniform(-1, 1, (2, kv, n, DV))
        k[1, kv - 1] *= 1.8  # one key/value head stands out
        kr, vr = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
        # plain attention in numpy (no rotation), on the repeated heads
        s = q @ kr.transpose(0, 1, 3, 2) / D
        w = np.exp(s - s.max(-1, keepdims=True))
        out = (w / w.sum(-1, keepdims=True)) @ vr
        p = os.path.join(dd, "g%d_%d.npz" % (heads, kv))
        np.savez(p, q=q, k=k, v=v, out=out)
        rows, _ = check(p, "--no-rope", "--per-head", "--check-rows", "all")
        assert len(rows) == 2 * heads, rows
        for r in rows:
            b, h = divmod(r["head"], heads)
            assert r.get("kv_head", r["head"]) == b * kv + h // g, r
            expect_bounds(r, q[b, h], k[b, h // g], v[b, h // g])
            assert same(r["R"], run_report(q[b, h], kr[b, h], vr[b, h],
                                           "--no-rope")["bounds"]["R"]), r
            assert r["out_max_rel"] < 1e-13 and r["out_rows"] == n, r
        whole, _ = check(p, "--no-rope")
        worst = max(rows, key=lambda r: r["R"])
        assert whole[0]["R"] == worst["R"] and whole[0]["worst_head"] == worst["head"], whole
        assert (whole[0]["heads"], whole[0]["kv_heads"]) == (2 * heads, 2 * kv), whole
    # heads that do not divide, or a grouped axis other than the heads', are shape errors
    for ks in ((2, 4, n, D), (1, 3, n, D)):
        p = os.path.join(dd, "bad.npz")
        np.savez(p, q=np.zeros((2, 6, n, D)), k=np.zeros(ks), v=np.zeros(ks[:3] + (DV,)))
        rows, _ = check(p, code=3)
        assert "grouped-query" in rows[0]["error"] and "[2, 6, 19, 16]" in rows[0]["error"], rows


@test
def gradients_verified():
    dd = tmpdir()
    p = os.path.join(dd, "g.npz")
    m = llama_dump(p, 22, layers=1, grads=True)
    pre = "model.layers.0.self_attn."
    rows, err = check(p, *LLAMA_FLAGS, "--check-rows", "all")
    r = rows[0]
    for t in ("out", "dq", "dk", "dv"):
        assert r[t + "_max_rel"] < 1e-12, (t, r)
    assert r["dq_rows"] == 8 * 23 and r["dk_rows"] == 4 * 23, r  # dk, dv per key/value head
    # a wrong row of dk (summed over the group the wrong way) is a gradient mismatch
    m[pre + "grad_key_states"][0, 1, 5] += 0.01 * np.abs(m[pre + "grad_key_states"]).max()
    np.savez(p, **m)
    rows, _ = check(p, *LLAMA_FLAGS, "--check-rows", "all", code=4)
    assert rows[0]["verdict"] == "gradient-mismatch" and rows[0]["dk_max_rel"] > 1e-3, rows
    assert rows[0]["dq_max_rel"] < 1e-12 and rows[0]["dv_max_rel"] < 1e-12, rows
    # gradients with no dout beside them cannot be compared: a note, not a failure
    del m[pre + "grad_attn_output"]
    np.savez(p, **m)
    rows, err = check(p, *LLAMA_FLAGS)
    assert "dq_max_rel" not in rows[0] and "no dout" in rows[0]["note"], rows
    assert rows[0]["out_max_rel"] < 1e-12, rows
    # a NaN in the stored output is a mismatch, not a crash
    m[pre + "attn_output"][0, 0, 3, 3] = np.nan
    np.savez(p, **m)
    rows, _ = check(p, *LLAMA_FLAGS, code=4)
    assert rows[0]["verdict"] == "output-mismatch" and rows[0]["out_max_abs"] is None, rows


@test
def verification_reads_every_format():
    """Outputs and gradients are read back head by head and row by row (fr_members_read) from
    every container: seekable files, deflated zip members (forward only), memory (JSON,
    stdin), Fortran order; a wrong entry in the last head is found in each."""
    dd = tmpdir()
    m = llama_dump(os.path.join(dd, "src.npz"), 23, layers=1, heads=6, kv_heads=3, grads=True)
    m = {k.split(".")[-1]: x for k, x in m.items() if "weights" not in k}
    bad = {k: x.copy() for k, x in m.items()}
    bad["attn_output"][-1, -1, -1, -1] += 1e-3
    bad["grad_value_states"][-1, -1, -1, 0] += 1e-3  # the last row is always sampled
    for name, ms in (("good", m), ("bad", bad)):
        d = os.path.join(dd, name)
        os.makedirs(os.path.join(d, "npy"))
        np.savez(os.path.join(d, "stored.npz"), **ms)
        np.savez_compressed(os.path.join(d, "deflated.npz"), **ms)
        write_st(os.path.join(d, "f64.safetensors"), {k: (x, "F64") for k, x in ms.items()})
        with open(os.path.join(d, "b.json"), "w") as f:
            json.dump({k: x.tolist() for k, x in ms.items()}, f)
        for k, x in ms.items():  # Fortran order and big-endian among the files
            x = np.asfortranarray(x) if k == "attn_output" else x
            np.save(os.path.join(d, "npy", k + ".npy"), x.astype(">f8") if "grad_q" in k else x)
        rows, _ = check(d, *LLAMA_FLAGS, "--recursive", "--check-rows", "5",
                        code=0 if name == "good" else 4)
        assert len(rows) == 5, rows
        for r in rows:
            assert r["out_rows"] == 6 * 2 * 5 and r["dk_rows"] == 3 * 2 * 5, r
            if name == "good":
                assert max(r[t + "_max_rel"] for t in ("out", "dq", "dk", "dv")) < 1e-12, r
            else:
                assert r["verdict"] == "output-mismatch" and r["dv_max_rel"] > 1e-4, r
                assert r["dq_max_rel"] < 1e-12 and r["dk_max_rel"] < 1e-12, r
        with open(os.path.join(d, "deflated.npz"), "rb") as f:
            r = fastrope("check", "-", "--format", "jsonl", "--check-rows", 5, *LLAMA_FLAGS,
                         input=f.read())
        assert r.returncode == (0 if name == "good" else 4), r.stderr.decode()
        assert json.loads(r.stdout)["out_rows"] == 60


@test
def example_check_dumps_reports_the_comparisons():
    """scripts/examples/check_dumps.py shows what check compares, and fails on a mismatch."""
    import sys
    dd = tmpdir()
    m = llama_dump(os.path.join(dd, "good.npz"), 24, layers=1, grads=True)
    m["model.layers.0.self_attn.grad_query_states"][0, 0, 0, 0] += 1.0
    np.savez(os.path.join(dd, "bad.npz"), **m)
    ex = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "examples",
                      "check_dumps.py")
    env = dict(os.environ, FASTROPE=FASTROPE)
    r = subprocess.run([sys.executable, ex, os.path.join(dd, "good.npz"), "--preset", "llama"],
                       capture_output=True, env=env)
    out = r.stdout.decode()
    assert r.returncode == 0 and out.startswith("ok ") and "out " in out and "dk " in out, out
    r = subprocess.run([sys.executable, ex, dd, "--preset", "llama"], capture_output=True, env=env)
    lines = r.stdout.decode().splitlines()
    assert r.returncode == 1 and lines[0].startswith("MISMATCH") and "bad.npz" in lines[0], lines
    assert lines[-1] == "2 sets, 1 mismatched or unreadable", lines


@test
def every_format_and_dtype_against_numpy():
    dd = tmpdir()
    q, k, v = qkv(2, lead=(2,))
    cases = []
    for dt in (np.float16, np.float32, np.float64):
        p = os.path.join(dd, "f%d.npz" % np.dtype(dt).itemsize)
        np.savez(p, q=q.astype(dt), k=k.astype(dt), v=v.astype(dt))
        cases.append((p, q.astype(dt), k.astype(dt), v.astype(dt)))
    p = os.path.join(dd, "z.npz")
    np.savez_compressed(p, q=q.astype(np.float32), k=k, v=v.astype(np.float16))
    cases.append((p, q.astype(np.float32), k, v.astype(np.float16)))
    # integers and bool (what quantised dumps hold): entries are whole numbers
    qi = np.round(q * 300).astype(np.int16)
    ki = np.round(k * 100).astype(np.int8)
    vb = v > 0
    p = os.path.join(dd, "ints.npz")
    np.savez(p, q=qi, k=ki, v=vb)
    cases.append((p, qi, ki, vb))
    for name, dt in (("F16", np.float16), ("F32", np.float32), ("F64", np.float64)):
        p = os.path.join(dd, "%s.safetensors" % name)
        write_st(p, {"q": (q.astype(dt), name), "k": (k.astype(dt), name),
                     "v": (v.astype(dt), name)})
        cases.append((p, q.astype(dt), k.astype(dt), v.astype(dt)))
    p = os.path.join(dd, "bf.safetensors")
    write_st(p, {"q": (q, "BF16"), "k": (k.astype(np.float32), "F32"), "v": (v, "BF16")})
    cases.append((p, bf16(q), k.astype(np.float32), bf16(v)))
    ints = {"I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64, "U8": np.uint8,
            "U16": np.uint16, "U32": np.uint32, "U64": np.uint64}
    for name, dt in ints.items():
        p = os.path.join(dd, "%s.safetensors" % name)
        qq = (np.abs(q) * 200).astype(dt)
        write_st(p, {"q": (qq, name), "k": (qq, name), "v": (v > 0, "BOOL")})
        cases.append((p, qq, qq, v > 0))
    p = os.path.join(dd, "b.json")
    with open(p, "w") as f:
        json.dump({"q": q.tolist(), "k": k.tolist(), "v": v.tolist()}, f)
    cases.append((p, q, k, v))
    os.makedirs(os.path.join(dd, "npydir"))
    for nm, x in (("q", q.astype(np.float16)), ("k", k), ("v", v.astype(np.float32))):
        np.save(os.path.join(dd, "npydir", nm + ".npy"), x)
    np.save(os.path.join(dd, "npydir", "fort_q.npy"), np.asfortranarray(q))
    np.save(os.path.join(dd, "npydir", "fort_k.npy"), k)
    np.save(os.path.join(dd, "npydir", "fort_v.npy"), v.astype(">f8"))  # big-endian
    for path, a, b, c in cases:
        rows, _ = check(path, "--no-rope", "--scale", "sdpa")
        assert len(rows) == 1, (path, rows)
        expect_bounds(rows[0], a, b, c)
        # every head has its own bounds: the set's R is its worst head's, as run reports it
        w = rows[0]["worst_head"]
        a, b, c = (np.asarray(x, np.float64)[w] for x in (a, b, c))
        rep = run_report(a, b, c, "--no-rope", "--scale", "sdpa")
        assert same(rows[0]["R"], rep["bounds"]["R"]), (path, rows[0]["R"], rep["bounds"]["R"])
    rows, _ = check(os.path.join(dd, "npydir"))
    by = {r["set"]: r for r in rows}
    assert sorted(by) == ["", "fort"], by
    expect_bounds(by[""], q.astype(np.float16), k, v.astype(np.float32))
    expect_bounds(by["fort"], q, k, v)
    w = by["fort"]["worst_head"]
    assert same(by["fort"]["R"], run_report(q[w], k[w], v[w])["bounds"]["R"])


@test
def r_and_degree_equal_runs_report():
    for flags in ([], ["--rope-clip", "3"], ["--no-rope"], ["--causal", "--scale", "sdpa"],
                  ["--rope-pairs", "half", "--rotary-dim", "8", "--eps", "1e-5"]):
        dd = tmpdir()
        q, k, v = qkv(3, lead=(2, 3), n=23)
        q[1, 2, 5, 3] = 0.9  # one head stands out
        st = os.path.join(dd, "x.safetensors")
        write_st(st, {"q": (q.astype(np.float32), "F32"), "k": (k, "F64"),
                      "v": (v.astype(np.float16), "F16")})
        rows, _ = check(st, *flags)
        rep = run_report(q.astype(np.float32)[1, 2], k[1, 2], v.astype(np.float16)[1, 2], *flags)
        r = rows[0]
        assert same(r["R"], rep["bounds"]["R"]), (flags, r["R"], rep["bounds"]["R"])
        assert r["R_from"] == rep["bounds"]["R_from"]
        # run plans exact without fitting a polynomial where the cost model alone decides it
        # (small n): then it has no degree to compare, and check's is the estimate's
        if rep["poly"] is None:
            assert rep["method"] == "exact" and r["degree"] is not None, (flags, rep, r)
        else:
            assert r["degree"] == rep["poly"]["degree"], (flags, r["degree"], rep["poly"])
        assert r["worst_head"] == 5, r  # index 1*3+2 of the leading axes
        assert r["n"] == 23 and r["d"] == D and r["dv"] == DV


@test
def per_head_rows():
    dd = tmpdir()
    q, k, v = qkv(4, lead=(2, 3))
    q[0, 1] *= 2
    p = os.path.join(dd, "h.npz")
    np.savez(p, q=q, k=k, v=v)
    rows, _ = check(p, "--per-head")
    assert [r["head"] for r in rows] == list(range(6)), rows
    for h, r in enumerate(rows):
        a, b = divmod(h, 3)
        expect_bounds(r, q[a, b], k[a, b], v[a, b])
        assert same(r["R"], run_report(q[a, b], k[a, b], v[a, b])["bounds"]["R"])
    whole, _ = check(p)
    # each head planned on its own bounds: the set's R is the worst head's, and names it
    assert whole[0]["R"] == max(r["R"] for r in rows) and whole[0]["worst_head"] == 1, whole
    assert whole[0]["degree"] == max(r["degree"] for r in rows), whole
    for m in ("exact", "polyrope"):
        assert abs(whole[0]["predicted_s"][m] - sum(r["predicted_s"][m] for r in rows)) <= \
            1e-12 * whole[0]["predicted_s"][m], (m, whole)


@test
def worst_head_is_the_head_of_r():
    """The set's R is one head's R and names that head, also when the head with the largest
    row norms is not the one with the largest R (head 0: its R comes from the support bound)."""
    dd = tmpdir()
    rng = np.random.default_rng(18)
    q = rng.uniform(-0.01, 0.01, (3, 11, D))
    k = rng.uniform(-0.01, 0.01, (3, 11, D))
    v = rng.uniform(-1, 1, (3, 11, DV))
    q[0, :, 0], k[0, :, 1] = 0.9, 0.9  # head 0: large rows, orthogonal: small scores
    q[2, :, 0], k[2, :, 0] = 0.5, 0.5  # head 2: smaller rows, aligned
    p = os.path.join(dd, "w.npz")
    np.savez(p, q=q, k=k, v=v)
    heads, _ = check(p, "--no-rope", "--per-head")
    whole, _ = check(p, "--no-rope")
    best = max(heads, key=lambda r: r["R"])
    assert best["head"] == 2 and heads[0]["R_from"] == "support", heads
    assert whole[0]["worst_head"] == 2 and whole[0]["R"] == best["R"], whole
    assert same(whole[0]["R"], run_report(q[2], k[2], v[2], "--no-rope")["bounds"]["R"])
    # run plans every problem of the batch on its own bounds too, and reports the worst R
    assert same(whole[0]["R"], run_report(q, k, v, "--no-rope")["bounds"]["R"])


@test
def shards_partition_the_list():
    dd = tmpdir()
    q, k, v = qkv(5, n=5)
    for i in range(7):
        np.savez(os.path.join(dd, "f%d.npz" % i), **{"l%d.q" % j: q for j in range(2)},
                 **{"l%d.k" % j: k for j in range(2)}, **{"l%d.v" % j: v for j in range(2)})
    full, _ = check(dd)
    keys = [(r["path"], r["set"]) for r in full]
    assert len(keys) == 14 and keys == sorted(keys), keys
    for N in (1, 3, 5, 20):
        got = []
        for K in range(1, N + 1):
            rows, _ = check(dd, "--shard", "%d/%d" % (K, N))
            got += [(r["path"], r["set"]) for r in rows]
            assert [x for x in keys[K - 1::N]] == [(r["path"], r["set"]) for r in rows]
        assert sorted(got) == keys and len(set(got)) == len(got), (N, got)
    for bad in ("0/3", "4/3", "1/0", "x", "1/2/3"):
        r = fastrope("check", dd, "--shard", bad)
        assert r.returncode == 2, (bad, r.returncode)


@test
def corrupt_file_amid_good_ones():
    dd = tmpdir()
    q, k, v = qkv(6)
    np.savez(os.path.join(dd, "a.npz"), q=q, k=k, v=v)
    np.savez(os.path.join(dd, "c.npz"), q=q, k=k, v=v)
    with open(os.path.join(dd, "a.npz"), "rb") as f:
        data = f.read()
    with open(os.path.join(dd, "b.npz"), "wb") as f:
        f.write(data[: len(data) // 2])  # truncated
    write_st(os.path.join(dd, "d.safetensors"), {"q": (q, "F64"), "k": (k, "F64"),
                                                 "v": (v, "F64")})
    q2 = q.copy()
    q2[3, 4] = np.nan
    np.savez(os.path.join(dd, "e.npz"), q=q2, k=k, v=v)
    rows, err = check(dd, code=3)
    names = [os.path.basename(r["path"]) for r in rows]
    assert names == ["a.npz", "b.npz", "c.npz", "d.safetensors", "e.npz"], names
    assert "error" in rows[1] and "b.npz" in err, rows[1]
    assert "NaN" in rows[4]["error"] and "flat index %d" % (3 * D + 4) in rows[4]["error"]
    for i in (0, 2, 3):
        assert "error" not in rows[i], rows[i]
        expect_bounds(rows[i], q, k, v)


@test
def empty_directory_and_recursion():
    dd = tmpdir()
    rows, err = check(dd, code=3)
    assert rows == [] and "nothing to check" in err and "--recursive" not in err, err
    sub = os.path.join(dd, "a", "b")
    os.makedirs(sub)
    q, k, v = qkv(7)
    for nm, x in (("q", q), ("k", k), ("v", v)):
        np.save(os.path.join(sub, "layer3_%s.npy" % nm), x)
    rows, err = check(dd, code=3)  # not without --recursive, and it says so
    assert rows == [] and "nothing to check" in err and "add --recursive" in err, err
    assert "%s has subdirectories" % dd in err, err
    rows, _ = check(dd, "--recursive")
    assert len(rows) == 1 and rows[0]["path"] == sub and rows[0]["set"] == "layer3", rows


@test
def recursion_through_symlink_loops():
    """Each directory and bundle once, whatever the links: two links to '.', a link to the
    parent, a link to a sibling, a second name for a bundle."""
    dd = tmpdir()
    q, k, v = qkv(14)
    sub = os.path.join(dd, "a", "b")
    os.makedirs(sub)
    np.savez(os.path.join(sub, "x.npz"), q=q, k=k, v=v)
    np.savez(os.path.join(dd, "a", "y.npz"), q=q, k=k, v=v)
    os.symlink(".", os.path.join(sub, "self"))
    os.symlink(".", os.path.join(sub, "self2"))
    os.symlink("..", os.path.join(sub, "up"))
    os.symlink(os.path.join(dd, "a"), os.path.join(dd, "alias"))
    os.symlink("x.npz", os.path.join(sub, "x_again.npz"))
    os.symlink("missing", os.path.join(sub, "dangling"))
    r = fastrope("check", dd, "--recursive", "--format", "jsonl", timeout=20)
    assert r.returncode == 0, r.stderr.decode()
    rows = [json.loads(x) for x in r.stdout.decode().splitlines()]
    names = sorted(os.path.basename(x["path"]) for x in rows)
    assert names == ["x.npz", "y.npz"], rows
    # a path given twice, or inside a directory given too, is checked once
    rows, _ = check(os.path.join(sub, "x.npz"), sub, os.path.join(sub, "x.npz"))
    assert len(rows) == 1, rows


@test
def stdin_is_a_path():
    dd = tmpdir()
    q, k, v = qkv(15, lead=(2,))
    p = os.path.join(dd, "s.npz")
    np.savez(p, **{"l0.xq": q, "l0.xk": k, "l0.xv": v, "l1.q": q, "l1.k": k, "l1.v": v})
    want, _ = check(p)
    with open(p, "rb") as f:
        data = f.read()
    for args in (["-"], ["-", "-"]):  # stdin is read once, and listed once
        r = fastrope("check", *args, "--format", "jsonl", input=data)
        assert r.returncode == 0, r.stderr.decode()
        rows = [json.loads(x) for x in r.stdout.decode().splitlines()]
        assert [(x["path"], x["set"], x["R"]) for x in rows] == \
            [("-", x["set"], x["R"]) for x in want], rows
    # from a real pipe, as a shell gives it
    r = subprocess.run("cat %s | %s check - --format jsonl" % (p, FASTROPE), shell=True,
                       capture_output=True)
    assert r.returncode == 0 and len(r.stdout.decode().splitlines()) == 2, r.stderr.decode()


@test
def write_errors_are_reported():
    dd = tmpdir()
    q, k, v = qkv(16)
    p = os.path.join(dd, "w.npz")
    np.savez(p, q=q, k=k, v=v)
    for fmt in ("table", "jsonl", "csv"):
        with open("/dev/full", "w") as full:
            r = subprocess.run([FASTROPE, "check", p, "--format", fmt], stdout=full,
                               stderr=subprocess.PIPE)
        assert r.returncode == 1 and b"No space left on device" in r.stderr, (fmt, r.stderr)
    # a reader that went away: exit 1 with the reason, not a silent death by SIGPIPE
    for i in range(20):
        np.savez(os.path.join(dd, "w%02d.npz" % i), q=q, k=k, v=v)
    proc = subprocess.Popen([FASTROPE, "check", dd, "--format", "jsonl"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait() == 1 and b"Broken pipe" in err, (proc.returncode, err)


@test
def every_usage_error_says_why():
    dd = tmpdir()
    q, k, v = qkv(17)
    p = os.path.join(dd, "u.npz")
    np.savez(p, q=q, k=k, v=v)
    for args, msg in ((["--scale", "x"], "--scale"), (["--tol", "0"], "--tol"),
                      (["--tol", "x"], "--tol"), (["--check-rows", "x"], "--check-rows"),
                      (["--check-rows", "-1"], "--check-rows"), (["--format", "xml"], "--format"),
                      (["--names", "q"], "--names"), (["--shard", "2/1"], "--shard"),
                      (["--eps"], "requires an argument"), (["--bogus"], "unrecognized"),
                      (["--preset", "bert"], "--preset"), (["--tol", "1", "--tol", "2"], "twice"),
                      (["--causal", "--no-causal"], "contradict"),
                      (["-w", p], "explicit W"), (["--rope", "--no-rope"], "at most one"),
                      (["--window", "-2"], "--window"), (["--rope-pairs", "x"], "--rope-pairs")):
        r = fastrope("check", p, *args)
        e = r.stderr.decode()
        assert r.returncode == 2 and msg in e and r.stdout == b"", (args, r.returncode, e)
        assert e.count("fastrope:") == 1, (args, e)  # one message, not two
    r = fastrope("check")
    assert r.returncode == 2 and "give at least one PATH" in r.stderr.decode()


@test
def single_tensor_files():
    dd = tmpdir()
    q, _, _ = qkv(8, lead=(3,))
    p = os.path.join(dd, "act.npy")
    np.save(p, q.astype(np.float16))
    rows, _ = check(p)
    assert rows[0]["verdict"] == "entries-only" and "R" not in rows[0], rows
    assert rows[0]["B"] == float(np.abs(q.astype(np.float16)).max())
    rows, _ = check(p, "--per-head")
    assert [r["B"] for r in rows] == [float(np.abs(q[i].astype(np.float16)).max())
                                      for i in range(3)]


@test
def table_and_csv_formats():
    dd = tmpdir()
    q, k, v = qkv(9)
    np.savez(os.path.join(dd, "a.npz"), q=q, k=k, v=v)
    with open(os.path.join(dd, "bad.npz"), "wb") as f:
        f.write(b"PK\x03\x04garbage")
    r = fastrope("check", dd, "--format", "csv")
    assert r.returncode == 3
    rows = list(csv.DictReader(io.StringIO(r.stdout.decode())))
    assert len(rows) == 2 and rows[1]["error"] and not rows[0]["error"], rows
    for key in ("path", "set", "n", "d", "dv", "B_q", "B_k", "B_v", "B_over_sqrt_ln_n", "R",
                "degree", "predicted_s_exact", "predicted_s_polyrope", "speedup", "verdict"):
        assert key in rows[0], key
    assert float(rows[0]["B_q"]) == float(np.abs(q).max())
    assert "check:" in r.stderr.decode()  # the summary is not in the CSV
    r = fastrope("check", dd)
    out = r.stdout.decode()
    assert r.returncode == 3 and "verdict" in out and "error" in out and "check: 2 sets" in out
    r = fastrope("check", dd, "--quiet", "--format", "jsonl")
    assert "MB read" not in r.stderr.decode() and "bad.npz" in r.stderr.decode()


@test
def safetensors_through_convert_bit_exact():
    dd = tmpdir()
    rng = np.random.default_rng(10)
    x32 = rng.standard_normal((3, 4)).astype(np.float32)
    x16 = rng.standard_normal((5,)).astype(np.float16)
    xbf = rng.standard_normal((2, 3)).astype(np.float32)
    xi = rng.integers(-2**40, 2**40, (4,), dtype=np.int64)
    xu = rng.integers(0, 255, (2, 2), dtype=np.uint8)
    s = np.array(2.5)
    p = os.path.join(dd, "m.safetensors")
    write_st(p, {"a": (x32, "F32"), "b": (x16, "F16"), "c": (xbf, "BF16"), "d": (xi, "I64"),
                 "e": (xu, "U8"), "s": (s, "F64"), "empty": (np.zeros((0, 3)), "F32")})
    out = os.path.join(dd, "m.npz")
    r = fastrope("convert", p, out)
    assert r.returncode == 0, r.stderr.decode()
    got = np.load(out)
    want = {"a": x32, "b": x16, "c": bf16(xbf), "d": xi, "e": xu, "s": s,
            "empty": np.zeros((0, 3))}
    assert sorted(got.files) == sorted(want)
    for nm, w in want.items():
        g = got[nm]
        assert g.dtype == np.float64 and g.shape == w.shape, (nm, g.shape, w.shape)
        assert np.array_equal(g, np.asarray(w, dtype=np.float64)), nm
    # and from stdin (the in-memory path)
    with open(p, "rb") as f:
        r = fastrope("convert", "-", out, input=f.read())
    assert r.returncode == 0 and np.array_equal(np.load(out)["c"], bf16(xbf))
    # run accepts it as a bundle
    q, k, v = qkv(11)
    write_st(os.path.join(dd, "qkv.safetensors"), {"q": (q, "F64"), "k": (k, "F64"),
                                                   "v": (v, "F64")})
    r = fastrope("run", "--input", os.path.join(dd, "qkv.safetensors"), "-o",
                 os.path.join(dd, "o.npy"), "--quiet")
    assert r.returncode == 0, r.stderr.decode()


@test
def hostile_safetensors_headers():
    dd = tmpdir()
    a = np.arange(6, dtype=np.float32).reshape(2, 3)

    def patch(fn):
        return lambda h: fn(h)

    cases = {
        "out_of_range": (dict(header_patch=patch(lambda h: h["x"].update(
            data_offsets=[0, 10 ** 6]))), "run past"),
        "overlap": (dict(header_patch=patch(lambda h: h["y"].update(
            data_offsets=[8, 32]))), "overlap"),
        "bad_dtype": (dict(header_patch=patch(lambda h: h["x"].update(dtype="F8_E4M3"))),
                      "unsupported dtype"),
        "shape_vs_bytes": (dict(header_patch=patch(lambda h: h["x"].update(shape=[3, 3]))),
                           "make"),
        "not_json": (dict(raw_header=b"{this is not json}"), "not valid JSON"),
        "not_object": (dict(raw_header=b'{"x": 5}'), "'x' is not an object"),
        "neg_offset": (dict(header_patch=patch(lambda h: h["x"].update(
            data_offsets=[-1, 23]))), "data_offsets"),
        "gap_trailing": (dict(extra=b"\0" * 8), "after the last tensor"),
    }
    for name, (kw, msg) in cases.items():
        p = os.path.join(dd, name + ".safetensors")
        write_st(p, {"x": (a, "F32"), "y": (a, "F32")}, **kw)
        r = fastrope("convert", p, os.path.join(dd, "o.npz"))
        assert r.returncode == 3 and msg in r.stderr.decode(), (name, r.stderr.decode())
        rows, err = check(p, code=3)
        assert len(rows) == 1 and msg in rows[0]["error"], (name, rows)
    # a header length larger than the file
    p = os.path.join(dd, "long.safetensors")
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", 10 ** 6) + b'{"x": {}}')
    r = fastrope("convert", p, os.path.join(dd, "o.npz"))
    assert r.returncode == 3 and "larger than the file" in r.stderr.decode(), r.stderr
    rows, _ = check(p, code=3)
    assert "larger than the file" in rows[0]["error"]


run_all()
