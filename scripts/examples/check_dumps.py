"""check_dumps.py - check a folder of .npz attention dumps with `fastrope check`.

    /usr/bin/python3 scripts/examples/check_dumps.py DIR [DIR or FILE ...] [--eps 1e-4]

Each dump is an .npz bundle as `fastrope check --help` describes it (q, k, v and the output
that some other implementation computed). Prints one line per dump from the command's JSON
lines, and exits 1 when the command reports a dump outside its tolerance (its exit code 4).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fastrope  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="dump files or folders of them")
    ap.add_argument("--eps", type=float, default=None, help="tolerance (fastrope's default)")
    ap.add_argument("--causal", action="store_true")
    a = ap.parse_args()
    try:
        rows = fastrope.check(a.paths, eps=a.eps, causal=a.causal)
    except fastrope.FastropeError as e:
        print(e.message, file=sys.stderr)
        return e.returncode
    bad = 0
    for row in rows:
        # The fields are the command's; a row that says it failed makes the exit code 1.
        failed = any(row.get(key) is False for key in ("ok", "pass", "passed", "within_eps"))
        bad += failed
        print(("FAIL " if failed else "ok   ") + json.dumps(row, sort_keys=True))
    print(f"{len(rows)} dumps checked, {bad} outside the tolerance")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
