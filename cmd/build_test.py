"""The build: objects depend on the headers they include (not on every header), the shared
library exports the public API only, `make install` lays out a library that pkg-config finds
and a C program links (shared and static), and installs portable code unless asked."""
import ctypes
import os
import re
import shutil
import subprocess

from frtest import SAN, run_all, test, tmpdir

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BUILD = os.path.join(ROOT, "build-san" if SAN else "build")


def make(*args):
    """make in the repository, outside the make that runs the tests (its flags and jobserver
    must not leak in)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    r = subprocess.run(["make", "-C", ROOT, "--no-print-directory"] + list(args) +
                       (["SAN=1"] if SAN else []), capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
    return r.stdout


def rebuilt(header):
    """The files `make all` would rebuild if header changed (beyond what it would rebuild now)."""
    outs = lambda text: set(re.findall(r" -o (\S+)", text))
    return sorted(outs(make("-n", "-W", header, "all")) - outs(make("-n", "all")))


@test
def objects_depend_on_the_headers_they_include():
    b = os.path.relpath(BUILD, ROOT)
    got = rebuilt("cmd/report.h")
    assert b + "/cmd/run.o" in got and b + "/cmd/report.o" in got, got
    assert not [o for o in got if o.startswith((b + "/core/", b + "/io/", b + "/pic/"))], got
    got = rebuilt("core/fft.h")
    assert b + "/core/fft.o" in got, got
    assert not [o for o in got if o.startswith(b + "/cmd/") or o.startswith(b + "/io/")], got
    assert b + "/core/exact.o" not in got, got


def public_names():
    text = ""
    for h in os.listdir(os.path.join(ROOT, "core")):
        if re.fullmatch(r"fastrope(_\w+)?\.h", h):
            with open(os.path.join(ROOT, "core", h)) as f:
                text += f.read()
    return set(re.findall(r"\b(fr_\w+)\s*\(", text))


def exported(lib):
    r = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return {line.split()[-1] for line in r.stdout.splitlines() if line.split()[1] in "TDBR"}


@test
def the_shared_library_exports_the_public_api_only():
    lib = os.path.join(BUILD, "libfastrope.so")
    names = exported(lib)
    public = public_names()
    assert {"fr_plan_create", "fr_execute", "fr_exact_rows", "fr_plan_free"} <= names, names
    assert not [n for n in names if n.startswith("fr__") or not n.startswith("fr_")], names
    assert names <= public, names - public
    if SAN:  # the sanitizers' runtime must come first in a process: ctypes cannot load it
        return
    so = ctypes.CDLL(lib)
    so.fr_method_name.restype = ctypes.c_char_p
    assert so.fr_method_name(1) == b"exact"


PROGRAM = r"""
#include <fastrope.h>
#include <stdio.h>
int main(void)
{
    double q[4] = {1, 0, 0, 1}, k[4] = {1, 0, 0, 1}, v[4] = {1, 2, 3, 4}, out[4];
    char err[256];
    fr_problem p = fr_problem_default(2, 2, 2);
    p.rot.kind = FR_ROT_NONE;
    p.causal = 1;
    if (fr_exact_rows(&p, q, k, v, NULL, 2, out, err, sizeof err)) return puts(err), 1;
    printf("%.17g %.17g\n", out[0], out[1]); /* row 0 sees only key 0 */
    return 0;
}
"""


def compile_and_run(cc_args, env):
    d = tmpdir()
    src, exe = os.path.join(d, "p.c"), os.path.join(d, "p")
    with open(src, "w") as f:
        f.write(PROGRAM)
    r = subprocess.run(["cc", src, "-o", exe] + cc_args, capture_output=True, text=True)
    assert r.returncode == 0, (cc_args, r.stderr)
    r = subprocess.run([exe], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.split() == ["1", "2"], (r.stdout, r.stderr)


def pkgconfig(dest, *args):
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(dest, "usr", "lib", "pkgconfig"),
               PKG_CONFIG_SYSROOT_DIR=dest)
    r = subprocess.run(["pkg-config"] + list(args) + ["fastrope"], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


@test
def installed_library_links_through_pkg_config():
    if SAN:  # a program linked against the sanitized library needs the sanitizers' flags
        return
    dest = tmpdir()
    make("install-files", "DESTDIR=" + dest, "PREFIX=/usr")
    usr = os.path.join(dest, "usr")
    for f in ("bin/fastrope", "include/fastrope.h", "lib/libfastrope.a", "lib/libfastrope.so",
              "lib/pkgconfig/fastrope.pc"):
        assert os.path.exists(os.path.join(usr, f)), f
    assert pkgconfig(dest, "--modversion")[0] in open(os.path.join(ROOT, "core",
                                                                   "fastrope.h")).read()
    lib = os.path.join(usr, "lib")
    compile_and_run(pkgconfig(dest, "--cflags", "--libs"), dict(os.environ, LD_LIBRARY_PATH=lib))
    for f in os.listdir(lib):  # only the static library left: --static must name all it needs
        if ".so" in f:
            os.unlink(os.path.join(lib, f))
    compile_and_run(pkgconfig(dest, "--cflags", "--static", "--libs"), dict(os.environ))
    shutil.rmtree(dest)


@test
def install_builds_portable_code_unless_asked():
    cmds = [c for c in make("-n", "-B", "install").splitlines() if " -c " in c]
    assert cmds and all("build-install/" in c for c in cmds), cmds[:3]
    assert not [c for c in cmds if "-march" in c], [c for c in cmds if "-march" in c][:1]
    cmds = [c for c in make("-n", "-B", "install", "ARCH=-march=native").splitlines()
            if " -c " in c]
    assert cmds and all("-march=native" in c for c in cmds), cmds[:1]


run_all()
