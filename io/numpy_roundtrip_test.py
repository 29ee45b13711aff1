"""numpy_roundtrip_test.py - numpy writes, `fastrope convert` converts, numpy reads: the values
must be bit-identical (f8), equal to numpy's own float32 cast (--dtype f4), and the same through
stdin/stdout pipes ('-'). Bad input must end with status 3 and a 'PATH: ...' message.
Run: FASTROPE=build/fastrope /usr/bin/python3 io/numpy_roundtrip_test.py"""
import io
import json
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np

FASTROPE = os.environ.get("FASTROPE") or os.path.join(os.path.dirname(__file__), "..", "build", "fastrope")
failures = 0


def report(name, ok, detail=""):
    global failures
    print(("ok " if ok else "FAIL ") + name)
    if not ok:
        failures += 1
        print("#   " + detail)


def convert(src, dst, *extra, stdin=None):
    return subprocess.run([FASTROPE, "convert", src, dst, *extra], input=stdin, capture_output=True, timeout=60)


def bits_equal(a, b):
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def arrays():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 5)) * 10.0 ** rng.integers(-30, 30, (3, 4, 5))
    x.flat[:4] = [0.1, -0.0, 5e-324, 1.7976931348623157e308]
    return {
        "f8_3d": x,
        "f8_be_fortran": np.asfortranarray(x.astype(">f8")),
        "f4_2d": rng.standard_normal((7, 3)).astype(np.float32),
        "f2": np.array([1.0, -2.0, 6.1035156e-05, 65504.0, 5.96e-08], dtype="<f2"),
        "i8_extremes": np.array([0, -1, 2**63 - 1, -(2**63), 2**53 + 1], dtype=">i8"),
        "u8_extremes": np.array([0, 2**64 - 1, 2**63, 7], dtype="<u8"),
        "u1": np.arange(256, dtype=np.uint8).reshape(16, 16),
        "i2_fortran": np.asfortranarray(np.arange(-6, 6, dtype="<i2").reshape(3, 4)),
        "bool": np.array([[True, False], [False, True]]),
        "scalar": np.array(2.5),
        "vector1": np.array([3.0]),
        "empty": np.zeros((0, 4)),
    }


def test_npy(tmp):
    for name, a in arrays().items():
        src = os.path.join(tmp, name + ".npy")
        np.save(src, a)
        for dtype, cast in (("f8", np.float64), ("f4", np.float32)):
            dst = os.path.join(tmp, name + "_out_" + dtype + ".npy")
            r = convert(src, dst, "--dtype", dtype)
            ok = r.returncode == 0
            if ok:
                got = np.load(dst)
                want = a.astype(np.float64).astype(cast)
                ok = bits_equal(got, want) and got.flags.c_contiguous
            report("npy_%s_%s" % (name, dtype), ok, r.stderr.decode())


def test_npy_versions(tmp):
    a = np.arange(6, dtype=">f4").reshape(2, 3) / 7
    for v in ((1, 0), (2, 0), (3, 0)):
        src = os.path.join(tmp, "v%d.npy" % v[0])
        with open(src, "wb") as f:
            np.lib.format.write_array(f, a, version=v)
        dst = os.path.join(tmp, "v_out.npy")
        r = convert(src, dst)
        report("npy_version_%d" % v[0], r.returncode == 0 and bits_equal(np.load(dst), a.astype(np.float64)), r.stderr.decode())


def test_npz(tmp):
    arrs = arrays()
    members = {k: v for k, v in arrs.items() if k in ("f8_3d", "f4_2d", "i8_extremes", "scalar", "empty", "f8_be_fortran")}
    for saver in ("savez", "savez_compressed"):
        src = os.path.join(tmp, saver + ".npz")
        getattr(np, saver)(src, **members)
        for extra in ((), ("--compress",), ("--dtype", "f4")):
            dst = os.path.join(tmp, saver + "_out.npz")
            r = convert(src, dst, *extra)
            ok = r.returncode == 0
            detail = r.stderr.decode()
            if ok:
                cast = np.float32 if "f4" in extra else np.float64
                with np.load(dst) as z:
                    ok = sorted(z.files) == sorted(members)
                    for k, a in members.items():
                        if ok and not bits_equal(z[k], a.astype(np.float64).astype(cast)):
                            ok, detail = False, "member " + k
            report("npz_%s%s" % (saver, "".join(extra).replace("--", "_")), ok, detail)


def test_json(tmp):
    a = arrays()["f8_3d"]
    src = os.path.join(tmp, "j.npy")
    np.save(src, a)
    dst = os.path.join(tmp, "j.json")
    r = convert(src, dst)
    ok = r.returncode == 0
    if ok:
        with open(dst) as f:
            got = np.array(json.load(f), dtype=np.float64)
        ok = bits_equal(got, a)
    report("json_from_npy_bit_exact", ok, r.stderr.decode())
    back = os.path.join(tmp, "j_back.npy")
    r = convert(dst, back)
    report("json_to_npy_bit_exact", r.returncode == 0 and bits_equal(np.load(back), a), r.stderr.decode())
    # a bundle: npz -> json -> npz
    src = os.path.join(tmp, "jb.npz")
    np.savez(src, q=a[0], k=a[1], s=np.array(4.0))
    r1 = convert(src, os.path.join(tmp, "jb.json"))
    r2 = convert(os.path.join(tmp, "jb.json"), os.path.join(tmp, "jb2.npz"))
    ok = r1.returncode == 0 and r2.returncode == 0
    if ok:
        with np.load(os.path.join(tmp, "jb2.npz")) as z:
            ok = bits_equal(z["q"], a[0]) and bits_equal(z["k"], a[1]) and bits_equal(z["s"], np.array(4.0))
    report("json_bundle_roundtrip", ok, (r1.stderr + r2.stderr).decode())


def test_pipes(tmp):
    a = arrays()["f8_be_fortran"]
    buf = io.BytesIO()
    np.save(buf, a)
    r = convert("-", "-", stdin=buf.getvalue())
    ok = r.returncode == 0 and bits_equal(np.load(io.BytesIO(r.stdout)), a.astype(np.float64))
    report("pipe_npy_to_npy", ok, r.stderr.decode())

    buf = io.BytesIO()
    n = a.astype(np.float64)
    q, k, v = n[0], n[1], n[2] * 3
    np.savez(buf, q=q, k=k, v=v)
    r = convert("-", "-", stdin=buf.getvalue())
    ok = r.returncode == 0
    if ok:
        with np.load(io.BytesIO(r.stdout)) as z:
            ok = bits_equal(z["q"], q) and bits_equal(z["k"], k) and bits_equal(z["v"], v)
    report("pipe_npz_to_npz", ok, r.stderr.decode())

    buf = io.BytesIO()
    np.savez_compressed(buf, q=q)
    dst = os.path.join(tmp, "p.json")
    r = convert("-", dst, stdin=buf.getvalue())
    ok = r.returncode == 0
    if ok:
        with open(dst) as f:
            ok = bits_equal(np.array(json.load(f)["q"]), q)
    report("pipe_npz_compressed_to_json", ok, r.stderr.decode())

    r = convert("-", "-", stdin=b"  \n[[1.5, 2], [3, 4]]\n")
    ok = r.returncode == 0 and bits_equal(np.load(io.BytesIO(r.stdout)), np.array([[1.5, 2], [3, 4]]))
    report("pipe_json_to_npy", ok, r.stderr.decode())

    # a regular file is recognised by its bytes, whatever its extension says
    src = os.path.join(tmp, "misnamed.json")
    np.save(open(src, "wb"), q)
    dst = os.path.join(tmp, "misnamed_out.npy")
    r = convert(src, dst)
    report("magic_not_extension", r.returncode == 0 and bits_equal(np.load(dst), q), r.stderr.decode())


def read_safetensors(path):
    """A .safetensors file read with numpy alone (the format is small): {name: array}."""
    import struct
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    kinds = {"F64": "<f8", "F32": "<f4"}
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        out[name] = np.frombuffer(blob[8 + n + b:8 + n + end], dtype=kinds[e["dtype"]]).reshape(e["shape"])
    return out, n


def write_safetensors(path, arrays):
    import struct
    header, data, at = {}, b"", 0
    for name, a in arrays.items():
        raw = np.ascontiguousarray(a).tobytes()
        code = {"<f4": "F32", "<f8": "F64", "<f2": "F16", "<i8": "I64"}[a.dtype.str]
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [at, at + len(raw)]}
        data += raw
        at += len(raw)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def test_safetensors(tmp):
    arrs = arrays()
    members = {k: arrs[k] for k in ("f8_3d", "f4_2d", "scalar", "empty")}
    src = os.path.join(tmp, "st.npz")
    np.savez(src, **members)
    for dtype, cast, code in (("f8", np.float64, "F64"), ("f4", np.float32, "F32")):
        dst = os.path.join(tmp, "st_" + dtype + ".safetensors")
        r = convert(src, dst, "--dtype", dtype)
        ok, detail = r.returncode == 0, r.stderr.decode()
        if ok:
            got, hlen = read_safetensors(dst)
            ok = sorted(got) == sorted(members) and (8 + hlen) % 8 == 0
            for k, a in members.items():
                if ok and not bits_equal(got[k], a.astype(np.float64).astype(cast)):
                    ok, detail = False, "member " + k
        report("safetensors_write_" + dtype, ok, detail)
    # written by another writer, read back through convert (F16, I64 widen exactly)
    theirs = os.path.join(tmp, "theirs.safetensors")
    h = np.array([1.5, -2, 65504], dtype="<f2")
    i = np.array([[1, -(2**40)], [7, 0]], dtype="<i8")
    write_safetensors(theirs, {"h": h, "i": i})
    dst = os.path.join(tmp, "theirs.npz")
    r = convert(theirs, dst)
    ok = r.returncode == 0
    if ok:
        with np.load(dst) as z:
            ok = bits_equal(z["h"], h.astype(np.float64)) and bits_equal(z["i"], i.astype(np.float64))
    report("safetensors_read_f16_i64", ok, r.stderr.decode())


def test_split_and_member(tmp):
    a = arrays()["f8_3d"]
    src = os.path.join(tmp, "sp.npz")
    np.savez(src, q=a[0], k=a[1], v=a[2])
    out = os.path.join(tmp, "parts") + "/"
    r = convert(src, out)
    ok = r.returncode == 0 and sorted(os.listdir(out)) == ["k.npy", "q.npy", "v.npy"]
    ok = ok and all(bits_equal(np.load(out + n + ".npy"), a[j]) for j, n in enumerate("qkv"))
    report("split_into_directory", ok, r.stderr.decode())
    dst = os.path.join(tmp, "k_only.json")
    r = convert(src, dst, "--member", "k")
    ok = r.returncode == 0
    if ok:
        with open(dst) as f:
            ok = bits_equal(np.array(json.load(f)), a[1])
    report("member_out_of_bundle", ok, r.stderr.decode())
    r = convert(src, dst, "--member", "nope")
    report("member_missing", r.returncode == 2 and "it has: q, k, v" in r.stderr.decode(), r.stderr.decode())
    # all or nothing: a member that cannot be written (a directory in the way) leaves the others
    blocked = os.path.join(tmp, "blocked")
    os.makedirs(os.path.join(blocked, "k.npy"))
    with open(os.path.join(blocked, "q.npy"), "wb") as f:
        f.write(b"old q")
    r = convert(src, blocked + "/")
    with open(os.path.join(blocked, "q.npy"), "rb") as f:
        kept = f.read() == b"old q"
    ok = r.returncode == 1 and kept and sorted(os.listdir(blocked)) == ["k.npy", "q.npy"]
    report("split_all_or_nothing", ok, "status %d, kept %s, %s" % (r.returncode, kept, r.stderr.decode()))
    r = subprocess.run([FASTROPE, "convert", "--help"], capture_output=True)
    text = r.stdout.decode()
    ok = r.returncode == 0 and "float64" in text and "--dtype" in text and ".safetensors" in text
    report("help_says_dtype_and_formats", ok, text)


def test_errors(tmp):
    a = np.arange(100.0)
    good = os.path.join(tmp, "good.npy")
    np.save(good, a)
    data = open(good, "rb").read()
    cases = {
        "truncated": (data[:-8], "but the file holds 792 bytes of data"),
        "empty": (b"", "empty file"),
        "bad_magic": (b"GIF89a" + data[6:], "not a .npy, .npz or JSON"),
        "ragged_json": (b"[[1, 2], [3]]", "ragged"),
        "zip_junk": (b"PK\x03\x04" + b"\x00" * 40, "not a valid .npz"),
    }
    for name, (content, want) in cases.items():
        p = os.path.join(tmp, name + ".in")
        with open(p, "wb") as f:
            f.write(content)
        out = os.path.join(tmp, name + ".out.npy")
        r = convert(p, out)
        err = r.stderr.decode()
        ok = r.returncode == 3 and p in err and want in err and not os.path.exists(out)
        report("error_" + name, ok, "status %d, stderr %r" % (r.returncode, err))
    r = convert(os.path.join(tmp, "missing.npy"), os.path.join(tmp, "x.npy"))
    report("error_missing_file", r.returncode == 3 and "No such file" in r.stderr.decode(), r.stderr.decode())
    r = convert("-", "-", stdin=data[:50])
    report("error_truncated_stdin", r.returncode == 3 and "truncated" in r.stderr.decode(), r.stderr.decode())


def main():
    # f8 max cast to f4 overflows to inf in numpy too: that is the expected value
    warnings.filterwarnings("ignore", "overflow encountered in cast")
    if not os.path.exists(FASTROPE):
        print("FAIL numpy_roundtrip (no binary at %s)" % FASTROPE)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        test_npy(tmp)
        test_npy_versions(tmp)
        test_npz(tmp)
        test_json(tmp)
        test_pipes(tmp)
        test_safetensors(tmp)
        test_split_and_member(tmp)
        test_errors(tmp)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
