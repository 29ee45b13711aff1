#!/usr/bin/python3
"""make_fixtures.py - write the small numpy-made fixtures in testdata/ that io/fixtures_test.c
reads, and testdata/expected.json with the values each one must give (as float64).

Deterministic: the values are fixed, and the zip timestamps numpy would take from the clock
are pinned (TZ=UTC, time.time patched), so rerunning reproduces the same bytes.

Usage: /usr/bin/python3 scripts/make_fixtures.py [OUTDIR]   (default: testdata/)
"""
import json
import os
import sys
import time

import numpy as np

os.environ["TZ"] = "UTC"
time.tzset()
time.time = lambda: 1700000000.0  # zipfile dates its members from the clock

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "testdata")
expected = {}


def record(key, arr):
    a = np.asarray(arr)
    expected[key] = {"shape": list(a.shape), "data": [float(x) for x in a.astype(np.float64).ravel(order="C")]}


def save(name, arr, version=None):
    path = os.path.join(OUT, name)
    with open(path, "wb") as f:
        if version is None:
            np.save(f, arr)
        else:
            np.lib.format.write_array(f, arr, version=version)
    record(name, arr)


def dtype_values():
    """Every supported dtype in both byte orders, with the values that stress a decoder:
    extremes, signs, a half subnormal, non-integers."""
    base = {
        "f2": [0.0, -1.5, 65504.0, 5.960464477539063e-08, -0.000999, 3.140625],
        "f4": [0.0, -1.5, 3.4028234663852886e38, 1.401298464324817e-45, 0.1, -7.25],
        "f8": [0.0, -1.5, 1.7976931348623157e308, 5e-324, 0.1, -1 / 3],
        "i1": [0, -1, 127, -128, 5, -7],
        "i2": [0, -1, 32767, -32768, 300, -7],
        "i4": [0, -1, 2**31 - 1, -(2**31), 70000, -7],
        "i8": [0, -1, 2**63 - 1, -(2**63), 2**53 + 1, -7],
        "u1": [0, 1, 255, 128, 5, 7],
        "u2": [0, 1, 65535, 32768, 300, 7],
        "u4": [0, 1, 2**32 - 1, 2**31, 70000, 7],
        "u8": [0, 1, 2**64 - 1, 2**63, 2**53 + 1, 7],
        "b1": [True, False, True, True, False, False],
    }
    out = {}
    for code, vals in base.items():
        if code[1] == "1":  # one byte: no byte order ("|")
            out[code] = np.array(vals, dtype="?" if code == "b1" else "|" + code).reshape(2, 3)
        else:
            for prefix, order in (("le_", "<"), ("be_", ">")):
                out[prefix + code] = np.array(vals, dtype=order + code).reshape(2, 3)
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    # One .npy per layout feature.
    save("scalar.npy", np.float64(3.25))  # 0-D
    save("vec5.npy", np.array([1.0, -2.0, 0.5, 1e-300, 6.02e23]))  # 1-D
    save("c3d.npy", (np.arange(24, dtype="<f8").reshape(2, 3, 4) - 11.5) / 7)  # 3-D, C order
    save("fortran3d_be_f4.npy", np.asfortranarray(((np.arange(24).reshape(2, 3, 4) - 11) / 8).astype(">f4")))
    save("fortran2d_i2.npy", np.asfortranarray(np.arange(-6, 6, dtype="<i2").reshape(3, 4)))
    save("empty0x3.npy", np.zeros((0, 3)))
    save("v2_f8.npy", np.array([[1.0, 2.0], [3.0, 4.5]]), version=(2, 0))
    save("v3_u2.npy", np.array([1, 2, 65535], dtype=">u2"), version=(3, 0))
    save("be_f8.npy", np.array([np.pi, -np.e, 1e-310], dtype=">f8"))
    save("half.npy", np.array([1.0, -2.0, 6.1035156e-05, 65504.0], dtype="<f2"))

    # Every dtype and byte order as members of one compressed .npz (keeps testdata small).
    members = dtype_values()
    np.savez_compressed(os.path.join(OUT, "dtypes.npz"), **members)
    for k, v in members.items():
        record("dtypes.npz:" + k, v)

    q = np.linspace(-1, 1, 8).reshape(4, 2)
    k = q[::-1] * 0.5
    v = np.arange(12, dtype=np.float32).reshape(4, 3) / 3
    np.savez(os.path.join(OUT, "qkv.npz"), q=q, k=k, v=v)
    np.savez_compressed(os.path.join(OUT, "qkv_compressed.npz"), q=q, k=k, v=v)
    for name in ("qkv.npz", "qkv_compressed.npz"):
        for m, a in (("q", q), ("k", k), ("v", v)):
            record(name + ":" + m, a)

    # JSON: nested, shape/data, and a bundle mixing both.
    nested = [[1, 2.5, -3], [4e-5, 5, 6]]
    with open(os.path.join(OUT, "nested.json"), "w") as f:
        json.dump(nested, f)
    record("nested.json", nested)
    with open(os.path.join(OUT, "shape_data.json"), "w") as f:
        json.dump({"shape": [2, 1, 2], "data": [0.1, 0.2, 0.3, 0.4]}, f)
    record("shape_data.json", np.array([0.1, 0.2, 0.3, 0.4]).reshape(2, 1, 2))
    with open(os.path.join(OUT, "bundle.json"), "w") as f:
        f.write('{"q": [[1, 0], [0, 1]],\n "k": {"data": [0.5, -0.5], "shape": [1, 2]},\n "s": 7,\n}'
                .replace(",\n}", "\n}"))
    record("bundle.json:q", [[1.0, 0.0], [0.0, 1.0]])
    record("bundle.json:k", [[0.5, -0.5]])
    record("bundle.json:s", np.float64(7))

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        f.write("{\n" + ",\n".join(json.dumps(k) + ": " + json.dumps(expected[k]) for k in sorted(expected)) + "\n}\n")


if __name__ == "__main__":
    main()
