"""CLI tests of `fastrope run` (exact method) against the numpy reference, plus the command
frame: usage errors, exit codes, output safety."""
import io
import json
import os

import numpy as np

from frtest import fastrope, run_all, test, tmpdir
import reference as ref

rng = np.random.default_rng(7)


def bundle(n, d, dv=None, B=1.0, lead=()):
    dv = d if dv is None else dv
    return {
        "q": rng.uniform(-B, B, lead + (n, d)),
        "k": rng.uniform(-B, B, lead + (n, d)),
        "v": rng.uniform(-B, B, lead + (n, dv)),
    }


def run(b, *flags, w=None, expect=0):
    """Save b, run `fastrope run` with flags, return (output array, report dict)."""
    d = tmpdir()
    inp = os.path.join(d, "in.npz")
    np.savez(inp, **b)
    args = ["run", "--input", inp, "-o", os.path.join(d, "out.npy"),
            "--report", os.path.join(d, "rep.json"), "--quiet"]
    if w is not None:
        np.save(os.path.join(d, "w.npy"), w)
        args += ["-w", os.path.join(d, "w.npy")]
    r = fastrope(*args, *flags)
    assert r.returncode == expect, (r.returncode, r.stderr.decode())
    if expect:
        assert not os.path.exists(os.path.join(d, "out.npy")), "partial output left behind"
        return None, r.stderr.decode()
    with open(os.path.join(d, "rep.json")) as f:
        return np.load(os.path.join(d, "out.npy")), json.load(f)


def close(a, b, tol=1e-12):
    assert a.shape == b.shape, (a.shape, b.shape)
    err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)
    assert err <= tol, f"relative error {err:.3g} > {tol}"


# ---- exact against numpy ------------------------------------------------------------------

CASES = [
    # (name, n, d, dv, flags, reference kwargs)
    ("odd_n_rope", 37, 6, 6, ["--method", "exact"], {}),
    ("n1", 1, 4, 4, ["--method", "exact"], {}),
    ("dv_ne_d", 29, 4, 7, ["--method", "exact"], {}),
    ("half_pairs", 33, 8, 8, ["--method", "exact", "--rope-pairs", "half"], {"pairs": "half"}),
    ("rotary_dim", 31, 8, 5, ["--method", "exact", "--rotary-dim", "4"], {"rotary_dim": 4}),
    ("rope_scale_base", 40, 4, 4, ["--method", "exact", "--rope-scale", "2.5", "--rope-base", "500"],
     {"pos_scale": 2.5, "base": 500.0}),
    ("clip", 45, 4, 3, ["--method", "exact", "--rope-clip", "5"], {"rotation": "clip", "clip": 5}),
    ("no_rope", 30, 5, 2, ["--method", "exact", "--no-rope"], {"rotation": "none"}),
    ("causal", 35, 4, 4, ["--method", "exact", "--causal"], {"causal": True}),
    ("window", 35, 4, 4, ["--method", "exact", "--window", "3"], {"window": 3}),
    ("causal_window", 35, 4, 6, ["--method", "exact", "--causal", "--window", "4"],
     {"causal": True, "window": 4}),
    ("sdpa", 25, 8, 8, ["--method", "exact", "--scale", "sdpa"], {"scale": 1 / np.sqrt(8)}),
    ("numeric_scale", 25, 4, 4, ["--method", "exact", "--scale", "0.7"], {"scale": 0.7}),
]


def make_case(name, n, d, dv, flags, kw):
    def t():
        b = bundle(n, d, dv)
        out, rep = run(b, *flags)
        want = ref.attention(b["q"], b["k"], b["v"], **kw)
        close(out, want)
        assert rep["method"] == "exact" and rep["error"] is None
        assert (rep["n"], rep["d"], rep["dv"], rep["batch"]) == (n, d, dv, 1)
    t.__name__ = "exact_" + name
    test(t)


for c in CASES:
    make_case(*c)


@test
def exact_batch_matches_per_entry():
    b = bundle(21, 4, 3, lead=(2, 3))
    out, rep = run(b, "--method", "exact", "--causal")
    assert out.shape == (2, 3, 21, 3) and rep["batch"] == 6
    close(out, ref.attention(b["q"], b["k"], b["v"], causal=True))


@test
def exact_large_entries_do_not_overflow():
    b = bundle(50, 4, 4, B=30.0)
    out, _ = run(b, "--method", "exact")
    assert np.all(np.isfinite(out))
    close(out, ref.attention(b["q"], b["k"], b["v"]), 1e-10)


@test
def explicit_w_equal_to_rope_gives_the_rope_answer():
    n, d = 23, 4
    b = bundle(n, d)
    w = ref.rope_matrices(n, d)
    out_w, rep = run(b, "--method", "exact", w=w)
    out_r, _ = run(b, "--method", "exact", "--rope")
    close(out_w, out_r, 1e-12)
    assert rep["rotation"]["kind"] == "explicit"


@test
def explicit_w_per_batch_entry():
    n, d = 9, 4
    b = bundle(n, d, lead=(2,))
    w = rng.normal(size=(2, 2 * n - 1, d, d)) * 0.3
    out, _ = run(b, "--method", "exact", w=w)
    for i in range(2):
        close(out[i], ref.attention(b["q"][i], b["k"][i], b["v"][i], rotation=w[i]))


# ---- the command frame ----------------------------------------------------------------------

@test
def help_and_version():
    for args in (["--help"], ["run", "--help"], ["gen", "--help"], ["convert", "--help"]):
        r = fastrope(*args)
        assert r.returncode == 0 and b"usage" in r.stdout.lower(), args
    r = fastrope("--version")
    assert r.returncode == 0 and r.stdout.startswith(b"fastrope ")


@test
def usage_errors_exit_2():
    for args in (["nosuchcommand"], ["run", "--bogus"], ["run", "--window"],
                 ["run", "--rope", "--no-rope", "--input", "x", "-o", "y"],
                 ["run", "--input", "x"], ["run", "--method", "magic", "-o", "y"],
                 ["run", "--window", "-3", "-o", "y"], ["run", "--eps", "0", "-o", "y"],
                 ["gen", "--n", "4"], ["gen", "--n", "x", "--d", "2", "-o", "y.npz"]):
        r = fastrope(*args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert r.stderr.startswith(b"fastrope: ") and r.stderr.count(b"\n") == 1, r.stderr


@test
def shape_mismatch_names_both_shapes():
    b = bundle(10, 4)
    b["k"] = b["k"][:9]
    _, msg = run(b, "--method", "exact", expect=3)
    assert "[9, 4]" in msg and "[10, 4]" in msg, msg


@test
def odd_d_with_rope_is_bad_input():
    _, msg = run(bundle(10, 5), "--method", "exact", "--rope", expect=3)
    assert "odd" in msg, msg


@test
def w_of_wrong_length_is_bad_input():
    _, msg = run(bundle(10, 4), "--method", "exact", w=np.zeros((18, 4, 4)), expect=3)
    assert "[18, 4, 4]" in msg and "19" in msg, msg


@test
def nan_is_bad_input_with_its_index():
    b = bundle(10, 4)
    b["v"][3, 2] = np.nan
    _, msg = run(b, "--method", "exact", expect=3)
    assert "NaN" in msg and "[3, 2]" in msg and ":v" in msg, msg


@test
def missing_member_is_bad_input():
    b = bundle(10, 4)
    del b["v"]
    _, msg = run(b, "--method", "exact", expect=3)
    assert "no v" in msg, msg


@test
def stdout_output_and_stdin_input():
    b = bundle(12, 4)
    buf = io.BytesIO()
    np.savez(buf, **b)
    r = fastrope("run", "--input", "-", "-o", "-", "--method", "exact", "--quiet",
                 input=buf.getvalue())
    assert r.returncode == 0, r.stderr
    close(np.load(io.BytesIO(r.stdout)), ref.attention(b["q"], b["k"], b["v"]))


@test
def report_to_stdout_has_the_documented_keys():
    d = tmpdir()
    np.savez(os.path.join(d, "in.npz"), **bundle(12, 4))
    r = fastrope("run", "--input", os.path.join(d, "in.npz"), "-o", os.path.join(d, "o.json"),
                 "--report", "-", "--method", "exact")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    for k in ("method", "n", "d", "dv", "batch", "scale", "causal", "window", "rotation",
              "bounds", "error", "time_s"):
        assert k in rep, k
    for k in ("B_q", "B_k", "B_v", "B", "B_over_sqrt_ln_n", "R"):
        assert k in rep["bounds"], k
    for k in ("total", "compute", "check"):
        assert k in rep["time_s"], k
    assert abs(rep["scale"] - 0.25) < 1e-15
    with open(os.path.join(d, "o.json")) as f:
        out = np.array(json.load(f))
    assert out.shape == (12, 4)


@test
def report_numbers_read_back_exactly():
    tau = 0.1 + 0.2  # 0.30000000000000004: 15 digits would print 0.3
    b = bundle(9, 4, B=0.7)
    _, rep = run(b, "--method", "exact", "--scale", repr(tau))
    assert rep["scale"] == tau, rep["scale"]
    assert rep["bounds"]["B_q"] == np.max(np.abs(b["q"])), rep["bounds"]


@test
def refuses_to_overwrite_an_input():
    d = tmpdir()
    b = bundle(8, 4)
    for name in "qkv":
        np.save(os.path.join(d, name + ".npy"), b[name])
    before = open(os.path.join(d, "q.npy"), "rb").read()
    r = fastrope("run", "-q", os.path.join(d, "q.npy"), "-k", os.path.join(d, "k.npy"),
                 "-v", os.path.join(d, "v.npy"), "-o", os.path.join(d, "q.npy"))
    assert r.returncode == 2 and b"overwrite" in r.stderr, r.stderr
    assert open(os.path.join(d, "q.npy"), "rb").read() == before


@test
def failed_run_keeps_an_existing_output():
    d = tmpdir()
    out = os.path.join(d, "out.npy")
    with open(out, "wb") as f:
        f.write(b"precious")
    b = bundle(8, 4)
    b["q"][0, 0] = np.inf
    np.savez(os.path.join(d, "in.npz"), **b)
    r = fastrope("run", "--input", os.path.join(d, "in.npz"), "-o", out)
    assert r.returncode == 3 and b"Inf" in r.stderr
    assert open(out, "rb").read() == b"precious"


@test
def gen_is_reproducible_and_bounded():
    d = tmpdir()
    a, b2 = os.path.join(d, "a.npz"), os.path.join(d, "b.npz")
    for p in (a, b2):
        r = fastrope("gen", "--n", 50, "--d", 4, "--dv", 3, "--B", 0.5, "--seed", 3,
                     "--batch", "2,3", "-o", p)
        assert r.returncode == 0, r.stderr
    x, y = np.load(a), np.load(b2)
    assert x["q"].shape == (2, 3, 50, 4) and x["v"].shape == (2, 3, 50, 3)
    for m in "qkv":
        assert np.array_equal(x[m], y[m])
        assert np.max(np.abs(x[m])) <= 0.5 and np.max(np.abs(x[m])) > 0.4
    r = fastrope("gen", "--n", 50, "--d", 4, "--seed", 4, "-o", b2)
    assert not np.array_equal(np.load(b2)["q"], x["q"][0, 0])


run_all()
