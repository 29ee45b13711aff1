"""Resource limits: --max-elements and --max-bytes (per tensor, per file, per run) on every
command that reads tensors, checked before anything is allocated; and, under a hard address
space limit (ulimit -v), every allocation failure is exit 1 with a message, never a crash.

Defaults (cmd/cli.h): 2^30 elements per tensor (8 GiB as doubles) and 12 GiB per input file and
for all inputs of a run together, so that a run's inputs and outputs fit a 24 GB machine."""
import io
import os
import re
import subprocess
import zipfile

import numpy as np

from frtest import FASTROPE, SAN, fastrope, run_all, test, tmpdir

rng = np.random.default_rng(5)


def files(n=6, d=4, lead=()):
    dd = tmpdir()
    p = {}
    for k in ("q", "k", "v"):
        p[k] = os.path.join(dd, k + ".npy")
        np.save(p[k], rng.uniform(-1, 1, lead + (n, d)))
    p["bundle"] = os.path.join(dd, "in.npz")
    np.savez(p["bundle"], **{k: np.load(p[k]) for k in ("q", "k", "v")})
    p["dout"] = os.path.join(dd, "dout.npy")
    np.save(p["dout"], rng.uniform(-1, 1, lead + (n, d)))
    p["dir"] = dd
    return p


def commands(p):
    """Every command that reads tensors, on the 24-element q, k, v of files()."""
    out = os.path.join(p["dir"], "out")
    qkv = ["-q", p["q"], "-k", p["k"], "-v", p["v"]]
    return {
        "run": ["run", *qkv, "-o", out + ".npy", "--quiet"],
        "run_bundle": ["run", "--input", p["bundle"], "-o", out + ".npy", "--quiet"],
        "grad": ["grad", *qkv, "--dout", p["dout"], "-o", out + ".npz", "--quiet"],
        "convert": ["convert", p["bundle"], out + ".json"],
    }


@test
def help_documents_the_limits_and_their_defaults():
    for cmd in ("run", "grad"):
        r = fastrope(cmd, "--help")
        assert re.search(rb"--max-elements=N +elements per tensor \(2\^30\)", r.stdout), cmd
        assert b"--max-bytes=N" in r.stdout and b"12 GiB" in r.stdout, cmd
    r = fastrope("convert", "--help")
    assert b"--max-elements" in r.stdout and b"--max-bytes" in r.stdout


@test
def max_elements_is_per_tensor_on_every_command():
    p = files()  # 24 elements per tensor
    for name, args in commands(p).items():
        r = fastrope(*args, "--max-elements", "23")
        msg = r.stderr.decode()
        assert r.returncode == 3, (name, r.returncode, msg)
        assert "24 elements, over the limit of 23" in msg and "--max-elements" in msg, (name, msg)
        r = fastrope(*args, "--max-elements=24")
        assert r.returncode == 0, (name, r.stderr)
    # check streams its inputs but reads them within the same limits
    r = fastrope("check", p["bundle"], "--max-elements", "23")
    assert r.returncode == 3 and b"24 elements, over the limit of 23" in r.stderr, r.stderr
    assert fastrope("check", p["bundle"], "--max-elements", "24").returncode in (0, 4)


@test
def max_bytes_is_per_file_and_per_run():
    p = files()  # 192 bytes of data per tensor
    cmds = commands(p)
    # per file: a bundle of three tensors holds 576 bytes of data (plus headers)
    r = fastrope(*cmds["run_bundle"], "--max-bytes", "500")
    assert r.returncode == 3 and b"over the limit of 500" in r.stderr, r.stderr
    r = fastrope(*cmds["convert"], "--max-bytes", "500")
    assert r.returncode == 3 and b"over the limit of 500" in r.stderr, r.stderr
    # per run: each .npy file is about 320 bytes, but q, k, v together hold 576
    r = fastrope(*cmds["run"], "--max-bytes", "500")
    msg = r.stderr.decode()
    assert r.returncode == 3 and "576 bytes as doubles, over the limit of 500 bytes per run" in msg, msg
    r = fastrope(*cmds["grad"], "--max-bytes", "700")  # dout brings it to 768
    assert r.returncode == 3 and b"768 bytes" in r.stderr, r.stderr
    for name, args in cmds.items():
        r = fastrope(*args, "--max-bytes", "100000")
        assert r.returncode == 0, (name, r.stderr)


@test
def limit_values_are_checked():
    p = files()
    for name, args in commands(p).items():
        for bad in (["--max-elements", "0"], ["--max-bytes", "-5"], ["--max-bytes", "1e9"],
                    ["--max-elements", "12x"], ["--max-elements"]):
            r = fastrope(*args, *bad)
            assert r.returncode == 2 and r.stderr.startswith(b"fastrope: "), (name, bad, r.stderr)


@test
def limits_come_before_allocation():
    """A header claiming 2^31 elements in a tiny file is refused by the file size, and a real
    800 MB (deflated to 800 kB) member by the limit, both without the memory being touched:
    under `ulimit -v` of 300 MB they still fail with exit 3, not 1."""
    if SAN:  # AddressSanitizer reserves terabytes of address space: ulimit -v cannot apply
        return
    d = tmpdir()
    buf = io.BytesIO()
    np.save(buf, np.zeros(100_000_000))
    bomb = os.path.join(d, "bomb.npz")
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("q.npy", buf.getvalue())
    del buf
    r = limited(300_000, "convert", bomb, os.path.join(d, "o.npy"), "--max-bytes", "100000000")
    assert r.returncode == 3 and b"over the limit of 100000000" in r.stderr, r.stderr


def limited(kb, *args):
    return subprocess.run(["sh", "-c", 'ulimit -v %d && exec "$0" "$@"' % kb, FASTROPE,
                          *map(str, args)], capture_output=True, timeout=120)


@test
def out_of_memory_is_exit_1_with_a_message():
    """A sweep of address-space limits over a run whose inputs (three 1 MB tensors, deflated)
    and work need more: each run succeeds or fails with exit 1 and a one-line message, and no
    temporary file is left."""
    if SAN:
        return
    d = tmpdir()
    bundle = os.path.join(d, "b.npz")
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as z:
        for k in "qkv":
            buf = io.BytesIO()
            np.save(buf, np.round(rng.uniform(-1, 1, (16, 1024, 8)), 1))
            z.writestr(k + ".npy", buf.getvalue())
    # the smallest limit under which the binary starts at all
    lo, hi = 1000, 400_000
    while hi - lo > 2000:
        mid = (lo + hi) // 2
        if limited(mid, "--version").returncode == 0:
            hi = mid
        else:
            lo = mid
    base = hi
    outcomes = {}
    for step in range(0, 8):
        kb = base + step * 2500
        for args in (["run", "--input", bundle, "-o", os.path.join(d, "o.npy"), "--quiet"],
                     ["run", "--input", bundle, "-o", os.path.join(d, "o.npy"), "--quiet",
                      "--method", "polyfft", "--check-rows", "2"],
                     ["grad", "--input", bundle, "--dout", os.path.join(d, "o.npy"), "-o",
                      os.path.join(d, "g.npz"), "--quiet", "--method", "exact"],
                     ["convert", bundle, os.path.join(d, "c.json")],
                     ["gen", "--n", "1024", "--d", "8", "--batch", "16", "-o",
                      os.path.join(d, "gen.npz")]):
            if args[0] == "grad" and not os.path.exists(os.path.join(d, "o.npy")):
                continue
            r = limited(kb, *args)
            msg = r.stderr.decode(errors="replace")
            assert r.returncode in (0, 1), (kb, args, r.returncode, msg)
            # libgomp reports a thread or a team it cannot allocate itself, and exits 1 (no
            # output is replaced then: outputs are committed after the computation)
            if r.returncode == 1:
                assert (msg.startswith("fastrope: ") and "memory" in msg) or msg.strip() == (
                    "libgomp: Thread creation failed: Resource temporarily unavailable") or \
                    re.fullmatch(r"libgomp: Out of memory allocating \d+ bytes", msg.strip()), (
                        kb, args, msg)
            outcomes.setdefault(args[0] + (args[-1] if args[-1] == "2" else ""), set()).add(
                r.returncode)
    assert all(1 in o for o in outcomes.values()), outcomes  # the sweep reached the failures
    assert not [f for f in os.listdir(d) if f.startswith(".")], os.listdir(d)


run_all()
