"""Tests of scripts/fastrope.py, the Python helper: results equal to the command run on files
with the same flags, shapes and batches through the pipes, the report through its own fd,
errors with the command's code and message, and the README's shell pipeline run literally.
The grad and check tests are skipped (with a "# skipped" line) while the command lacks them."""
import json
import os
import re
import subprocess

import numpy as np

import fastrope
from frtest import FASTROPE, SAN as FASTROPE_SAN, fastrope as cli, run_all, test, tmpdir

rng = np.random.default_rng(11)
HERE = os.path.dirname(os.path.abspath(__file__))


def qkv(n, d, dv=None, lead=(), B=1.0):
    dv = d if dv is None else dv
    return (rng.uniform(-B, B, lead + (n, d)), rng.uniform(-B, B, lead + (n, d)),
            rng.uniform(-B, B, lead + (n, dv)))


def cli_files(cmd, q, k, v, *flags, extra=None):
    """The command on files: (output bundle or tensor, report) as the CLI gives them."""
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
    assert r.returncode == 0, r.stderr.decode()
    with open(os.path.join(d, "rep.json")) as f:
        rep = json.load(f)
    if cmd == "grad":
        with np.load(out) as z:
            return {m: z[m] for m in z.files}, rep
    return np.load(out), rep


def without_times(rep):
    return {k: v for k, v in rep.items() if k != "time_s"}


def implemented(cmd):
    r = cli(cmd, "--help")
    return not (r.returncode == 2 and (b"unknown command" in r.stderr or
                                       b"not implemented" in r.stderr))


def needs(cmd):
    """@test when the command has cmd, else a "# skipped" line instead of ok/FAIL."""
    have = implemented(cmd)

    def deco(fn):
        if have:
            return test(fn)
        print(f"# skipped: {cmd} not implemented ({fn.__name__})")
        return fn
    return deco


# ---- run: the same answer as the command on files ----------------------------------------------

OPTION_CASES = [
    # (keywords, the equivalent flags)
    ({}, []),
    ({"causal": True}, ["--causal"]),
    ({"window": 3}, ["--window", "3"]),
    ({"causal": True, "window": 4}, ["--causal", "--window", "4"]),
    ({"rope_pairs": "half"}, ["--rope-pairs", "half"]),
    ({"rope_base": 500, "rope_scale": 2.5}, ["--rope-base", "500", "--rope-scale", "2.5"]),
    ({"rotary_dim": 4}, ["--rotary-dim", "4"]),
    ({"rope_clip": 5}, ["--rope-clip", "5"]),
    ({"no_rope": True}, ["--no-rope"]),
    ({"scale": "sdpa"}, ["--scale", "sdpa"]),
    ({"scale": 0.7}, ["--scale", "0.7"]),
    ({"causal": False, "window": None}, []),
]


@test
def run_options_give_the_commands_answer():
    q, k, v = qkv(23, 8, 5)
    default = None
    for kw, flags in OPTION_CASES:
        out, rep = fastrope.run(q, k, v, method="exact", **kw)
        want, want_rep = cli_files("run", q, k, v, "--method", "exact", *flags)
        assert out.shape == (23, 5) and out.dtype == np.float64, (kw, out.shape, out.dtype)
        assert np.array_equal(out, want), (kw, np.max(np.abs(out - want)))
        assert without_times(rep) == without_times(want_rep), kw
        if default is None:
            default = out
        elif flags:  # the option really changed the computation
            assert not np.array_equal(out, default), kw


@test
def run_batched_keeps_the_leading_axes():
    q, k, v = qkv(13, 4, 3, lead=(2, 3))
    out, rep = fastrope.run(q, k, v, method="exact", causal=True)
    assert out.shape == (2, 3, 13, 3) and rep["batch"] == 6
    for i in range(2):
        for j in range(3):
            one, _ = fastrope.run(q[i, j], k[i, j], v[i, j], method="exact", causal=True)
            assert np.allclose(out[i, j], one, rtol=0, atol=1e-15)


@test
def run_n1_and_float32_inputs():
    q, k, v = qkv(1, 4)
    out, _ = fastrope.run(q, k, v, method="exact")
    assert np.allclose(out, v, rtol=0, atol=1e-15)  # one key: the output is its value
    q, k, v = (a.astype(np.float32) for a in qkv(9, 4))
    out, _ = fastrope.run(q, k, v, method="exact")
    want, _ = cli_files("run", q, k, v, "--method", "exact")
    assert out.dtype == np.float64 and np.array_equal(out, want)


@test
def run_dtype_f4_returns_float32():
    q, k, v = qkv(10, 4)
    out, _ = fastrope.run(q, k, v, method="exact", dtype="f4")
    ref, _ = fastrope.run(q, k, v, method="exact")
    assert out.dtype == np.float32
    assert np.array_equal(out, ref.astype(np.float32))


@test
def run_explicit_w_array_and_path():
    import reference
    n, d = 11, 4
    q, k, v = qkv(n, d, lead=(2,))
    w = rng.normal(size=(2 * n - 1, d, d)) * 0.4
    out, rep = fastrope.run(q, k, v, w=w, method="exact")
    want, _ = cli_files("run", q, k, v, "--method", "exact", extra={"w": w})
    assert np.array_equal(out, want) and rep["rotation"]["kind"] == "explicit"
    assert np.allclose(out[1], reference.attention(q[1], k[1], v[1], rotation=w), atol=1e-12)
    path = os.path.join(tmpdir(), "w.npy")
    np.save(path, w)
    out2, _ = fastrope.run(q, k, v, w=path, method="exact")
    assert np.array_equal(out, out2)


@test
def run_fast_method_matches_the_command_and_reports_its_error():
    q, k, v = qkv(300, 4, B=0.5)
    out, rep = fastrope.run(q, k, v, method="auto", eps=1e-4, check_rows="all")
    want, want_rep = cli_files("run", q, k, v, "--method", "auto", "--eps", "1e-4",
                               "--check-rows", "all")
    assert np.allclose(out, want, rtol=0, atol=1e-12)
    assert rep["method"] == want_rep["method"]
    if rep["error"] is not None:  # a fast method was chosen: its error was measured
        assert rep["error"]["rows_checked"] == 300 and rep["error"]["eps"] == 1e-4


@test
def large_tensors_do_not_deadlock():
    # Every pipe holds 64 KiB: 1.5 MB in and 0.5 MB out exercise the concurrent threads.
    q, k, v = qkv(256, 4, lead=(64,))
    out, rep = fastrope.run(q, k, v, method="exact", timeout=120)
    assert out.shape == (64, 256, 4) and rep["batch"] == 64
    one, _ = fastrope.run(q[37], k[37], v[37], method="exact")
    assert np.allclose(out[37], one, rtol=0, atol=1e-15)


# ---- the report through its own fd ----------------------------------------------------------

@test
def report_arrives_intact_on_its_fd():
    q, k, v = qkv(17, 4)
    _, rep = fastrope.run(q, k, v, method="exact", causal=True)
    _, want = cli_files("run", q, k, v, "--method", "exact", "--causal")
    assert without_times(rep) == without_times(want)
    assert set(rep["time_s"]) == set(want["time_s"])
    assert rep["n"] == 17 and rep["causal"] is True and rep["method"] == "exact"


@test
def quiet_false_forwards_the_summary_and_keeps_the_report():
    import contextlib
    import io
    q, k, v = qkv(9, 4)
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        out, rep = fastrope.run(q, k, v, method="exact", quiet=False)
    assert rep["n"] == 9 and out.shape == (9, 4)
    assert buf.getvalue().startswith("fastrope: exact"), buf.getvalue()
    with contextlib.redirect_stderr(buf):
        fastrope.run(q, k, v, method="exact")
    assert buf.getvalue().count("fastrope:") == 1, buf.getvalue()


# ---- errors ---------------------------------------------------------------------------------

@test
def bad_shapes_raise_with_code_3_and_the_message():
    q, k, v = qkv(10, 4)
    try:
        fastrope.run(q, k[:9], v, method="exact")
    except fastrope.FastropeError as e:
        assert e.returncode == 3, e
        assert "[9, 4]" in e.message and "[10, 4]" in e.message, e.message
        assert e.message.startswith("fastrope: ")
    else:
        raise AssertionError("no FastropeError")


@test
def nan_raises_with_code_3_and_its_index():
    q, k, v = qkv(10, 4)
    v[3, 2] = np.nan
    try:
        fastrope.run(q, k, v)
    except fastrope.FastropeError as e:
        assert e.returncode == 3 and "NaN" in e.message and "[3, 2]" in e.message, e
    else:
        raise AssertionError("no FastropeError")


@test
def bad_option_values_raise_with_code_2():
    q, k, v = qkv(10, 4)
    for kw, text in (({"method": "magic"}, "magic"), ({"window": -3}, "--window"),
                     ({"eps": 0}, "--eps"), ({"rope_pairs": "diagonal"}, "diagonal"),
                     ({"rope": True, "no_rope": True}, "at most one rotation")):
        try:
            fastrope.run(q, k, v, **kw)
        except fastrope.FastropeError as e:
            assert e.returncode == 2 and text in e.message, (kw, e)
        else:
            raise AssertionError(f"no FastropeError for {kw}")


@test
def unknown_keyword_raises_typeerror_before_starting():
    q, k, v = qkv(4, 2)
    # A binary that does not exist: a TypeError, not FileNotFoundError, proves nothing started.
    for kw in ({"windw": 3}, {"causal": "yes"}, {"window": True}, {"eps": [1e-3]},
               {"grad_w": True}):
        try:
            fastrope.run(q, k, v, binary="/nonexistent/fastrope", **kw)
        except TypeError as e:
            assert next(iter(kw)) in str(e), e
        else:
            raise AssertionError(f"no TypeError for {kw}")
    try:
        fastrope.run(q, k, v, binary="/nonexistent/fastrope")
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("the binary= keyword was not used")


@test
def binary_comes_from_the_environment_then_path():
    old = os.environ.get("FASTROPE")
    try:
        os.environ["FASTROPE"] = "/some/where/fastrope"
        assert fastrope.find_binary() == "/some/where/fastrope"
        assert fastrope.find_binary("/x/y") == "/x/y"
        del os.environ["FASTROPE"]
        found = fastrope.find_binary()
        assert found == (__import__("shutil").which("fastrope") or
                         os.path.join(HERE, "..", "build", "fastrope")), found
    finally:
        if old is not None:
            os.environ["FASTROPE"] = old


# ---- the README's shell pipeline, literally ----------------------------------------------------

def readme_pipeline():
    """The ```sh block after the marker comment, from README.md."""
    for path in (os.path.join(HERE, "..", "README.md"),):
        if not os.path.exists(path):
            continue
        text = open(path).read()
        m = re.search(r"<!-- pipeline-test -->\s*```sh\n(.*?)```", text, re.S)
        if m:
            return m.group(1)
    raise AssertionError("no <!-- pipeline-test --> block in README.md")


@test
def readme_shell_pipeline_runs_literally():
    import reference
    script = readme_pipeline()
    # `python3` and `fastrope` as a user has them: numpy's python first, the built binary.
    bindir = tmpdir()
    os.symlink("/usr/bin/python3", os.path.join(bindir, "python3"))
    os.symlink(os.path.abspath(FASTROPE), os.path.join(bindir, "fastrope"))
    cwd = tmpdir()
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    r = subprocess.run(["sh", "-c", "set -e\n" + script], cwd=cwd, env=env, capture_output=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    # The README's block prints the shape and writes out.npy: check both against numpy.
    assert b"(2, 64, 4)" in r.stdout, r.stdout
    r2 = np.random.default_rng(0)
    q, k, v = (r2.uniform(-1, 1, (2, 64, 4)) for _ in range(3))
    out = np.load(os.path.join(cwd, "out.npy"))
    assert np.allclose(out, reference.attention(q, k, v, causal=True), rtol=0, atol=1e-12)


@test
def example_attention_numpy_agrees():
    ex = os.path.join(HERE, "examples", "attention_numpy.py")
    for args in (["--n", "150", "--method", "exact", "--causal"],
                 ["--n", "300", "--method", "polyrope", "--eps", "1e-5", "--batch", "1"]):
        r = subprocess.run(["/usr/bin/python3", ex] + args, capture_output=True, timeout=120)
        assert r.returncode == 0, (args, r.stdout.decode(), r.stderr.decode())
        m = re.search(rb"max \|fastrope - numpy\| = (\S+)", r.stdout)
        assert m and float(m.group(1)) <= (1e-12 if "exact" in args else 1e-5), r.stdout


# ---- grad ---------------------------------------------------------------------------------------

@needs("grad")
def grad_matches_the_command_on_files():
    q, k, v = qkv(15, 4, 3, lead=(2,))
    dout = rng.normal(size=v.shape)
    g, rep = fastrope.grad(q, k, v, dout=dout, method="exact", causal=True)
    want, want_rep = cli_files("grad", q, k, v, "--method", "exact", "--causal",
                               extra={"dout": dout})
    assert sorted(g) == sorted(want), (sorted(g), sorted(want))
    for name in ("dq", "dk", "dv", "out"):
        assert g[name].shape == want[name].shape and np.array_equal(g[name], want[name]), name
    assert g["dq"].shape == q.shape and g["dv"].shape == v.shape
    out, _ = fastrope.run(q, k, v, method="exact", causal=True)
    assert np.allclose(g["out"], out, rtol=0, atol=1e-14)
    assert without_times(rep) == without_times(want_rep)


@needs("grad")
def grad_is_the_derivative_of_run():
    # Central differences of <dout, run(q)> along a random direction: independent of grad.
    q, k, v = qkv(7, 4, 3)
    dout = rng.normal(size=v.shape)
    g, _ = fastrope.grad(q, k, v, dout=dout, method="exact", window=2)
    for name, x in (("dq", q), ("dk", k), ("dv", v)):
        e = rng.normal(size=x.shape)
        h = 1e-5

        def f(s):
            args = {"q": q, "k": k, "v": v}
            args[name[1]] = x + s * e
            return np.sum(dout * fastrope.run(method="exact", window=2, **args)[0])
        fd = (f(h) - f(-h)) / (2 * h)
        assert abs(fd - np.sum(g[name] * e)) <= 1e-7 * max(1, abs(fd)), (name, fd)


@needs("grad")
def grad_target_is_half_squared_error():
    q, k, v = qkv(9, 4)
    target = rng.normal(size=v.shape)
    g, rep = fastrope.grad(q, k, v, target=target, method="exact")
    out, _ = fastrope.run(q, k, v, method="exact")
    g2, _ = fastrope.grad(q, k, v, dout=out - target, method="exact")
    for name in ("dq", "dk", "dv"):
        assert np.allclose(g[name], g2[name], rtol=0, atol=1e-14), name
    assert abs(rep["loss"] - 0.5 * np.sum((out - target) ** 2)) <= 1e-12 * rep["loss"]


@needs("grad")
def grad_w_through_a_pipe_is_the_derivative_in_w():
    n, d = 6, 4
    q, k, v = qkv(n, d)
    w = rng.normal(size=(2 * n - 1, d, d)) * 0.3
    dout = rng.normal(size=v.shape)
    g, _ = fastrope.grad(q, k, v, dout=dout, w=w, grad_w=True, method="exact")
    assert g["dw"].shape == w.shape
    e, h = rng.normal(size=w.shape), 1e-5
    f = [np.sum(dout * fastrope.run(q, k, v, w=w + s * e, method="exact")[0]) for s in (h, -h)]
    fd = (f[0] - f[1]) / (2 * h)
    assert abs(fd - np.sum(g["dw"] * e)) <= 1e-7 * max(1, abs(fd)), fd


@needs("grad")
def grad_errors_and_keywords():
    q, k, v = qkv(6, 4)
    for kw in ({}, {"dout": v, "target": v}):
        try:
            fastrope.grad(q, k, v, binary="/nonexistent", **kw)
        except TypeError:
            pass
        else:
            raise AssertionError(f"no TypeError for {sorted(kw)}")
    try:
        fastrope.grad(q, k, v, dout=v[:5])
    except fastrope.FastropeError as e:
        assert e.returncode == 3 and "[5, 4]" in e.message, e
    else:
        raise AssertionError("no FastropeError for a dout of the wrong shape")


# ---- check --------------------------------------------------------------------------------------

@needs("check")
def check_reads_jsonl_rows():
    d = tmpdir()
    for i, bad in enumerate((False, True)):
        q, k, v = qkv(12, 4)
        out, _ = fastrope.run(q, k, v, method="exact")
        if bad:
            out = out + 0.1
        np.savez(os.path.join(d, f"dump{i}.npz"), q=q, k=k, v=v, out=out)
    rows = fastrope.check(d)
    assert isinstance(rows, list) and len(rows) == 2, rows
    assert all(isinstance(r, dict) for r in rows)
    text = [json.dumps(r) for r in rows]
    assert any("dump0.npz" in t for t in text) and any("dump1.npz" in t for t in text), text


def dump_tree():
    """top/a.npz and top/sub/b.npz, each a q/k/v set with two heads."""
    top = tmpdir()
    os.mkdir(os.path.join(top, "sub"))
    for path in ("a.npz", os.path.join("sub", "b.npz")):
        q, k, v = qkv(16, 4, lead=(2,))
        np.savez(os.path.join(top, path), q=q, k=k, v=v)
    return top


@needs("check")
def check_takes_checks_own_options():
    top = dump_tree()
    assert len(fastrope.check(top)) == 1  # subdirectories only when recursive
    rows = fastrope.check(top, recursive=True)
    assert len(rows) == 2, rows
    assert len(fastrope.check(top, recursive=True, per_head=True)) == 4
    # the shards partition the sets
    one = fastrope.check(top, recursive=True, shard=(1, 2))
    two = fastrope.check(top, recursive=True, shard="2/2")
    assert len(one) == len(two) == 1
    assert sorted(json.dumps(r, sort_keys=True) for r in one + two) == \
        sorted(json.dumps(r, sort_keys=True) for r in rows)
    csv = fastrope.check(top, recursive=True, format="csv")
    assert isinstance(csv, str) and len(csv.strip().splitlines()) == 3, csv  # header + 2
    d = tmpdir()
    q, k, v = qkv(16, 4)
    np.savez(os.path.join(d, "x.npz"), **{"layers.0.wq": q, "layers.0.wk": k, "layers.0.wv": v})
    rows = fastrope.check(d, names={"q": "wq", "k": "wk", "v": "wv"})
    assert len(rows) == 1 and rows[0].get("verdict") != "entries-only", rows
    for kw in ({"check_row": 5}, {"strict": True}, {"dtype": "f4"}, {"grad_w": True},
               {"recursive": 1}):
        try:
            fastrope.check(top, binary="/nonexistent", **kw)
        except TypeError as e:
            assert next(iter(kw)) in str(e), e
        else:
            raise AssertionError(f"no TypeError for {kw}")


# ---- the keywords are the command's flags ------------------------------------------------------

# Flags the helper sets itself (inputs, outputs, the report's pipe), or takes as arguments.
HELPER_FLAGS = {"input", "q", "k", "v", "o", "output", "report", "report-fd", "quiet", "help",
                "h", "w", "dout", "target", "dq", "dk", "dv", "dw", "out"}


def help_flags(cmd):
    """The flags `fastrope CMD --help` lists: the first column of each option line."""
    r = cli(cmd, "--help")
    assert r.returncode == 0, r.stderr
    flags = set()
    for line in r.stdout.decode().splitlines():
        spec = line.strip().split("  ")[0]
        if not spec.startswith("-"):
            continue
        longs = re.findall(r"--([a-z][a-z0-9-]*)", spec)
        flags |= set(longs) if longs else set(re.findall(r"^-(\w)\b", spec))
    return flags


@test
def keywords_are_exactly_the_commands_flags():
    for cmd in ("run", "grad", "check"):
        if not implemented(cmd):
            continue
        have = help_flags(cmd) - HELPER_FLAGS
        if cmd != "check":  # the helper writes the input bundle itself, as q, k, v
            have -= {"set", "names"}
            # the precision follows the arrays' dtype (float32 in: single precision)
            have -= {"precision"}
        ours = {name.replace("_", "-") for name in fastrope._OPTIONS[cmd]}
        missing = have - ours
        assert not missing, (f"fastrope {cmd} takes {sorted(missing)}: add them to "
                             f"_OPTIONS['{cmd}'] in scripts/fastrope.py")
        extra = ours - have
        assert not extra, f"fastrope {cmd} does not take {sorted(extra)}"
    # in-process: the command's attention options, less the input files' limits (the cost
    # file is read as the command reads it)
    inputs = fastrope._LIMITS - {"cost"}
    assert fastrope._OPTIONS["attention"] - {"out", "progress"} == \
        fastrope._OPTIONS["run"] - inputs
    assert fastrope._OPTIONS["attention_grad"] - {"progress"} == \
        fastrope._OPTIONS["grad"] - inputs


# ---- Ctrl-C --------------------------------------------------------------------------------------

INTERRUPTED_CHILD = r"""
import os, signal, sys, threading, time
import numpy as np
import fastrope
signal.signal(signal.SIGINT, signal.default_int_handler)  # even in a background job
n = int(sys.argv[1])
q, k, v = (np.random.default_rng(0).uniform(-1, 1, (n, 4)) for _ in range(3))
def parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[1]
    except OSError:  # the process ended while the list was read
        return None
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
t0 = time.time()
try:
    fastrope.%s
except KeyboardInterrupt as e:
    children = [p for p in os.listdir("/proc") if p.isdigit() and parent(p) == str(os.getpid())]
    print("interrupted", isinstance(e, fastrope.FastropeError), e.returncode, children,
          round(time.time() - t0, 2))
else:
    print("finished", round(time.time() - t0, 2))
"""


@test
def ctrl_c_stops_the_command_and_raises_interrupted():
    # exact on one thread: seconds on any machine (a core's exp rate), whatever its core count
    n = 1 << 15 if FASTROPE_SAN else 1 << 17
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for call in ('run(q, k, v, method="exact")', 'grad(q, k, v, dout=v, method="exact")'):
        r = subprocess.run(["/usr/bin/python3", "-c", INTERRUPTED_CHILD % call, str(n)],
                           capture_output=True, text=True, timeout=120, env=env)
        words = r.stdout.split()
        assert words[:4] == ["interrupted", "True", "130", "[]"], (call, r.stdout, r.stderr)
        assert float(words[4]) < 0.5 + fastrope._GRACE_S + 1, words  # it did not run to the end


run_all()
