"""readme_test.py - every shell and Python example in README.md runs as printed.

The fenced ```sh and ```python blocks are run in order, in one fresh directory (so a later
example may use the files an earlier one made), with the built `fastrope` first on PATH,
`python3` being the Python that has numpy, and `scripts/` on PYTHONPATH. A block the test must
not run (`make test` itself, benchmarks of half an hour) is preceded by a line
`<!-- readme-test: skip REASON -->`; a block that only shows a fragment of a larger program is
not an example and must say so the same way. Each block must exit 0.
"""
import os
import re
import subprocess
import sys

from frtest import FASTROPE, HERE, SAN, run_all, test, tmpdir

ROOT = os.path.dirname(HERE)
BLOCK = re.compile(r"(<!--\s*readme-test:\s*skip\s+([^>]*?)-->\s*\n)?```(sh|python)\n(.*?)```",
                   re.S)


def blocks():
    text = open(os.path.join(ROOT, "README.md")).read()
    for m in BLOCK.finditer(text):
        line = text.count("\n", 0, m.start(3)) + 1
        yield line, m.group(3), m.group(4), m.group(2)


def environment(work):
    """PATH with the built binary and numpy's python3 first; the helper module importable."""
    bindir = os.path.join(work, ".bin")
    os.makedirs(bindir, exist_ok=True)
    os.symlink(os.path.abspath(FASTROPE), os.path.join(bindir, "fastrope"))
    os.symlink(sys.executable, os.path.join(bindir, "python3"))
    env = dict(os.environ)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    env["FASTROPE"] = os.path.abspath(FASTROPE)
    return env


@test
def every_example_runs():
    if SAN:  # the examples are sized for a real run (n = 65536); the sanitised build runs the
        print("# skipped under SAN: the other tests run the same code at sanitiser-sized inputs")
        return
    work = tmpdir()
    env = environment(work)
    ran = skipped = 0
    failures = []
    for line, lang, code, skip in blocks():
        if skip is not None:
            if not skip.strip():
                failures.append("README.md:%d: a skipped block must say why" % line)
            skipped += 1
            continue
        cmd = ["sh", "-e", "-c", code] if lang == "sh" else [sys.executable, "-c", code]
        r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, timeout=600)
        ran += 1
        if r.returncode != 0:
            failures.append("README.md:%d (%s) exited %d:\n%s\n%s" %
                            (line, lang, r.returncode, code.strip(),
                             (r.stdout + r.stderr).decode(errors="replace")[-2000:]))
    print("# %d README examples run, %d skipped" % (ran, skipped))
    assert ran >= 5, "only %d examples ran" % ran
    assert not failures, "\n\n".join(failures)


run_all()
