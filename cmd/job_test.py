"""The job that run and grad share: outputs staged and committed all or nothing, a refusal that
still writes its report, scores that overflow refused for every method, and the report's entries
(each batch entry's bounds, plan and observed error, and the worst one)."""
import json
import os

import numpy as np

from frtest import fastrope, run_all, test, tmpdir
import reference as ref

rng = np.random.default_rng(14)


def qkv(n, d, lead=(), B=1.0):
    return {m: rng.uniform(-B, B, lead + (n, d)) for m in "qkv"}


def files(d, b, **extra):
    p = os.path.join(d, "in.npz")
    np.savez(p, **b)
    out = {"in": p}
    for name, a in extra.items():
        out[name] = os.path.join(d, name + ".npy")
        np.save(out[name], a)
    return out


def precious(path):
    with open(path, "wb") as f:
        f.write(b"precious")


def unchanged(path):
    with open(path, "rb") as f:
        return f.read() == b"precious"


@test
def a_missing_report_directory_leaves_the_output_untouched():
    d = tmpdir()
    p = files(d, qkv(8, 4))
    out = os.path.join(d, "out.npy")
    precious(out)
    r = fastrope("run", "--input", p["in"], "-o", out, "--report",
                 os.path.join(d, "nodir", "r.json"))
    assert r.returncode == 1 and b"nodir" in r.stderr, (r.returncode, r.stderr)
    assert unchanged(out) and sorted(os.listdir(d)) == ["in.npz", "out.npy"], os.listdir(d)


@test
def grad_outputs_are_all_or_nothing():
    d = tmpdir()
    b = qkv(8, 4)
    p = files(d, b, up=rng.uniform(-1, 1, (8, 4)))
    a = os.path.join(d, "a.npy")
    precious(a)
    r = fastrope("grad", "--input", p["in"], "--dout", p["up"], "--dq", a, "--dk",
                 os.path.join(d, "nodir", "x.npy"))
    assert r.returncode == 1 and unchanged(a), (r.returncode, r.stderr)
    # and when everything can be written, everything is
    r = fastrope("grad", "--input", p["in"], "--dout", p["up"], "--dq", a, "--dk",
                 os.path.join(d, "dk.npy"), "--quiet")
    assert r.returncode == 0 and np.load(a).shape == (8, 4), r.stderr
    assert np.load(os.path.join(d, "dk.npy")).shape == (8, 4)


BIG = qkv(64, 4, B=3.0)


def refused_run(d, *extra):
    """polyfft at R ~ 27 (entries up to 3, scale 1): no degree can meet eps."""
    p = files(d, BIG)
    out = os.path.join(d, "out.npy")
    precious(out)
    r = fastrope("run", "--input", p["in"], "-o", out, "--method", "polyfft", "--scale", "1",
                 *extra)
    assert r.returncode == 4, (r.returncode, r.stderr)
    assert unchanged(out)
    return r


def read_safetensors(path):
    """The format parsed here by hand (8-byte length, JSON header, raw little-endian data), so
    the test does not take io's reader for the truth about io's writer."""
    with open(path, "rb") as f:
        b = f.read()
    n = int.from_bytes(b[:8], "little")
    head = json.loads(b[8:8 + n])
    body = b[8 + n:]
    dt = {"F64": "<f8", "F32": "<f4"}
    out = {}
    for name, m in head.items():
        if name == "__metadata__":
            continue
        lo, hi = m["data_offsets"]
        out[name] = np.frombuffer(body[lo:hi], dtype=dt[m["dtype"]]).reshape(m["shape"])
    assert max(m["data_offsets"][1] for k, m in head.items() if k != "__metadata__") == len(body)
    return head, out


@test
def safetensors_outputs_round_trip():
    d = tmpdir()
    b = qkv(9, 4, lead=(3,))
    p = files(d, b, up=rng.uniform(-1, 1, (3, 9, 4)))
    j = lambda name: os.path.join(d, name)
    r = fastrope("run", "--input", p["in"], "-o", j("o.safetensors"), "--quiet")
    assert r.returncode == 0, r.stderr
    r = fastrope("run", "--input", p["in"], "-o", j("o.npy"), "--quiet")
    head, t = read_safetensors(j("o.safetensors"))
    assert list(t) == ["arr_0"] and np.array_equal(t["arr_0"], np.load(j("o.npy")))
    ex = ref.attention(b["q"], b["k"], b["v"])
    assert np.abs(t["arr_0"] - ex).max() < 1e-12
    # single precision asked for: F32 members
    r = fastrope("run", "--input", p["in"], "-o", j("o4.safetensors"), "--dtype", "f4", "--quiet")
    head, t = read_safetensors(j("o4.safetensors"))
    assert r.returncode == 0 and head["arr_0"]["dtype"] == "F32", (r.stderr, head)
    assert np.abs(t["arr_0"] - ex).max() < 1e-6
    # grad: a bundle and a single gradient, both safetensors
    r = fastrope("grad", "--input", p["in"], "--dout", p["up"], "-o", j("g.safetensors"), "--dq",
                 j("dq.safetensors"), "--quiet")
    assert r.returncode == 0, r.stderr
    r = fastrope("grad", "--input", p["in"], "--dout", p["up"], "-o", j("g.npz"), "--quiet")
    _, g = read_safetensors(j("g.safetensors"))
    z = np.load(j("g.npz"))
    assert sorted(g) == sorted(z.files) and {"dq", "dk", "dv"} <= set(g), (list(g), z.files)
    for name in z.files:
        assert g[name].shape == z[name].shape and np.array_equal(g[name], z[name]), name
    assert np.array_equal(read_safetensors(j("dq.safetensors"))[1]["arr_0"], z["dq"])
    # gen: the same bundle whatever its format, and run reads it back
    for ext in ("npz", "safetensors"):
        r = fastrope("gen", "--n", "7", "--d", "4", "--seed", "3", "-o", j("gen." + ext))
        assert r.returncode == 0, r.stderr
    _, s = read_safetensors(j("gen.safetensors"))
    z = np.load(j("gen.npz"))
    assert sorted(s) == sorted(z.files) and all(np.array_equal(s[m], z[m]) for m in z.files)
    r = fastrope("run", "--input", j("gen.safetensors"), "-o", j("gen_o.npy"), "--quiet")
    assert r.returncode == 0 and np.load(j("gen_o.npy")).shape == (7, 4), r.stderr


@test
def a_refused_run_still_writes_its_report():
    d = tmpdir()
    rep = os.path.join(d, "r.json")
    r = refused_run(d, "--report", rep)
    msg = r.stderr.decode()
    assert msg.count("\n") == 1 and "--method exact" in msg, msg
    with open(rep) as f:
        j = json.load(f)
    assert j["error"] is None and j["method"] == "polyfft", j
    x = j["refused"]
    assert set(x) == {"reason", "R", "needed_degree", "max_degree"}, x
    assert x["max_degree"] == 24 and x["R"] == j["bounds"]["R"] > 20, x
    assert "degree" in x["reason"], x
    # the same through a pipe, and to stdout
    r = refused_run(d, "--report", "-")
    assert json.loads(r.stdout)["refused"]["R"] == x["R"]
    rfd, wfd = os.pipe()
    import subprocess
    from frtest import FASTROPE
    p = files(d, BIG)
    proc = subprocess.run([FASTROPE, "run", "--input", p["in"], "-o", os.path.join(d, "o.npy"),
                           "--method", "polyrope", "--scale", "1", "--report-fd", str(wfd)],
                          pass_fds=(wfd,), capture_output=True)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        assert proc.returncode == 4 and json.load(f)["refused"]["max_degree"] == 24


@test
def a_refusal_whose_report_cannot_be_written_says_so():
    """The refusal's report goes to a device that fails every write: its commit fails after the
    refusal, which must neither free the staged outputs twice nor hide the failure."""
    d = tmpdir()
    p = files(d, BIG)
    out = os.path.join(d, "out.npy")
    precious(out)
    r = fastrope("run", "--input", p["in"], "-o", out, "--method", "polyfft", "--scale", "1",
                 "--report", "/dev/full")
    msg = r.stderr.decode()
    assert r.returncode == 1, (r.returncode, msg)
    assert "refused" in msg and "/dev/full" in msg and msg.count("\n") == 2, msg
    assert unchanged(out) and sorted(os.listdir(d)) == ["in.npz", "out.npy"], os.listdir(d)


@test
def a_refused_grad_writes_its_report_and_no_gradient():
    d = tmpdir()
    p = files(d, qkv(64, 4, B=3.0), up=rng.uniform(-1, 1, (64, 4)))
    g, rep = os.path.join(d, "g.npz"), os.path.join(d, "r.json")
    r = fastrope("grad", "--input", p["in"], "--dout", p["up"], "-o", g, "--report", rep,
                 "--method", "polyfft", "--scale", "1")
    assert r.returncode == 4 and not os.path.exists(g), r.stderr
    with open(rep) as f:
        j = json.load(f)
    assert j["refused"]["R"] > 20 and j["error"] is None, j


@test
def scores_that_overflow_are_bad_input_for_every_method():
    d = tmpdir()
    p = files(d, qkv(16, 4))
    for m in ("exact", "polyfft", "polyrope", "auto"):
        out = os.path.join(d, "o.npy")
        r = fastrope("run", "--input", p["in"], "-o", out, "--method", m, "--scale", "1e308")
        assert r.returncode == 3 and not os.path.exists(out), (m, r.returncode, r.stderr)
        assert b"overflow" in r.stderr, (m, r.stderr)
    big = files(d, {m: a * 1e160 for m, a in qkv(16, 4).items()})
    r = fastrope("run", "--input", big["in"], "-o", os.path.join(d, "o.npy"), "--method", "exact")
    assert r.returncode == 3 and b"overflow" in r.stderr, (r.returncode, r.stderr)


@test
def the_report_lists_every_entry_and_the_worst():
    d = tmpdir()
    b = qkv(40, 4, lead=(2, 3), B=0.5)
    for m in "qkv":
        b[m][1, 2] *= 3  # entry 5 has the largest entries, hence the largest R
    p = files(d, b)
    out, rep = os.path.join(d, "o.npy"), os.path.join(d, "r.json")
    r = fastrope("run", "--input", p["in"], "-o", out, "--report", rep, "--method", "polyrope",
                 "--eps", "1e-6", "--quiet")
    assert r.returncode == 0, r.stderr
    with open(rep) as f:
        j = json.load(f)
    e = j["entries"]
    assert [x["index"] for x in e] == list(range(6)) and j["worst_entry"] == 5, j
    assert max(e, key=lambda x: x["R"])["index"] == 5 and e[5]["R"] == j["bounds"]["R"]
    got = np.load(out).reshape(6, 40, 4)
    want = ref.attention(b["q"], b["k"], b["v"]).reshape(6, 40, 4)
    for i, x in enumerate(e):
        assert set(x) >= {"index", "B", "R", "degree", "method", "max_abs", "a_priori_bound",
                      "rows_recomputed"}, x
        assert x["method"] == "polyrope" and x["degree"] >= 1, x
        assert x["B"] == np.max(np.abs([b[m].reshape(6, 40, 4)[i] for m in "qkv"])), x
        assert abs(x["max_abs"] - np.max(np.abs(got[i] - want[i]))) <= 1e-15, (i, x)
    assert e[5]["degree"] == max(x["degree"] for x in e) > e[0]["degree"], e
    assert max(x["max_abs"] for x in e) == j["error"]["max_abs"], j["error"]


run_all()
