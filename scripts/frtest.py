"""frtest.py - the small harness the Python tests share.

    from frtest import test, run_all, fastrope, tmpdir
    @test
    def gen_is_reproducible(): ...
    run_all()

Each test prints "ok NAME" or "FAIL NAME" (the protocol scripts/runtests.sh counts) and
run_all() exits non-zero when one failed. fastrope(...) runs the binary named by $FASTROPE
(make test sets it) and returns the CompletedProcess.
"""
import os
import subprocess
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
FASTROPE = os.environ.get("FASTROPE") or os.path.join(HERE, "..", "build", "fastrope")
# Under AddressSanitizer every run is slower; tests may shrink their sizes.
SAN = os.environ.get("FASTROPE_SAN") == "1"

_tests = []


def test(fn):
    _tests.append(fn)
    return fn


def fastrope(*args, input=None, timeout=300):
    """Run fastrope with args (converted to str); stdout and stderr captured as bytes."""
    return subprocess.run([FASTROPE] + [str(a) for a in args], input=input,
                          capture_output=True, timeout=timeout)


def tmpdir():
    return tempfile.mkdtemp(prefix="frtest-")


def run_all():
    failed = 0
    only = sys.argv[1:]
    for fn in _tests:
        if only and fn.__name__ not in only:
            continue
        try:
            fn()
            print("ok", fn.__name__, flush=True)
        except Exception:  # a test failure of any kind is reported, and the others still run
            failed += 1
            for line in traceback.format_exc().rstrip().splitlines():
                print("#", line)
            print("FAIL", fn.__name__, flush=True)
    sys.exit(1 if failed else 0)
