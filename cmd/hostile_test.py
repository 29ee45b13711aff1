"""Hostile inputs end to end through the command: a table of malformed, lying and malicious
files with the exit code and message each must give (never a crash, never a partial output);
non-finite, huge, zero and denormal numbers; outputs that are atomic even when the process is
killed mid-write; refusing to overwrite an input; and CI running the suite under the sanitizers.

Temporary files: an output is written to .NAME.XXXXXX beside NAME and renamed over it, so a
process killed mid-write (SIGKILL cannot be caught) leaves the target absent or the old complete
file, plus at most that hidden .NAME.XXXXXX, which nothing reads and which may be deleted."""
import io
import os
import re
import signal
import struct
import subprocess
import time
import zipfile

import numpy as np

from frtest import FASTROPE, SAN, fastrope, run_all, test, tmpdir

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(11)


def npy(header, data=b"", version=1):
    """A .npy file with a hand-written header dict (padded as numpy pads it)."""
    h = header.encode()
    pre = 10 if version == 1 else 12
    h = h + b" " * ((64 - (pre + len(h) + 1) % 64) % 64) + b"\n"
    ln = struct.pack("<H", len(h)) if version == 1 else struct.pack("<I", len(h))
    return b"\x93NUMPY" + bytes([version, 0]) + ln + h + data


def f8(shape, data=b"", fortran=False):
    return npy("{'descr': '<f8', 'fortran_order': %s, 'shape': %s, }" % (fortran, shape), data)


def npy_bytes(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def zip_of(members, method=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def lying_zip():
    """A stored member whose local and central headers claim 10^12 bytes."""
    z = bytearray(zip_of({"q.npy": npy_bytes(np.zeros(3))}))
    big = struct.pack("<I", 0xFFFFFFF0)
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = z.find(sig)
        z[i + off:i + off + 4] = big
    return bytes(z)


def crc_broken_zip():
    z = bytearray(zip_of({"q.npy": npy_bytes(np.arange(6.0))}))
    z[z.find(b"\x93NUMPY") + 80] ^= 0xFF  # a data byte: the CRC no longer matches
    return bytes(z)


def deflate_bomb():
    """20 MB of zeros as a valid .npy, deflated to about 20 kB."""
    return zip_of({"q.npy": npy_bytes(np.zeros(2_500_000))}, zipfile.ZIP_DEFLATED)


# name, file contents, extra flags, exit code, message pattern
HOSTILE = [
    ("empty", b"", [], 3, r"empty"),
    ("text", b"hello world", [], 3, r"not a \.npy, \.npz or JSON file.* \(it starts with \"hello wo\"\)"),
    ("binary", bytes(range(256)), [], 3, r"not a \.npy, \.npz or JSON file"),
    ("npy_magic_only", b"\x93NUMPY", [], 3, r"truncated"),
    ("npy_version_9", b"\x93NUMPY\x09\x00\x10\x00" + b" " * 16, [], 3, r"unsupported npy version 9"),
    ("npy_header_too_long", b"\x93NUMPY\x02\x00" + struct.pack("<I", 2 ** 31) + b"{", [], 3,
     r"header of 2147483648 bytes is too long"),
    ("npy_header_past_end", b"\x93NUMPY\x01\x00\xff\x00{'descr'", [], 3, r"truncated"),
    ("npy_header_not_dict", npy("hello"), [], 3, r"not a dict"),
    ("npy_complex", npy("{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }", b"\0" * 16),
     [], 3, r"unsupported dtype '<c16'"),
    ("npy_object", npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\0" * 8), [],
     3, r"unsupported dtype '\|O'"),
    ("npy_shape_overflows", f8("(1099511627776, 1099511627776)"), [], 3, r"overflows"),
    ("npy_shape_negative", f8("(-1, 4)"), [], 3, r"shape"),
    ("npy_lies_about_size", f8("(1000000000,)", b"\0" * 8), [], 3,
     r"8000000000 bytes\) but the file holds 8 bytes"),
    ("npy_short_data", f8("(4,)", b"\0" * 31), [], 3, r"holds 31 bytes"),
    ("npy_long_data", f8("(4,)", b"\0" * 33), [], 3, r"holds 33 bytes"),
    ("npy_over_max_elements", f8("(5,)", b"\0" * 40), ["--max-elements", "4"], 3,
     r"over the limit of 4 \(raise it with --max-elements or --max-bytes\)"),
    ("npy_over_max_bytes", f8("(5,)", b"\0" * 40), ["--max-bytes", "39"], 3,
     r"over the limit of 39"),
    ("npy_too_many_dims", f8("(" + "1, " * 40 + ")", b"\0" * 8), [], 3, r"dimensions"),
    ("npz_garbage", b"PK\x03\x04" + b"garbage" * 10, [], 3, r"not a valid \.npz \(zip\) file"),
    ("npz_member_not_npy", zip_of({"q.txt": b"hello"}), [], 3, r"member 'q\.txt' is not a \.npy"),
    ("npz_member_garbage", zip_of({"q.npy": b"hello"}), [], 3, r"q\.npy"),
    ("npz_lying_size", lying_zip(), [], 3, r"declares|holds|zip"),
    ("npz_crc_mismatch", crc_broken_zip(), [], 3, r"CRC|zip|q\.npy"),
    ("npz_deflate_over_max_bytes", deflate_bomb(), ["--max-bytes", "1000000"], 3,
     r"declares 20000128 bytes uncompressed, over the limit of 1000000"),
    ("json_invalid", b"[1, 2", [], 3, r"invalid JSON"),
    ("json_deep", b"[" * 100000 + b"]" * 100000, [], 3, r"invalid JSON"),
    ("json_ragged", b"[[1, 2], [3]]", [], 3, r"ragged"),
    ("json_ragged_claims_billions", None, [], 3, r"ragged nested arrays .* more than"),
    ("json_string_entry", b'[[1, "a"]]', [], 3, r"entry 1 is not a number"),
    ("json_number_out_of_range", b"[1e999]", [], 3, r"out of the range of a double"),
    ("json_nan_literal", b"[NaN]", [], 3, r"invalid JSON"),
    ("json_duplicate_member", b'{"q": [1], "q": [2]}', [], 3, r"duplicate member 'q'"),
    ("json_text_after", b"[1] x", [], 3, r"text after the JSON value"),
    ("json_shape_lies", b'{"shape": [1000000, 1000000], "data": [1]}', [], 3, r"says"),
    ("json_shape_negative", b'{"shape": [-1], "data": []}', [], 3, r"non-negative integers"),
    ("json_not_tensor", b'"hello"', [], 3, r"not a \.npy, \.npz or JSON"),
]


def hostile_file(name, data):
    if data is None:  # the ragged-claims fuzz crash, as it is in the replay corpus
        with open(os.path.join(HERE, "..", "testdata", "fuzz", "json",
                               "ragged_claims_4e9.json"), "rb") as f:
            data = f.read()
    d = tmpdir()
    path = os.path.join(d, name)
    with open(path, "wb") as f:
        f.write(data)
    return d, path


@test
def hostile_files_through_convert():
    bad = []
    for name, data, flags, code, pattern in HOSTILE:
        d, path = hostile_file(name, data)
        out = os.path.join(d, "out.npy")
        r = fastrope("convert", path, out, *flags)
        msg = r.stderr.decode(errors="replace")
        ok = (r.returncode == code and re.search(pattern, msg) and msg.startswith("fastrope: ")
              and name in msg and len(msg.splitlines()) == 1 and not os.path.exists(out)
              and os.listdir(d) == [name])
        if not ok:
            bad.append("%s: exit %d, %r" % (name, r.returncode, msg))
    assert not bad, "\n".join(bad)


@test
def hostile_files_through_run_as_q_k_v_w_and_stdin():
    """The same table as run's -q (and -w, and stdin): the same code, the file named."""
    d = tmpdir()
    good = os.path.join(d, "good.npy")
    np.save(good, rng.uniform(-1, 1, (6, 4)))
    bad = []
    for name, data, flags, code, pattern in HOSTILE[::3]:
        _, path = hostile_file(name, data)
        out = os.path.join(d, "out.npy")
        for args in (["-q", path, "-k", good, "-v", good], ["-q", good, "-k", good, "-v", path],
                     ["-q", good, "-k", good, "-v", good, "-w", path]):
            r = fastrope("run", *args, "-o", out, "--quiet", *flags)
            msg = r.stderr.decode(errors="replace")
            if r.returncode != code or not re.search(pattern, msg) or os.path.exists(out):
                bad.append("%s %s: exit %d, %r" % (name, args, r.returncode, msg))
        with open(path, "rb") as f:
            r = fastrope("run", "--input", "-", "-o", out, "--quiet", *flags, input=f.read())
        if r.returncode != code or b"<stdin>" not in r.stderr:
            bad.append("%s stdin: exit %d, %r" % (name, r.returncode, r.stderr))
    assert not bad, "\n".join(bad)


@test
def directory_and_missing_file():
    d = tmpdir()
    r = fastrope("convert", d, os.path.join(d, "o.npy"))
    assert r.returncode == 3 and b"is a directory" in r.stderr, r.stderr
    r = fastrope("convert", os.path.join(d, "nope.npy"), os.path.join(d, "o.npy"))
    assert r.returncode == 3 and b"nope.npy: No such file" in r.stderr, r.stderr


@test
def empty_problem_with_huge_axes_is_bad_input():
    """An empty .npy may have other axes of any size: refused, their product never formed."""
    p = os.path.join(HERE, "..", "testdata", "fuzz", "npy", "crash-empty-huge-lead.npy")
    d = tmpdir()
    r = fastrope("run", "-q", p, "-k", p, "-v", p, "-o", os.path.join(d, "o.npy"))
    assert r.returncode == 3 and b"empty problem" in r.stderr, r.stderr


# ---- numbers ---------------------------------------------------------------------------------

def save_qkv(d, n=9, dim=4, B=1.0, **over):
    t = {"q": rng.uniform(-B, B, (n, dim)), "k": rng.uniform(-B, B, (n, dim)),
         "v": rng.uniform(-B, B, (n, dim)), "w": np.tile(np.eye(dim), (2 * n - 1, 1, 1)),
         "dout": rng.uniform(-1, 1, (n, dim))}
    t.update(over)
    paths = {}
    for k, a in t.items():
        paths[k] = os.path.join(d, k + ".npy")
        np.save(paths[k], a)
    return paths


@test
def nonfinite_in_every_input_names_tensor_and_index():
    for role in ("q", "k", "v", "w", "dout"):
        for bad, word in ((np.nan, "NaN"), (np.inf, "+Inf"), (-np.inf, "-Inf")):
            d = tmpdir()
            n, dim = 9, 4
            a = {"q": rng.uniform(-1, 1, (n, dim)), "k": rng.uniform(-1, 1, (n, dim)),
                 "v": rng.uniform(-1, 1, (n, dim)), "w": np.tile(np.eye(dim), (2 * n - 1, 1, 1)),
                 "dout": rng.uniform(-1, 1, (n, dim))}[role]
            idx = (5, 1) if a.ndim == 2 else (7, 2, 3)
            a[idx] = bad
            p = save_qkv(d, **{role: a})
            args = ["-q", p["q"], "-k", p["k"], "-v", p["v"], "--quiet"]
            if role == "w":
                args += ["-w", p["w"]]
            if role == "dout":
                r = fastrope("grad", *args, "--dout", p["dout"], "-o", os.path.join(d, "g.npz"))
            else:
                r = fastrope("run", *args, "-o", os.path.join(d, "o.npy"))
            msg = r.stderr.decode()
            want = "%s: %s at index [%s]" % (p[role], word, ", ".join(map(str, idx)))
            assert r.returncode == 3 and want in msg, (role, word, msg)


def run_report(d, p, *flags):
    out = os.path.join(d, "o.npy")
    r = fastrope("run", "-q", p["q"], "-k", p["k"], "-v", p["v"], "-o", out, "--report", "-",
                 "--quiet", *flags)
    return r, (np.load(out) if r.returncode == 0 else None)


@test
def huge_entries_send_auto_to_exact_and_fast_methods_refuse():
    import json
    d = tmpdir()
    p = save_qkv(d, n=16, B=1e3)
    r, out = run_report(d, p)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["method"] == "exact", rep["method"]
    assert np.all(np.isfinite(out))
    os.unlink(os.path.join(d, "o.npy"))
    for m in ("polyfft", "polyfft-literal", "polyrope"):
        r, _ = run_report(d, p, "--method", m)
        assert r.returncode == 4, (m, r.returncode, r.stderr)
        assert not os.path.exists(os.path.join(d, "o.npy")), m
        assert b"fastrope: " in r.stderr and b"nan" not in r.stderr.lower(), r.stderr


@test
def zeros_and_denormals_agree_across_methods():
    for name, scale in (("zeros", 0.0), ("denormal", 5e-324), ("tiny_normal", 1e-300)):
        d = tmpdir()
        n, dim = 11, 4
        over = {k: rng.uniform(-1, 1, (n, dim)) * scale for k in ("q", "k", "v")}
        if scale == 5e-324:  # a mix of denormals and zeros, both signs
            over = {k: rng.integers(-3, 4, (n, dim)) * 5e-324 for k in ("q", "k", "v")}
        p = save_qkv(d, n=n, dim=dim, **over)
        _, ex = run_report(d, p, "--method", "exact")
        assert ex is not None and np.all(np.isfinite(ex)), name
        # softmax of equal (zero) scores is the mean of v's rows
        assert np.allclose(ex, np.mean(np.load(p["v"]), axis=0), atol=1e-300, rtol=0), name
        for m in ("polyfft", "polyrope"):
            r, out = run_report(d, p, "--method", m)
            assert r.returncode == 0, (name, m, r.stderr)
            assert np.all(np.isfinite(out)) and np.max(np.abs(out - ex)) <= 1e-3 * max(
                np.max(np.abs(ex)), 1e-300), (name, m)


# ---- outputs -----------------------------------------------------------------------------------

@test
def convert_refuses_to_overwrite_its_input_by_any_name():
    d = tmpdir()
    q = os.path.join(d, "q.npy")
    np.save(q, np.arange(5.0))
    before = open(q, "rb").read()
    os.symlink(q, os.path.join(d, "link.npy"))
    for out in (q, os.path.join(d, ".", "q.npy"), os.path.join(d, "link.npy")):
        r = fastrope("convert", q, out)
        assert r.returncode == 2 and b"refusing to overwrite the input" in r.stderr, (out, r.stderr)
    r = fastrope("convert", os.path.join(d, "link.npy"), q)
    assert r.returncode == 2, r.stderr
    assert open(q, "rb").read() == before


@test
def killed_mid_write_leaves_old_or_new_complete_file():
    """SIGKILL at spread-out moments of a large conversion: the target is always the old file or
    the new complete one; what a kill leaves is only the hidden .out.npy.XXXXXX."""
    d = tmpdir()
    n = 400_000 if SAN else 2_000_000
    src = os.path.join(d, "in.npy")
    np.save(src, np.arange(n, dtype=np.float64))
    out = os.path.join(d, "out.npy")
    old = npy_bytes(np.arange(3.0))
    t0 = time.monotonic()
    r = fastrope("convert", src, os.path.join(d, "full.npy"))
    full_time = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    new = open(os.path.join(d, "full.npy"), "rb").read()
    os.unlink(os.path.join(d, "full.npy"))
    outcomes = set()
    for i in range(10):
        with open(out, "wb") as f:
            f.write(old)
        p = subprocess.Popen([FASTROPE, "convert", src, out], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(full_time * i / 10)
        p.send_signal(signal.SIGKILL)
        p.wait()
        got = open(out, "rb").read()
        assert got in (old, new), "partial output after a kill at %d/10" % i
        outcomes.add("old" if got == old else "new")
        for f in os.listdir(d):
            assert f in ("in.npy", "out.npy") or re.fullmatch(r"\.out\.npy\.\w{6}", f), f
            if f.startswith("."):
                os.unlink(os.path.join(d, f))  # ignorable: nothing reads it
    assert "old" in outcomes, outcomes  # a kill at time 0 happens before the rename


@test
def failed_write_leaves_no_temporary_file():
    d = tmpdir()
    src = os.path.join(d, "in.json")
    with open(src, "w") as f:
        f.write("[1, 2, 3]")
    # A bundle cannot go to .npy: refused before writing; a directory target fails at rename.
    os.mkdir(os.path.join(d, "dir.npy"))
    r = fastrope("convert", src, os.path.join(d, "dir.npy"))
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert sorted(os.listdir(d)) == ["dir.npy", "in.json"], os.listdir(d)


# ---- CI ------------------------------------------------------------------------------------------

@test
def ci_runs_the_suite_plain_and_under_sanitizers():
    with open(os.path.join(HERE, "..", ".ci", "run")) as f:
        lines = [ln.split("#")[0].strip() for ln in f]
    assert "make test" in lines, lines
    assert "make test SAN=1" in lines, lines
    assert "set -eu" in lines or "set -e" in lines, "a failing make test must fail CI"
    with open(os.path.join(HERE, "..", "Makefile")) as f:
        mk = f.read()
    assert "-fsanitize=address,undefined" in mk and "fuzz_replay_test" in mk


run_all()
