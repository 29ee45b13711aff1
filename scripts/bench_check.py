"""bench_check.py - throughput of `fastrope check` on a generated activation dump.

Writes a dump under /tmp (float16 and float32; .npz and .safetensors; layers x heads x n x d
per tensor), times `cat` over the same files (the reading floor), then `fastrope check` over
the whole tree in one run, and prints MB/s of both. Target: >= 300 MB/s, within a small factor
of cat. The full size is >= 1 GB; --quick makes ~60 MB for a smoke test.

    FASTROPE=build/fastrope python3 scripts/bench_check.py [--quick] [--keep]
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

FASTROPE = os.environ.get("FASTROPE", os.path.join(os.path.dirname(__file__), "..", "build",
                                                   "fastrope"))


def write_st(path, tensors):
    hdr, off = {}, 0
    for name, a in tensors.items():
        dt = {"float16": "F16", "float32": "F32"}[a.dtype.name]
        hdr[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    h = json.dumps(hdr).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for a in tensors.values():
            f.write(a.tobytes())


def make_dump(root, quick):
    layers, heads, n, d = (2, 4, 1024, 64) if quick else (8, 16, 4096, 64)
    rng = np.random.default_rng(0)
    total = 0
    for fmt in ("npz", "safetensors"):
        for dt in (np.float16, np.float32):
            name = "%s_%s" % (np.dtype(dt).name, fmt)
            ts = {}
            for layer in range(layers):
                for role in ("q_proj", "k_proj", "v_proj"):
                    ts["layers.%d.attn.%s" % (layer, role)] = (
                        rng.standard_normal((heads, n, d), dtype=np.float32) * 0.3).astype(dt)
            p = os.path.join(root, name + "." + fmt)
            if fmt == "npz":
                np.savez(p, **ts)
            else:
                write_st(p, ts)
            total += os.path.getsize(p)
    return total


def timed(cmd):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return time.perf_counter() - t0, r


def main():
    quick = "--quick" in sys.argv
    root = tempfile.mkdtemp(prefix="fastrope-bench-check-", dir="/tmp")
    try:
        size = make_dump(root, quick)
        files = sorted(os.path.join(root, f) for f in os.listdir(root))
        timed(["cat"] + files)  # warm the page cache for both
        t_cat, _ = timed(["sh", "-c", 'cat "$@" > /dev/null', "cat"] + files)
        t_chk, r = timed([FASTROPE, "check", root, "--format", "jsonl", "--quiet"])
        rows = [json.loads(x) for x in r.stdout.decode().splitlines()]
        if r.returncode != 0 or not rows:
            sys.exit("fastrope check failed: %s" % r.stderr.decode())
        mb = size / 1e6
        print("dump: %.0f MB in %d files, %d sets" % (mb, len(files), len(rows)))
        print("cat:   %6.2f s  %7.0f MB/s" % (t_cat, mb / t_cat))
        print("check: %6.2f s  %7.0f MB/s  (%.1fx cat's time; target >= 300 MB/s)"
              % (t_chk, mb / t_chk, t_chk / t_cat))
    finally:
        if "--keep" not in sys.argv:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
