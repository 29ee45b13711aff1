"""Tests of fastrope.attention and fastrope.attention_grad, the in-process calls through ctypes:
the ctypes mirrors against the C header (sizes and offsets, from a C program compiled here), the
results against the command on files to the bit (same method and degree), batches and
grouped-query attention, no copies of C-contiguous float64 inputs, errors and statuses against
the command's exit codes, and canceling through the progress hook.

Under the sanitizer build the library needs the ASan runtime loaded first: the test runs itself
again with it preloaded (and leak detection off: Python's own allocations live to the end)."""
import os
import subprocess
import sys

if os.environ.get("FASTROPE_SAN") == "1" and "libasan" not in os.environ.get("LD_PRELOAD", ""):
    asan = subprocess.run([os.environ.get("CC", "cc"), "-print-file-name=libasan.so"],
                          capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(asan):
        print(f"# skipped: the ASan runtime was not found ({asan!r}), so the sanitizer build's "
              "library cannot be loaded into this python")
        sys.exit(0)
    env = dict(os.environ, LD_PRELOAD=asan, ASAN_OPTIONS="detect_leaks=0")
    sys.exit(subprocess.run([sys.executable] + sys.argv, env=env).returncode)

import ctypes  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

import fastrope  # noqa: E402
import fastrope_capi as capi  # noqa: E402
import reference  # noqa: E402
from frtest import HERE, fastrope as cli, run_all, test, tmpdir  # noqa: E402

rng = np.random.default_rng(19)


def qkv(n, d, dv=None, lead=(), B=1.0, kv_lead=None):
    dv = d if dv is None else dv
    kl = lead if kv_lead is None else kv_lead
    return (rng.uniform(-B, B, lead + (n, d)), rng.uniform(-B, B, kl + (n, d)),
            rng.uniform(-B, B, kl + (n, dv)))


def cli_files(cmd, q, k, v, *flags, extra=None, expect=0):
    """The command on files: (output or bundle, report), or (None, stderr) for a failure."""
    d = tmpdir()
    paths = {}
    for name, a in dict(q=q, k=k, v=v, **(extra or {})).items():
        paths[name] = os.path.join(d, name + ".npy")
        np.save(paths[name], a)
    out = os.path.join(d, "out.npz" if cmd == "grad" else "out.npy")
    args = [cmd, "-q", paths["q"], "-k", paths["k"], "-v", paths["v"], "-o", out,
            "--report", os.path.join(d, "rep.json"), "--quiet"]
    for name in (extra or {}):
        args += ["--" + name if name != "w" else "-w", paths[name]]
    r = cli(*args, *flags)
    assert r.returncode == expect, (flags, r.returncode, r.stderr.decode())
    if expect:
        return None, r.stderr.decode()
    with open(os.path.join(d, "rep.json")) as f:
        rep = json.load(f)
    if cmd == "grad":
        with np.load(out) as z:
            return {m: z[m] for m in z.files}, rep
    return np.load(out), rep


def same_plan(info, rep):
    """The in-process plan is the command's: method, degree, R."""
    assert info["method"] == rep["method"], (info["method"], rep["method"])
    if rep["poly"] is not None:
        assert info["degree"] == rep["poly"]["degree"], (info["degree"], rep["poly"])
    assert info["bounds"]["R"] == rep["bounds"]["R"], (info["bounds"]["R"], rep["bounds"]["R"])


# ---- the ctypes mirrors are the header's structs -----------------------------------------------

def c_layout():
    """{struct: (sizeof, {field: (offset, size)})} from a C program compiled against the
    header, for every field the mirrors name."""
    lines = ["#include <stddef.h>", "#include <stdio.h>", '#include "fastrope_planner.h"',
             "int main(void) {"]
    for cname, mirror in capi.MIRRORS.items():
        lines.append(f'printf("{cname} %zu\\n", sizeof({cname}));')
        for fname, _ in mirror._fields_:
            lines.append(f'printf("{cname}.{fname} %zu %zu\\n", offsetof({cname}, {fname}), '
                         f"sizeof((({cname} *)0)->{fname}));")
    lines += ["return 0;", "}"]
    d = tmpdir()
    src, exe = os.path.join(d, "layout.c"), os.path.join(d, "layout")
    with open(src, "w") as f:
        f.write("\n".join(lines) + "\n")
    cc = os.environ.get("CC", "cc")
    r = subprocess.run([cc, "-std=c11", "-I" + os.path.join(HERE, "..", "core"), src, "-o", exe],
                       capture_output=True, text=True)
    assert r.returncode == 0, "the mirrors name fields the header lacks:\n" + r.stderr
    out = {}
    for line in subprocess.run([exe], capture_output=True, text=True, check=True).stdout.split(
            "\n"):
        if not line:
            continue
        name, *nums = line.split()
        if "." in name:
            s, fname = name.split(".")
            out[s][1][fname] = tuple(int(x) for x in nums)
        else:
            out[name] = (int(nums[0]), {})
    return out


@test
def ctypes_mirrors_match_the_header():
    layout = c_layout()
    for cname, mirror in capi.MIRRORS.items():
        size, fields = layout[cname]
        for fname, _ in mirror._fields_:
            f = getattr(mirror, fname)
            assert (f.offset, f.size) == fields[fname], \
                (f"{cname}.{fname}: the mirror has offset {f.offset} size {f.size}, C has "
                 f"offset {fields[fname][0]} size {fields[fname][1]}: update fastrope_capi.py")
        assert ctypes.sizeof(mirror) == size, \
            (f"{cname}: the mirror has {ctypes.sizeof(mirror)} bytes, C {size}: a field was added "
             "to the header; mirror it in fastrope_capi.py")
    # The enumerations the mirrors rely on, by the library's own names.
    lib = capi.library()
    assert [lib.fr_method_name(m).decode() for m in range(capi.NMETHODS)] == \
        ["auto", "exact", "polyfft", "polyfft-literal", "polyrope"]


@test
def library_is_found_beside_the_binary_and_by_the_environment():
    old = dict(os.environ)
    try:
        os.environ.pop("FASTROPE_LIB", None)
        os.environ["FASTROPE"] = os.path.join(tmpdir(), "fastrope")
        here = os.path.dirname(os.environ["FASTROPE"])
        open(os.path.join(here, "libfastrope.so"), "w").close()
        assert capi.find_library() == os.path.join(here, "libfastrope.so")
        os.environ["FASTROPE_LIB"] = "/some/where/libx.so"
        assert capi.find_library() == "/some/where/libx.so"
        os.environ.pop("FASTROPE_LIB")
        os.environ.pop("FASTROPE")
        assert capi.candidates()[0].endswith(os.path.join("build", "libfastrope.so"))
    finally:
        os.environ.clear()
        os.environ.update(old)


# ---- the command's answer, to the bit -----------------------------------------------------------

OPTION_CASES = [
    ({}, []),
    ({"causal": True}, ["--causal"]),
    ({"causal": True, "window": 4}, ["--causal", "--window", "4"]),
    ({"rope_pairs": "half", "rope_base": 500, "rope_scale": 2.5},
     ["--rope-pairs", "half", "--rope-base", "500", "--rope-scale", "2.5"]),
    ({"rotary_dim": 4}, ["--rotary-dim", "4"]),
    ({"rope_clip": 5}, ["--rope-clip", "5"]),
    ({"no_rope": True}, ["--no-rope"]),
    ({"scale": "sdpa"}, ["--scale", "sdpa"]),
    ({"scale": 0.7}, ["--scale", "0.7"]),
    ({"preset": "llama"}, ["--preset", "llama"]),
    ({"preset": "gptj", "no_causal": True, "rope_base": 500},
     ["--preset", "gptj", "--no-causal", "--rope-base", "500"]),
    ({"preset": "neox", "scale": "paper"}, ["--preset", "neox", "--scale", "paper"]),
]


@test
def exact_options_give_the_commands_bits():
    q, k, v = qkv(23, 8, 5, lead=(2,))
    seen = set()
    for kw, flags in OPTION_CASES:
        out, info = fastrope.attention(q, k, v, method="exact", **kw)
        want, rep = cli_files("run", q, k, v, "--method", "exact", *flags)
        assert out.dtype == np.float64 and np.array_equal(out, want), kw
        same_plan(info, rep)
        seen.add(out.tobytes())
    assert len(seen) == len(OPTION_CASES), "some option changed nothing"


@test
def fast_methods_give_the_commands_bits_and_plan():
    q, k, v = qkv(300, 4, 3, lead=(3,), B=0.6)
    for kw, flags in (({"method": "polyrope", "eps": 1e-5}, ["--method", "polyrope", "--eps",
                                                             "1e-5"]),
                      ({"method": "polyfft", "causal": True}, ["--method", "polyfft",
                                                               "--causal"]),
                      ({"method": "polyrope", "degree": 3}, ["--method", "polyrope", "--degree",
                                                             "3"]),
                      ({"method": "auto", "eps": 1e-4}, ["--method", "auto", "--eps", "1e-4"])):
        out, info = fastrope.attention(q, k, v, **kw)
        want, rep = cli_files("run", q, k, v, *flags)
        assert np.array_equal(out, want), (kw, np.max(np.abs(out - want)))
        same_plan(info, rep)
        assert info["plans"] >= 1 and info["batch"] == 3


@test
def explicit_w_gives_the_commands_bits():
    n, d = 11, 4
    q, k, v = qkv(n, d, lead=(2,))
    for w in (rng.normal(size=(2 * n - 1, d, d)) * 0.4, rng.normal(size=(2, 2 * n - 1, d, d))):
        out, info = fastrope.attention(q, k, v, w=w, method="exact")
        want, _ = cli_files("run", q, k, v, "--method", "exact", extra={"w": w})
        assert np.array_equal(out, want)
        assert np.allclose(out[1], reference.attention(q[1], k[1], v[1],
                                                       rotation=w[1] if w.ndim == 4 else w),
                           rtol=0, atol=1e-12)
    path = os.path.join(tmpdir(), "w.npy")
    np.save(path, w)
    assert np.array_equal(fastrope.attention(q, k, v, w=path, method="exact")[0], out)


@test
def gradients_give_the_commands_bits():
    q, k, v = qkv(40, 4, 3, lead=(2,), B=0.5)
    dout = rng.normal(size=v.shape)
    for flags, kw in ((["--method", "exact", "--causal"], {"method": "exact", "causal": True}),
                      (["--method", "polyrope", "--eps", "1e-6"],
                       {"method": "polyrope", "eps": 1e-6}),
                      (["--method", "polyfft", "--window", "5"],
                       {"method": "polyfft", "window": 5})):
        g, info = fastrope.attention_grad(q, k, v, dout=dout, **kw)
        want, rep = cli_files("grad", q, k, v, *flags, extra={"dout": dout})
        assert sorted(g) == sorted(want), (sorted(g), sorted(want))
        for name in want:
            assert np.array_equal(g[name], want[name]), (kw, name)
        same_plan(info, rep)
        assert info["loss"] is None
    target = rng.normal(size=v.shape)
    g, info = fastrope.attention_grad(q, k, v, target=target, method="exact")
    want, rep = cli_files("grad", q, k, v, "--method", "exact", extra={"target": target})
    assert np.array_equal(g["dq"], want["dq"]) and info["loss"] == rep["loss"]


@test
def grad_w_is_the_commands():
    n, d = 7, 4
    q, k, v = qkv(n, d, lead=(3,))
    w = rng.normal(size=(2 * n - 1, d, d)) * 0.3
    dout = rng.normal(size=v.shape)
    g, _ = fastrope.attention_grad(q, k, v, dout=dout, w=w, grad_w=True, method="exact")
    want, _ = cli_files("grad", q, k, v, "--method", "exact", "--grad-w",
                        extra={"dout": dout, "w": w})
    assert g["dw"].shape == w.shape and np.array_equal(g["dw"], want["dw"])


@test
def checks_report_what_the_command_reports():
    q, k, v = qkv(200, 4, lead=(2,), B=0.5)
    out, info = fastrope.attention(q, k, v, method="polyrope", check_rows=50)
    _, rep = cli_files("run", q, k, v, "--method", "polyrope", "--check-rows", "50")
    for key in ("rows_checked", "max_abs", "max_rel", "eps", "within_eps"):
        assert info["error"][key] == rep["error"][key], (key, info["error"], rep["error"])
    assert fastrope.attention(q, k, v, method="polyrope")[1]["error"] is None  # no check: fast
    dout = rng.normal(size=v.shape)
    g, info = fastrope.attention_grad(q, k, v, dout=dout, method="polyrope", check_rows="all")
    _, rep = cli_files("grad", q, k, v, "--method", "polyrope", "--check-rows", "all",
                       extra={"dout": dout})
    for name in ("dq", "dk", "dv"):
        assert info["error"][name] == rep["error"][name], (name, info["error"], rep["error"])
    assert info["error"]["dw"] is None and rep["error"]["dw"] is None
    # a degree whose certificate misses eps is refused before anything runs, as run refuses it
    try:
        fastrope.attention(q, k, v, method="polyrope", degree=1, eps=1e-12, strict=True)
    except fastrope.FastropeError as e:
        assert e.returncode == 4 and "polynomial bound above eps" in e.message, e
    else:
        raise AssertionError("an uncertifiable degree was not refused")


@test
def float32_inputs_give_float32_outputs():
    q, k, v = (a.astype(np.float32) for a in qkv(30, 4, lead=(2,), B=0.5))
    ref = reference.attention(q, k, v)
    out, info = fastrope.attention(q, k, v, method="exact")
    assert out.dtype == np.float32 and info["method"] == "exact"
    assert np.allclose(out, ref, rtol=0, atol=2e-7 if fastrope._single_built("forward")
                       else 6e-8), np.max(np.abs(out - ref))
    # A method the single-precision plans lack runs in double, rounded once: the command's f4.
    out, info = fastrope.attention(q, k, v, method="polyrope")
    want, rep = cli_files("run", q, k, v, "--method", "polyrope", "--dtype", "f4")
    assert out.dtype == np.float32 and np.array_equal(out, want)
    same_plan(info, rep)
    out64, _ = fastrope.attention(q, k, v, method="exact", dtype="f8")
    assert out64.dtype == np.float64
    g, _ = fastrope.attention_grad(q, k, v, dout=np.ones_like(v), method="exact")
    assert all(x.dtype == np.float32 for x in g.values())
    g64, _ = fastrope.attention_grad(*(x.astype(np.float64) for x in (q, k, v)),
                                     dout=np.ones(v.shape), method="exact")
    assert np.allclose(g["dq"], g64["dq"], rtol=0, atol=1e-6)


# ---- batches and grouped-query attention -------------------------------------------------------

@test
def leading_axes_are_a_batch():
    q, k, v = qkv(13, 4, 3, lead=(2, 3))
    out, info = fastrope.attention(q, k, v, method="exact", causal=True)
    assert out.shape == (2, 3, 13, 3) and info["batch"] == 6 and len(info["exec"]) == 6
    assert np.allclose(out, reference.attention(q, k, v, causal=True), rtol=0, atol=1e-13)
    one, _ = fastrope.attention(q[1, 2], k[1, 2], v[1, 2], method="exact", causal=True)
    assert np.array_equal(out[1, 2], one)


@test
def grouped_query_attention_is_repeat_kv():
    # q: 4 heads, k and v: 2 (HF's repeat_kv: query heads 2h, 2h+1 read key/value head h)
    q, k, v = qkv(33, 4, 5, lead=(3, 4), kv_lead=(3, 2), B=0.7)
    rep = [np.repeat(x, 2, axis=1) for x in (k, v)]
    for method in ("exact", "polyrope", "polyfft"):
        out, info = fastrope.attention(q, k, v, method=method, causal=True)
        want, _ = fastrope.attention(q, *rep, method=method, causal=True)
        assert np.array_equal(out, want), method
        assert info["kv_batch"] == 6 and info["batch"] == 12
        dout = rng.normal(size=out.shape)
        g, _ = fastrope.attention_grad(q, k, v, dout=dout, method=method, causal=True)
        gr, _ = fastrope.attention_grad(q, *rep, dout=dout, method=method, causal=True)
        assert np.array_equal(g["dq"], gr["dq"]), method
        assert g["dk"].shape == k.shape and g["dv"].shape == v.shape
        for name in ("dk", "dv"):  # summed over each group
            summed = gr[name].reshape(3, 2, 2, 33, -1).sum(axis=2)
            assert np.allclose(g[name], summed, rtol=0, atol=1e-13), (method, name)
    # one key/value head for every query problem (multi-query attention)
    out, _ = fastrope.attention(q, k[0, 0], v[0, 0], method="exact")
    want = reference.attention(q, np.broadcast_to(k[0, 0], q.shape),
                               np.broadcast_to(v[0, 0], q.shape[:-1] + (5,)))
    assert np.allclose(out, want, rtol=0, atol=1e-13)


@test
def contiguous_float64_is_passed_without_a_copy():
    q, k, v = qkv(17, 4, lead=(2,))
    assert fastrope._contiguous(q, np.float64) is q
    t = q[:, ::2]  # not contiguous: a copy, with the same values
    c = fastrope._contiguous(t, np.float64)
    assert c is not t and c.flags.c_contiguous and np.array_equal(c, t)
    call = fastrope._Call("attention", q, k, v, None, {})
    assert call.q.ctypes.data == q.ctypes.data and call.v.ctypes.data == v.ctypes.data
    out = np.full((2, 17, 4), np.nan)
    got, _ = fastrope.attention(q, k, v, method="exact", out=out)
    assert got is out and np.array_equal(out, fastrope.attention(q, k, v, method="exact")[0])
    # strided inputs still give the right answer
    qs, ks, vs = (np.asfortranarray(x) for x in (q, k, v))
    assert np.array_equal(fastrope.attention(qs, ks, vs, method="exact")[0], out)


# ---- errors: the command's exit codes ----------------------------------------------------------

def status_of(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except fastrope.FastropeError as e:
        assert e.message.startswith("fastrope: "), e.message
        return e.returncode, e.message
    raise AssertionError(f"no FastropeError for {kw}")


@test
def failures_have_the_commands_exit_codes():
    q, k, v = qkv(10, 4)
    cases = [  # (arrays, keywords, flags)
        ((q, k[:9], v), {}, []),
        ((q, k, v[:, :0]), {}, []),
        ((q[:, :3], k[:, :3], v), {}, []),  # odd d under RoPE
        ((q, k, v), {"method": "magic"}, ["--method", "magic"]),
        ((q, k, v), {"eps": 0}, ["--eps", "0"]),
        ((q, k, v), {"window": -3}, ["--window", "-3"]),
        ((q, k, v), {"rope_pairs": "diagonal"}, ["--rope-pairs", "diagonal"]),
        ((q, k, v), {"rope": True, "no_rope": True}, ["--rope", "--no-rope"]),
        ((q, k, v), {"no_rope": True, "rope_base": 5}, ["--no-rope", "--rope-base", "5"]),
        ((q, k, v), {"causal": True, "no_causal": True}, ["--causal", "--no-causal"]),
        ((q, k, v), {"method": "exact", "degree": 3}, ["--method", "exact", "--degree", "3"]),
        ((q, k, v), {"rotary_dim": 3}, ["--rotary-dim", "3"]),
        ((q, k, v), {"rotary_dim": 8}, ["--rotary-dim", "8"]),
        ((q, k, v), {"preset": "bert"}, ["--preset", "bert"]),
        ((q, k, v), {"degree": 9, "max_degree": 4}, ["--degree", "9", "--max-degree", "4"]),
        ((q * 40, k * 40, v), {"method": "polyrope", "max_degree": 6},
         ["--method", "polyrope", "--max-degree", "6"]),
        ((q * 1e160, k * 1e160, v), {"method": "exact"}, ["--method", "exact"]),
    ]
    for arrays, kw, flags in cases:
        code, message = status_of(fastrope.attention, *arrays, **kw)
        r = cli_files("run", *arrays, *flags, expect=code)
        assert code in (2, 3, 4), (kw, code, message)
        del r
    v2 = v.copy()
    v2[3, 2] = np.nan
    code, message = status_of(fastrope.attention, q, k, v2)
    assert code == 3 and "NaN" in message and "[3, 2]" in message, message
    cli_files("run", q, k, v2, expect=3)
    code, message = status_of(fastrope.attention_grad, q, k, v, dout=v[:5])
    assert code == 3 and "[5, 4]" in message, message


@test
def unknown_keywords_raise_typeerror_before_anything_runs():
    q, k, v = qkv(4, 2)
    for fn, kw in ((fastrope.attention, {"windw": 3}), (fastrope.attention, {"causal": "yes"}),
                   (fastrope.attention, {"window": True}), (fastrope.attention, {"grad_w": True}),
                   (fastrope.attention, {"binary": "x"}), (fastrope.attention, {"max_bytes": 5}),
                   (fastrope.attention_grad, {"strict": True, "dout": v}),
                   (fastrope.attention_grad, {})):
        try:
            fn(q, k, v, **kw)
        except TypeError as e:
            assert not kw or any(name in str(e) for name in kw) or "dout" in str(e), e
        else:
            raise AssertionError(f"no TypeError for {kw}")


# ---- canceling: the progress hook --------------------------------------------------------------

@test
def progress_hook_cancels_and_ctrl_c_interrupts():
    q, k, v = qkv(256, 4, lead=(16,))
    calls = []

    def record(phase, fraction):
        calls.append((phase, fraction))
    fastrope.attention(q, k, v, method="exact", progress=record)
    assert calls and calls[-1] == ("forward pass", 1.0), calls
    assert [ph for ph, _ in calls if ph != "plan"] == ["forward pass"] * (len(calls) - sum(
        ph == "plan" for ph, _ in calls)), calls
    code, message = status_of(fastrope.attention, q, k, v, method="exact",
                              progress=lambda phase, f: True)
    assert code == 5 and "cancel" in message, message

    def ctrl_c(phase, fraction):
        os.kill(os.getpid(), signal.SIGINT)  # Python's handler runs inside the callback

    # Python's own handler, even when the tests run as a background job (SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for fn, kw in ((fastrope.attention, {}), (fastrope.attention_grad, {"dout": v})):
            try:
                fn(q, k, v, method="exact", progress=ctrl_c, **kw)
            except KeyboardInterrupt as e:
                assert isinstance(e, fastrope.FastropeError) and e.returncode == 130, e
            else:
                raise AssertionError("Ctrl-C did not interrupt")
    finally:
        signal.signal(signal.SIGINT, previous)

    def broken(phase, fraction):
        raise ValueError("from the callback")
    try:
        fastrope.attention(q, k, v, method="exact", progress=broken)
    except ValueError as e:
        assert "from the callback" in str(e)
    else:
        raise AssertionError("the callback's exception was lost")


INTERRUPTED_CHILD = r"""
import os, signal, sys, threading, time
import numpy as np
import fastrope
signal.signal(signal.SIGINT, signal.default_int_handler)  # even in a background job
n = int(sys.argv[1])
q, k, v = (np.random.default_rng(0).uniform(-1, 1, (n, 4)) for _ in range(3))
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
t0 = time.time()
try:
    fastrope.%s
except KeyboardInterrupt as e:
    print("interrupted", isinstance(e, fastrope.FastropeError), e.returncode,
          round(time.time() - t0, 2))
else:
    print("finished", round(time.time() - t0, 2))
"""


# ---- the cost constants of `fastrope calibrate` -------------------------------------------------

COST_KEYS = [("exact_0", None), ("exact_flop", None), ("exact_exp", None), ("rope_0", None),
             ("rope_row", None), ("rope", None), ("rope_causal", None), ("rope_window", None),
             ("fft_0", None), ("fft_kissfft", ("fft", 1)), ("fft_fftw", ("fft", 2)),
             ("fft_fftw-float", ("fft", 3)), ("acc_kissfft", ("acc", 1)),
             ("acc_fftw", ("acc", 2)), ("acc_fftw-float", ("acc", 3))]


def write_cost(path, exact=1.0, fast=1.0, cpu=None, threads=None):
    """A cost file as `fastrope calibrate` writes it: the built-in constants with exact's
    scaled by exact and the fast methods' by fast, for this CPU and thread count unless told."""
    c = capi.CostModel()
    capi.library().fr_cost_model_builtin(ctypes.byref(c))
    lines = ["fastrope-cost-model 1", "# written by fastrope_inproc_test.py",
             f"cpu {cpu or fastrope._cpu_model()}", f"threads {threads or fastrope._threads()}"]
    for key, at in COST_KEYS:
        x = getattr(c, key) if at is None else getattr(c, at[0])[at[1]]
        if key.startswith("exact"):
            x *= exact
        elif key not in ("rope_causal", "rope_window"):
            x *= fast
        lines.append(f"{key} {x:.6g}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


@test
def cost_files_plan_as_the_command_plans():
    """cost=FILE in-process plans as run --cost FILE: the same method, and info["cost"] says
    what the report's plan.cost says. Two files that disagree about exact's price make auto
    choose differently, so the constants are really the ones used."""
    d = tmpdir()
    q, k, v = qkv(512, 4, B=0.5)
    methods = set()
    for name, exact, fast in (("dear-exact", 1e4, 1.0), ("dear-fast", 1.0, 1e4)):
        path = os.path.join(d, name)
        write_cost(path, exact, fast)
        out, info = fastrope.attention(q, k, v, method="auto", cost=path)
        want, rep = cli_files("run", q, k, v, "--method", "auto", "--cost", path)
        assert info["cost"] == rep["plan"]["cost"] == "calibrated " + path, \
            (info["cost"], rep["plan"]["cost"])
        same_plan(info, rep)
        assert np.array_equal(out, want), name
        g, ginfo = fastrope.attention_grad(q, k, v, dout=v, method="auto", cost=path)
        assert ginfo["method"] == info["method"] and ginfo["cost"] == info["cost"]
        methods.add(info["method"])
    assert len(methods) == 2 and "exact" in methods, methods


@test
def the_cache_cost_file_is_used_when_it_is_this_machines():
    """cost=None: $XDG_CACHE_HOME/fastrope/cost-model when measured on this CPU with this many
    threads (as the command, which sees the same environment); one from elsewhere, or a broken
    one, is ignored with a warning; no file, the built-in constants. An explicit cost= file
    must be a cost file: bad input, as the command's exit code 3."""
    q, k, v = qkv(512, 4, B=0.5)
    old = os.environ.get("XDG_CACHE_HOME")
    try:
        os.environ["XDG_CACHE_HOME"] = tmpdir()
        cache = os.path.join(os.environ["XDG_CACHE_HOME"], "fastrope", "cost-model")
        _, info = fastrope.attention(q, k, v, method="auto")
        assert info["cost"] == "built-in", info["cost"]
        write_cost(cache, exact=1e4)
        _, info = fastrope.attention(q, k, v, method="auto")
        _, rep = cli_files("run", q, k, v, "--method", "auto")
        assert info["cost"] == rep["plan"]["cost"] == "calibrated " + cache, info["cost"]
        assert info["method"] == rep["method"] != "exact", (info["method"], rep["method"])
        for bad in ({"cpu": "Another CPU 9000"}, {"threads": fastrope._threads() + 7}):
            write_cost(cache, exact=1e4, **bad)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                _, info = fastrope.attention(q, k, v, method="auto")
            assert info["cost"] == "built-in", (bad, info["cost"])
            assert any("ignored" in str(w.message) for w in caught), [str(w.message)
                                                                      for w in caught]
            # named explicitly, a foreign file is used, with a warning
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                _, info = fastrope.attention(q, k, v, method="auto", cost=cache)
            assert info["cost"] == "calibrated " + cache and caught, (bad, info["cost"])
        with open(cache, "w") as f:
            f.write("fastrope-cost-model 1\nexact_0 1\n")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, info = fastrope.attention(q, k, v, method="auto")
        assert info["cost"] == "built-in" and any("incomplete" in str(w.message)
                                                  for w in caught)
        for text, why in (("fastrope-cost-model 1\nexact_0 1\n", "incomplete: no exact_flop"),
                          ("hello\n", "not a cost file"), (None, "No such file")):
            path = os.path.join(tmpdir(), "cost")
            if text is not None:
                with open(path, "w") as f:
                    f.write(text)
            code, message = status_of(fastrope.attention, q, k, v, cost=path)
            assert code == capi.EINPUT and why in message and path in message, (text, message)
            _, cerr = cli_files("run", q, k, v, "--cost", path, expect=capi.EINPUT)
            assert why in cerr, cerr
    finally:
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old


@test
def ctrl_c_cancels_a_long_call_in_process():
    """No progress hook of the caller's: Ctrl-C still reaches the library's callback (called a
    few times a second inside one problem), which cancels; the call raises Interrupted."""
    # exact on one thread: seconds on any machine (a core's exp rate), whatever its core count
    n = 1 << 15 if os.environ.get("FASTROPE_SAN") == "1" else 1 << 17
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for call in ('attention(q, k, v, method="exact")',
                 'attention_grad(q, k, v, dout=v, method="exact")'):
        r = subprocess.run([sys.executable, "-c", INTERRUPTED_CHILD % call, str(n)],
                           capture_output=True, text=True, timeout=120, env=env)
        words = r.stdout.split()
        assert words[:3] == ["interrupted", "True", "130"], (call, r.stdout, r.stderr)
        assert float(words[3]) < 0.5 + 1.0, words  # stopped within a second of the signal


run_all()
