"""CLI tests of `fastrope bound`: it agrees with what `run` computes, and its sweeps parse."""
import json
import os

import numpy as np

from frtest import fastrope, run_all, test, tmpdir


def bound(*args):
    r = fastrope("bound", "--format", "json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def run_report(n, d, B, method, *flags):
    """A run on an input whose entries reach B (so data bounds equal bound's worst case)."""
    dd = tmpdir()
    rng = np.random.default_rng(1)
    q = np.full((n, d), B)  # every row at norm B sqrt(d): R = tau d B^2 exactly
    k = np.full((n, d), B)
    v = rng.uniform(-B, B, (n, d))
    v[0, 0] = B
    np.savez(os.path.join(dd, "in.npz"), q=q, k=k, v=v)
    r = fastrope("run", "--input", os.path.join(dd, "in.npz"), "-o", os.path.join(dd, "o.npy"),
                 "--report", os.path.join(dd, "r.json"), "--method", method, "--quiet",
                 "--check-rows", 0, *flags)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(dd, "r.json")) as f:
        return json.load(f)


@test
def bound_matches_run_polyfft_counts():
    for flags in ([], ["--rope-clip", "8"], ["--no-rope"], ["--causal"]):
        row = bound("--n", 40, "--d", 4, "--B", 1, "--eps", "1e-3", "--method", "polyfft",
                    *flags)[0]
        rep = run_report(40, 4, 1.0, "polyfft", *flags)
        assert abs(row["R"] - rep["bounds"]["R"]) <= 1e-9 * row["R"], (row["R"], rep["bounds"])
        for key in ("degree", "alphas", "q_monomials", "k_monomials", "kernels", "ffts",
                    "fft_size"):
            assert row[key] == rep["poly"][key], (flags, key, row[key], rep["poly"][key])
        assert abs(row["eta"] - rep["poly"]["eta"]) <= 1e-15


@test
def bound_matches_run_polyrope_features():
    row = bound("--n", 33, "--d", 6, "--B", 0.8, "--eps", "1e-4", "--method", "polyrope")[0]
    rep = run_report(33, 6, 0.8, "polyrope", "--eps", "1e-4")
    assert row["degree"] == rep["poly"]["degree"] and row["features"] == rep["poly"]["features"]


@test
def counts_at_large_n_are_those_of_small_n():
    # the counts never depend on n (kernel merging is found on a few hundred offsets)
    a = bound("--n", "300,1000000", "--d", 8, "--B", 1, "--method", "polyfft")
    assert a[0]["ffts"] == a[1]["ffts"] and a[0]["kernels"] == a[1]["kernels"] == 495 or \
        a[0]["degree"] != 4


@test
def sweep_has_one_row_per_combination():
    rows = bound("--n", "1024,4096", "--d", 4, "--B", "0.25:1:0.25", "--eps", "1e-2,1e-4")
    assert len(rows) == 2 * 4 * 2
    combos = {(r["n"], r["B"], r["eps"]) for r in rows}
    assert len(combos) == 16
    assert {r["B"] for r in rows} == {0.25, 0.5, 0.75, 1.0}
    for r in rows:
        assert abs(r["B_over_sqrt_ln_n"] - r["B"] / np.sqrt(np.log(r["n"]))) < 1e-12
        assert r["degree"] is not None and r["a_priori_bound"] <= r["eps"]


@test
def degree_grows_with_B_and_shrinking_eps():
    rows = bound("--n", 4096, "--d", 4, "--B", "0.5:2:0.5")
    degs = [r["degree"] if r["degree"] is not None else 99 for r in rows]
    assert degs == sorted(degs) and degs[0] < degs[-1], degs
    rows = bound("--n", 4096, "--d", 4, "--B", 1, "--eps", "1e-2,1e-3,1e-4,1e-5")
    degs = [r["degree"] for r in rows]
    assert degs == sorted(degs) and degs[0] < degs[-1], degs


@test
def large_entries_leave_the_fast_regime():
    r = bound("--n", 4096, "--d", 8, "--B", 10)[0]
    assert r["degree"] is None and r["chosen"] == "exact" and r["predicted_s"]["exact"] > 0


@test
def support_size_describes_a_general_w():
    r = bound("--n", 4096, "--d", 8, "--B", 1, "--support-size", 10)[0]
    assert r["predicted_s"]["polyrope"] is None and r["features"] is None
    assert r["alphas"] == r["kernels"]
    assert abs(r["R"] - 10 / 8) <= 1e-11  # tau S B^2, with the slack every computed R carries


@test
def nonsense_is_a_usage_error():
    bad = [["--n", 0, "--d", 4, "--B", 1], ["--n", "1.5", "--d", 4, "--B", 1],
           ["--n", 10, "--d", 4, "--B", "3:1:0.5"], ["--n", 10, "--d", 4, "--B", "1:3:0"],
           ["--n", 10, "--d", 4, "--B", "1:3"], ["--n", 10, "--d", 4, "--B", "-1"],
           ["--n", 10, "--d", 4, "--B", 1, "--eps", 0], ["--n", 10, "--d", 4],
           ["--n", 10, "--d", 5, "--B", 1, "--rope"], ["--n", "a,b", "--d", 4, "--B", 1],
           ["--n", 10, "--d", 4, "--B", 1, "--format", "xml"],
           ["--n", 10, "--d", 4, "--B", "0:1000000:0.000001"]]
    for args in bad:
        r = fastrope("bound", *args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert r.stderr.startswith(b"fastrope: "), r.stderr


@test
def table_format_has_a_row_per_combination():
    r = fastrope("bound", "--n", "1024,2048", "--d", 4, "--B", 1)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().strip().splitlines()
    assert len(lines) == 3 and lines[0].split()[0] == "n"


@test
def write_errors_on_stdout_exit_1_with_the_reason():
    import subprocess
    from frtest import FASTROPE
    for fmt in ("table", "json"):
        with open("/dev/full", "w") as full:
            r = subprocess.run([FASTROPE, "bound", "--n", "1024,4096", "--d", "4", "--B", "1",
                                "--format", fmt], stdout=full, stderr=subprocess.PIPE)
        assert r.returncode == 1 and b"No space left on device" in r.stderr, (fmt, r.stderr)
    r = subprocess.run(["sh", "-c", 'exec "$0" bound --n 64 --d 4 --B 1 >&-', FASTROPE],
                       stderr=subprocess.PIPE)
    assert r.returncode == 1 and b"writing to stdout: Bad file descriptor" in r.stderr, r.stderr
    # a reader that stops early: EPIPE said, not a silent death by SIGPIPE
    p = subprocess.Popen([FASTROPE, "bound", "--n", "2:20000:1", "--d", "4", "--B", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.read(10)
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait() == 1 and b"Broken pipe" in err, (p.returncode, err)


@test
def json_numbers_read_back_exactly():
    tau = 0.1 + 0.2  # 0.30000000000000004: 15 digits would print 0.3
    r = fastrope("bound", "--n", 1000, "--d", 4, "--B", 1.1, "--scale", repr(tau),
                 "--format", "json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)[0]
    # R is tau d B^2 rounded upwards (the bound must hold), so only its neighbourhood is known
    R = tau * 4 * 1.1 * 1.1
    assert row["scale"] == tau and R <= row["R"] <= R * (1 + 1e-9), row


@test
def a_refused_method_gives_its_own_reason():
    # d = 8, B = 2, eps = 1e-6: polyrope's polynomial would do, its certified rounding does not;
    # polyfft's plan at the degree eps needs is too large. auto names both.
    rows = {m: bound("--n", 4096, "--d", 8, "--B", 2, "--eps", "1e-6", "--method", m)[0]
            for m in ("auto", "polyrope", "polyfft")}
    assert rows["polyrope"]["degree"] is None and "rounding bound" in rows["polyrope"]["reason"], \
        rows["polyrope"]
    assert "a plan can hold" in rows["polyfft"]["reason"], rows["polyfft"]
    assert rows["auto"]["chosen"] == "exact" and "plan is too large" in rows["auto"]["reason"], \
        rows["auto"]


run_all()
