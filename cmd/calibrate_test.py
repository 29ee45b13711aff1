"""CLI tests of `fastrope calibrate` and the cost file: calibrate writes the cache's file and
auto then plans with it (the report says which constants it used); --cost FILE overrides the
cache; a broken, incomplete or foreign cache file is ignored with a warning naming it, and a
broken --cost file is refused."""
import json
import os
import re
import subprocess

import numpy as np

from frtest import FASTROPE, run_all, test, tmpdir

rng = np.random.default_rng(17)


def problem(n=1024, d=4):
    path = os.path.join(tmpdir(), "in.npz")
    np.savez(path, q=rng.uniform(-1, 1, (n, d)), k=rng.uniform(-1, 1, (n, d)),
             v=rng.uniform(-1, 1, (n, d)))
    return path


def fr(args, cache):
    """fastrope with XDG_CACHE_HOME = cache (HOME pointed away, so no other cache is read)."""
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "HOME")}
    env["XDG_CACHE_HOME"] = cache
    env["HOME"] = os.path.join(cache, "nohome")
    return subprocess.run([FASTROPE] + [str(a) for a in args], capture_output=True, env=env,
                          timeout=600)


def run(inp, cache, *flags, expect=0):
    d = tmpdir()
    rep = os.path.join(d, "rep.json")
    r = fr(["run", "--input", inp, "-o", os.path.join(d, "out.npy"), "--report", rep,
            "--quiet", "--check-rows", "16"] + list(flags), cache)
    assert r.returncode == expect, (r.returncode, r.stderr.decode())
    if expect:
        return None, r.stderr.decode()
    with open(rep) as f:
        return json.load(f), r.stderr.decode()


def read_cost(path):
    with open(path) as f:
        lines = [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]
    assert lines[0] == "fastrope-cost-model 1", lines[0]
    return dict(l.split(" ", 1) for l in lines[1:])


def write_cost(path, kv):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("fastrope-cost-model 1\n")
        for k, v in kv.items():
            f.write("%s %s\n" % (k, v))


_calibrated = {}


def calibrated():
    """One quick calibration into a fresh cache, shared by the tests: (cache, its file)."""
    if not _calibrated:
        cache = tmpdir()
        r = fr(["calibrate", "--quick"], cache)
        assert r.returncode == 0, r.stderr.decode()
        path = os.path.join(cache, "fastrope", "cost-model")
        assert ("wrote " + path) in r.stdout.decode(), r.stdout.decode()
        for method in ("exact", "polyrope", "polyfft (fftw)"):
            assert "  " + method in r.stdout.decode(), (method, r.stdout.decode())
        _calibrated["v"] = (cache, path)
    return _calibrated["v"]


@test
def calibrate_writes_a_file_auto_then_reads():
    cache, path = calibrated()
    kv = read_cost(path)
    assert int(kv["threads"]) >= 1 and kv["cpu"], kv
    for key in ("exact_0", "exact_flop", "exact_exp", "rope_0", "rope", "fft_0", "fft_fftw"):
        x = float(kv[key])
        assert np.isfinite(x) and x >= 0, (key, x)
    # exact's time is measured, not left at zero
    assert float(kv["exact_flop"]) + float(kv["exact_exp"]) > 0, kv
    rep, err = run(problem(), cache)
    assert rep["plan"]["cost"] == "calibrated " + path, rep["plan"]
    assert "warning" not in err, err
    # the report's predicted exact time is the file's model: 1024^2 pairs at d = dv = 4
    # (below the one-thread threshold: charged at one thread's rate, times the threads)
    pairs = 1024.0 ** 2
    want = float(kv["exact_0"]) + pairs * int(kv["threads"]) * (
        float(kv["exact_flop"]) * 8 + float(kv["exact_exp"]))
    got = rep["plan"]["predicted_s"]["exact"]
    assert abs(got - want) <= 1e-9 + 1e-6 * want, (got, want)


@test
def no_file_means_built_in():
    cache = tmpdir()
    rep, err = run(problem(), cache)
    assert rep["plan"]["cost"] == "built-in", rep["plan"]
    assert "warning" not in err, err


@test
def the_constants_steer_auto():
    """A file that makes exact dear picks a fast method, one that makes the fast methods dear
    picks exact: auto follows the file, not the built-in constants."""
    cache, path = calibrated()
    kv = read_cost(path)
    inp = problem()
    d = tmpdir()
    dear_exact, dear_fast = dict(kv), dict(kv)
    for k in ("exact_flop", "exact_exp"):
        dear_exact[k] = "1e-3"
    for k in ("rope", "rope_row", "fft_fftw", "fft_fftw-float", "fft_kissfft"):
        dear_fast[k] = "1e-3"
    for name, kvs, want in (("a", dear_exact, {"polyrope", "polyfft"}), ("b", dear_fast,
                                                                       {"exact"})):
        f = os.path.join(d, name)
        write_cost(f, kvs)
        rep, err = run(inp, cache, "--cost", f)
        assert rep["plan"]["chosen"] in want, (name, rep["plan"])
        assert rep["plan"]["cost"] == "calibrated " + f, rep["plan"]
        assert "warning" not in err, err


@test
def broken_or_foreign_cache_files_are_ignored_with_a_warning():
    _, good = calibrated()
    kv = read_cost(good)
    inp = problem(n=257)
    broken = {
        "garbage": lambda p: open(p, "w").write("not a cost file\n"),
        "empty": lambda p: open(p, "w").close(),
        "binary": lambda p: open(p, "wb").write(b"\0\1\2" * 100),
        "incomplete": lambda p: write_cost(p, {k: v for k, v in kv.items() if k != "exact_exp"}),
        "negative": lambda p: write_cost(p, dict(kv, exact_flop="-1e-9")),
        "nan": lambda p: write_cost(p, dict(kv, rope="nan")),
        "unknown_key": lambda p: write_cost(p, dict(kv, turbo="1")),
        "foreign_cpu": lambda p: write_cost(p, dict(kv, cpu="Some Other CPU 9000")),
        "foreign_threads": lambda p: write_cost(p, dict(kv, threads=str(int(kv["threads"]) + 7))),
        "directory": lambda p: os.makedirs(p),
    }
    for name, make in broken.items():
        cache = tmpdir()
        path = os.path.join(cache, "fastrope", "cost-model")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        make(path)
        rep, err = run(inp, cache)
        assert rep["plan"]["cost"] == "built-in", (name, rep["plan"])
        assert "warning" in err and path in err and "built-in" in err, (name, err)
        if name.startswith("foreign"):
            assert "Some Other CPU" in err or "threads" in err, (name, err)
        # bound and check read the same file the same way
        b = fr(["bound", "--n", 4096, "--d", 4, "--B", 1, "--format", "json"], cache)
        assert b.returncode == 0, (name, b.stderr.decode())
        assert path in b.stderr.decode(), (name, b.stderr.decode())
        assert json.loads(b.stdout)[0]["cost"] == "built-in", name


@test
def explicit_cost_file_overrides_the_cache():
    cache, path = calibrated()
    kv = read_cost(path)
    other = os.path.join(tmpdir(), "mine.cost")
    write_cost(other, dict(kv, cpu="Some Other CPU 9000"))
    rep, err = run(problem(), cache, "--cost", other)
    # a file the user names is used, even from another machine, with a warning
    assert rep["plan"]["cost"] == "calibrated " + other, rep["plan"]
    assert "warning" in err and "Some Other CPU" in err, err
    b = fr(["bound", "--n", 4096, "--d", 4, "--B", 1, "--format", "json", "--cost", other], cache)
    assert b.returncode == 0 and json.loads(b.stdout)[0]["cost"] == "calibrated " + other


@test
def broken_explicit_cost_file_is_refused():
    cache = tmpdir()
    inp = problem(n=64)
    bad = os.path.join(tmpdir(), "bad.cost")
    with open(bad, "w") as f:
        f.write("fastrope-cost-model 1\nexact_0 zero\n")
    for path in (bad, os.path.join(tmpdir(), "missing.cost")):
        out = os.path.join(tmpdir(), "out.npy")
        r = fr(["run", "--input", inp, "-o", out, "--cost", path], cache)
        assert r.returncode == 3, (r.returncode, r.stderr.decode())
        assert path in r.stderr.decode(), r.stderr.decode()
        assert not os.path.exists(out), "an output was written"


@test
def calibrate_output_path_errors():
    cache = tmpdir()
    blocker = os.path.join(tmpdir(), "file")
    open(blocker, "w").close()
    r = fr(["calibrate", "--quick", "-o", os.path.join(blocker, "sub", "cost")], cache)
    assert r.returncode != 0 and "cost" in r.stderr.decode(), r.stderr.decode()
    assert re.match(r"^fastrope: ", r.stderr.decode().splitlines()[-1]), r.stderr.decode()
    r = fr(["calibrate", "--bogus"], cache)
    assert r.returncode == 2, r.returncode


run_all()
