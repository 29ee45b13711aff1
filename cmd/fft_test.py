"""CLI tests of polyfft's FFT back ends: `--fft` on run, grad and bound, what the report says,
and FFTW's wisdom in the cache directory: written by a run, reused by the next, and a missing,
empty, corrupt, truncated or unwritable cache harmless."""
import json
import os
import subprocess

import numpy as np

from frtest import FASTROPE, run_all, test, tmpdir

rng = np.random.default_rng(18)
BACKENDS = {"kissfft": "single", "fftw": "double", "fftw-float": "single"}


def problem(n=300, d=4, dv=3):
    d_ = tmpdir()
    path = os.path.join(d_, "in.npz")
    np.savez(path, q=rng.uniform(-1, 1, (n, d)), k=rng.uniform(-1, 1, (n, d)),
             v=rng.uniform(-1, 1, (n, dv)))
    return path


def fastrope_env(args, cache, home=None):
    """Run fastrope with XDG_CACHE_HOME = cache (None: unset) and HOME = home (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "HOME")}
    if cache is not None:
        env["XDG_CACHE_HOME"] = cache
    if home is not None:
        env["HOME"] = home
    return subprocess.run([FASTROPE] + [str(a) for a in args], capture_output=True, env=env,
                          timeout=300)


def run(inp, cache, *flags, home=None, expect=0):
    d = tmpdir()
    out, rep = os.path.join(d, "out.npy"), os.path.join(d, "rep.json")
    r = fastrope_env(["run", "--input", inp, "-o", out, "--report", rep, "--quiet",
                      "--check-rows", "all"] + list(flags), cache, home)
    assert r.returncode == expect, (r.returncode, r.stderr.decode())
    if expect:
        return None, r.stderr.decode()
    with open(rep) as f:
        return np.load(out), json.load(f)


def wisdom_file(cache):
    return os.path.join(cache, "fastrope", "fftw-wisdom")


# The certified rounding bound of a single-precision FFT is normwise (log2 N stages of u = 6e-8
# each, times the convolution's length): at n = 300 it is a few 1e-2, so a float back end
# certifies eps = 0.1 here and must refuse 1e-3, which double FFTW certifies.
EPS = {"kissfft": "0.1", "fftw": "1e-3", "fftw-float": "0.1"}


@test
def every_backend_meets_eps_and_says_which():
    inp = problem()
    for fft, prec in BACKENDS.items():
        for mask in ([], ["--causal"], ["--window", "40"]):
            out, rep = run(inp, tmpdir(), "--method", "polyfft", "--rope-clip", "16", "--fft", fft,
                           "--eps", EPS[fft], *mask)
            assert rep["poly"]["fft"] == fft and rep["poly"]["fft_precision"] == prec, rep["poly"]
            assert rep["error"]["within_eps"], (fft, mask, rep["error"])
            assert rep["error"]["max_rel"] <= rep["error"]["a_priori_bound"], rep["error"]


@test
def single_precision_refuses_an_eps_its_rounding_cannot_certify():
    for fft in ("kissfft", "fftw-float"):
        _, err = run(problem(), tmpdir(), "--method", "polyfft", "--rope-clip", "16", "--fft", fft,
                     "--eps", "1e-3", expect=4)
        assert "single-precision" in err and "rounding" in err, err


@test
def auto_is_resolved_in_the_report():
    _, rep = run(problem(), tmpdir(), "--method", "polyfft")
    assert rep["poly"]["fft"] in BACKENDS, rep["poly"]
    assert rep["poly"]["fft_precision"] == BACKENDS[rep["poly"]["fft"]], rep["poly"]


@test
def grad_and_bound_take_fft():
    inp = problem(n=120)
    d = tmpdir()
    np.save(os.path.join(d, "dout.npy"), rng.uniform(-1, 1, (120, 3)))
    r = fastrope_env(["grad", "--input", inp, "--method", "polyfft", "--fft", "fftw-float",
                      "--eps", "0.1", "--dout", os.path.join(d, "dout.npy"), "-o", os.path.join(d, "g.npz"),
                      "--report", os.path.join(d, "rep.json"), "--quiet"], tmpdir())
    assert r.returncode == 0, r.stderr.decode()
    with open(os.path.join(d, "rep.json")) as f:
        assert json.load(f)["poly"]["fft"] == "fftw-float"
    r = fastrope_env(["bound", "--n", "4096", "--d", "4", "--B", "1", "--fft", "kissfft",
                      "--format", "json"], tmpdir())
    assert r.returncode == 0, r.stderr.decode()


@test
def unknown_backend_is_a_usage_error():
    r = fastrope_env(["run", "--input", problem(n=8), "-o", os.path.join(tmpdir(), "o.npy"),
                      "--fft", "fftw-double"], tmpdir())
    assert r.returncode == 2, r.returncode
    err = r.stderr.decode()
    assert "--fft" in err and "kissfft" in err and "fftw-float" in err, err


@test
def wisdom_is_written_then_reused():
    inp, cache = problem(), tmpdir()
    out1, _ = run(inp, cache, "--method", "polyfft", "--fft", "fftw")
    with open(wisdom_file(cache)) as f:
        text = f.read()
    assert "fftw_wisdom" in text and "fftwf_wisdom" in text, text[:200]
    assert not [x for x in os.listdir(os.path.dirname(wisdom_file(cache))) if x != "fftw-wisdom"]
    # the second run plans from the wisdom: the same algorithm, the same bits
    out2, _ = run(inp, cache, "--method", "polyfft", "--fft", "fftw")
    assert np.array_equal(out1, out2)
    with open(wisdom_file(cache)) as f:
        assert f.read() == text, "a run that planned nothing new rewrote the wisdom"


@test
def bad_wisdom_is_harmless():
    inp = problem()
    ref, _ = run(inp, tmpdir(), "--method", "polyfft", "--fft", "fftw")
    good = tmpdir()
    run(inp, good, "--method", "polyfft", "--fft", "fftw")
    with open(wisdom_file(good)) as f:
        text = f.read()
    bad = {"empty": "", "garbage": "not wisdom at all\n", "binary": "\x00\x01\xfe(((",
           "truncated": text[: len(text) // 2], "trailing": text + "(oops",
           "other version": text.replace("fftw-3.", "fftw-9.")}
    for name, content in bad.items():
        cache = tmpdir()
        os.makedirs(os.path.join(cache, "fastrope"))
        with open(wisdom_file(cache), "w", encoding="latin-1") as f:
            f.write(content)
        out, rep = run(inp, cache, "--method", "polyfft", "--fft", "fftw")
        assert rep["error"]["within_eps"], name
        assert np.max(np.abs(out - ref)) < 1e-12, name
        with open(wisdom_file(cache), encoding="latin-1") as f:
            assert "fftw_wisdom" in f.read(), name + ": not replaced by good wisdom"


@test
def no_cache_is_harmless():
    inp = problem(n=60)
    # no cache directory at all
    run(inp, None, "--method", "polyfft", "--fft", "fftw", home=None)
    # a cache path that cannot be a directory (a file is in the way)
    d = tmpdir()
    blocker = os.path.join(d, "file")
    with open(blocker, "w") as f:
        f.write("x")
    run(inp, blocker, "--method", "polyfft", "--fft", "fftw")
    # the wisdom's name taken by a directory
    cache = tmpdir()
    os.makedirs(wisdom_file(cache))
    run(inp, cache, "--method", "polyfft", "--fft", "fftw")
    assert os.path.isdir(wisdom_file(cache))
    # a relative XDG_CACHE_HOME is ignored (the XDG rule): HOME's cache is used
    home = tmpdir()
    run(inp, "relative/cache", "--method", "polyfft", "--fft", "fftw", home=home)
    assert os.path.exists(os.path.join(home, ".cache", "fastrope", "fftw-wisdom"))


run_all()
