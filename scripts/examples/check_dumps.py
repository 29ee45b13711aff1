"""check_dumps.py - verify attention dumps with `fastrope check`: does the output (and do the
gradients) that some other implementation stored agree with exact attention on the dump's own
q, k, v?

    /usr/bin/python3 scripts/examples/check_dumps.py PATH... [--preset llama] [--tol 1e-4]
                                                     [--check-rows 256] [--recursive]

A dump is a bundle (.npz, .safetensors, .json) or a folder of .npy files with q, k, v under any
name `fastrope check --help` lists (query_states, xq, q_proj, q, with layer prefixes such as
model.layers.3.self_attn.), and beside them the stored output (attn_output, out, ...) and, if
gradients are to be verified, dout with dq, dk, dv (grad_query_states, dq, ...). The options
(--preset, or --rope-pairs/--scale/--causal) must be those the implementation used.

Prints one line per set: the largest relative difference of out, dq, dk, dv from exact
attention on the sampled rows, or what was not compared and why. Exits 1 when some set
mismatched (check's exit code 4) or could not be read, 0 when every stored tensor agreed.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fastrope  # noqa: E402

COMPARED = ("out", "dq", "dk", "dv")


def describe(row):
    if "error" in row:
        return "ERROR     ", row["error"]
    diffs = ["%s %.2g" % (t, row[t + "_max_rel"]) if row.get(t + "_max_rel") is not None
             else "%s nan/inf" % t for t in COMPARED if t + "_rows" in row]
    mismatch = row["verdict"].endswith("-mismatch")
    text = ", ".join(diffs) if diffs else "nothing stored to compare"
    if row.get("note"):
        text += " (" + row["note"] + ")"
    return ("MISMATCH  " if mismatch else "ok        " if diffs else "unchecked "), text


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="dump files or folders of them")
    ap.add_argument("--preset", default=None, help="paper, llama, neox or gptj")
    ap.add_argument("--tol", type=float, default=None, help="relative tolerance (1e-4)")
    ap.add_argument("--check-rows", default=None, help="rows of each head compared (256; all)")
    ap.add_argument("--recursive", action="store_true", help="descend into subfolders")
    a = ap.parse_intermixed_args()
    try:
        rows = fastrope.check(a.paths, preset=a.preset, tol=a.tol, check_rows=a.check_rows,
                              recursive=a.recursive)
        failed = False
    except fastrope.FastropeError as e:
        rows = getattr(e, "output", None)
        if e.returncode != 3 or not rows:  # 3: some inputs were unreadable, the rest checked
            print(e.message, file=sys.stderr)
            return 1
        failed = True
    bad = 0
    for row in rows:
        status, text = describe(row)
        bad += status.strip() in ("MISMATCH", "ERROR")
        name = row["path"] + (":" + row["set"] if row["set"] else "")
        print("%s %s  %s" % (status, name, text))
    print("%d sets, %d mismatched or unreadable" % (len(rows), bad))
    return 1 if bad or failed else 0


if __name__ == "__main__":
    sys.exit(main())
