"""The progress line and interruption (issue 20): no line without a terminal, a line with phase,
percentage and ETA under a pseudo-terminal, and SIGINT (or SIGTERM) during a long forward, backward
or check stops within a second with exit 130 (143), the existing outputs untouched and nothing
else left in the directory.

The long runs are exact attention at n = 131072, d = 4 (some 17 billion exps: several seconds on
any machine this runs on, more under the sanitisers; n = 32768 at d = 16 came to finish within
the second once exact got faster); they are signalled after half a second, so each test takes
about one."""
import os
import pty
import select
import signal
import subprocess
import time

import numpy as np

from frtest import FASTROPE, SAN, fastrope, run_all, test, tmpdir

N, D = 131072, 4
# One thread: a run's length then depends on one core's exp rate (a few billion a second at
# most), not on how many cores the machine running the tests has.
os.environ["OMP_NUM_THREADS"] = "1"


def default_signals():
    """A child that may be signalled: SIGINT as a shell gives a foreground job (a test run in
    the background inherits it ignored, and fastrope leaves an ignored signal ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def long_input(d, grads=False, width=D):
    """q, k, v (and for check: dout and stand-in gradients) at n = N, in d/in.npz."""
    rng = np.random.default_rng(20)
    b = {x: rng.uniform(-1, 1, (N, width)) for x in ("q", "k", "v")}
    if grads:
        b.update({x: rng.uniform(-1, 1, (N, width)) for x in ("dout", "dq", "dk", "dv")})
    path = os.path.join(d, "in.npz")
    np.savez(path, **b)
    return path


def existing(d, names):
    """Outputs from an earlier run: they must come through an interrupted one unchanged."""
    before = {}
    for name in names:
        path = os.path.join(d, name)
        with open(path, "wb") as f:
            f.write(b"earlier output " + name.encode())
        before[name] = open(path, "rb").read()
    return before


def interrupt(args, sig=signal.SIGINT, after=0.5):
    """Start fastrope, signal it after `after` s: (exit code, stderr, seconds from the signal)."""
    p = subprocess.Popen([FASTROPE] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         preexec_fn=default_signals)
    time.sleep(after)
    assert p.poll() is None, "the run ended before the signal: %s" % p.stderr.read().decode()
    t = time.monotonic()
    p.send_signal(sig)
    try:
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    dt = time.monotonic() - t
    return p.returncode, p.stderr.read().decode(), dt


def assert_clean_stop(d, before, code, err, dt, want=130):
    assert code == want, (code, err)
    assert err.strip().splitlines()[-1] == "fastrope: interrupted", err
    assert dt < 1.0, "stopped %.2f s after the signal" % dt
    for name, data in before.items():
        assert open(os.path.join(d, name), "rb").read() == data, name + " was changed"
    assert sorted(os.listdir(d)) == sorted(["in.npz"] + list(before)), os.listdir(d)


@test
def no_progress_without_a_terminal():
    d = tmpdir()
    inp = long_input(d)
    # a short run, and a long one interrupted: neither prints a progress line to a pipe
    small = os.path.join(d, "small.npz")
    np.savez(small, **{x: np.ones((300, 4)) for x in "qkv"})
    r = fastrope("run", "--input", small, "-o", os.path.join(d, "o.npy"))
    assert r.returncode == 0, r.stderr
    assert b"\r" not in r.stderr and b"%" not in r.stderr, r.stderr
    code, err, _ = interrupt(["run", "--input", inp, "--method", "exact", "-o",
                              os.path.join(d, "o2.npy"), "--check-rows", "0"])
    assert code == 130 and "\r" not in err and "%" not in err, (code, err)


def read_pty(fd, until, timeout):
    out, t0 = b"", time.monotonic()
    while time.monotonic() - t0 < timeout and not until(out):
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                out += os.read(fd, 4096)
            except OSError:  # the child closed its side
                break
    return out


def interrupt_on_a_terminal(args, ready, timeout):
    """Run fastrope with stderr on a pseudo-terminal, SIGINT it once ready(output so far) holds
    (or after timeout seconds), and return its exit code and everything it wrote there."""
    master, slave = pty.openpty()
    p = subprocess.Popen([FASTROPE] + args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=slave, preexec_fn=default_signals)
    os.close(slave)
    try:
        out = read_pty(master, ready, timeout)
        p.send_signal(signal.SIGINT)
        out += read_pty(master, lambda o: b"interrupted" in o, 10)
        code = p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
    return code, out


@test
def progress_line_on_a_terminal():
    d = tmpdir()
    inp = long_input(d, width=2 * D)  # predicted well over 2 s, so the line shows at once
    # predicted over 2 s: the line shows at once, redrawn in place with a percentage
    code, out = interrupt_on_a_terminal(
        ["run", "--input", inp, "--method", "exact", "-o", os.path.join(d, "out.npy"),
         "--check-rows", "0"],
        lambda o: o.count(b"%") >= 2 and (b"ETA" in o or SAN), 20)
    text = out.decode(errors="replace")
    assert code == 130, (code, text[-300:])
    # (the sanitised build, 20x slower, may be interrupted before its first fraction gives an ETA)
    assert "\rfastrope run: forward pass" in text and ("ETA" in text or SAN), text
    # the line is erased before the last message, which stands on a line of its own
    assert text.rstrip().endswith("\rfastrope: interrupted"), repr(text[-200:])
    assert not os.path.exists(os.path.join(d, "out.npy"))


@test
def quiet_shows_no_line_on_a_terminal():
    d = tmpdir()
    inp = long_input(d)
    code, out = interrupt_on_a_terminal(
        ["run", "--input", inp, "--method", "exact", "-o", os.path.join(d, "out.npy"),
         "--check-rows", "0", "--quiet"], lambda o: False, 1.0)
    assert code == 130 and b"%" not in out, (code, out)


@test
def sigint_stops_the_forward():
    d = tmpdir()
    inp = long_input(d)
    before = existing(d, ["out.npy", "rep.json"])
    code, err, dt = interrupt(["run", "--input", inp, "--method", "exact", "-o",
                               os.path.join(d, "out.npy"), "--report",
                               os.path.join(d, "rep.json"), "--check-rows", "0"])
    assert_clean_stop(d, before, code, err, dt)


@test
def sigterm_stops_the_forward_with_143():
    d = tmpdir()
    inp = long_input(d)
    before = existing(d, ["out.npy"])
    code, err, dt = interrupt(["run", "--input", inp, "--method", "exact", "-o",
                               os.path.join(d, "out.npy"), "--check-rows", "0"],
                              sig=signal.SIGTERM)
    assert_clean_stop(d, before, code, err, dt, want=143)


@test
def sigint_stops_the_backward():
    d = tmpdir()
    inp = long_input(d, grads=True)
    before = existing(d, ["grads.npz"])
    code, err, dt = interrupt(["grad", "--input", inp, "--method", "exact", "--dout", inp,
                               "-o", os.path.join(d, "grads.npz"), "--check-rows", "0"])
    assert_clean_stop(d, before, code, err, dt)


@test
def sigint_stops_check():
    d = tmpdir()
    inp = long_input(d, grads=True)
    before = existing(d, ["table.txt"])
    code, err, dt = interrupt(["check", inp])
    assert_clean_stop(d, before, code, err, dt)


@test
def an_ignored_sigint_stays_ignored():
    d = tmpdir()
    path = os.path.join(d, "in.npz")  # about a second of exact attention (sanitised: similar)
    n = 4096 if SAN else 16384
    np.savez(path, **{x: np.random.default_rng(1).uniform(-1, 1, (n, D)) for x in "qkv"})
    inp = path
    # started with SIGINT ignored (a background job, nohup): the disposition survives exec, and
    # a SIGINT in the middle of the run does not stop it
    p = subprocess.Popen([FASTROPE, "run", "--input", inp, "--method", "exact", "-o",
                          os.path.join(d, "o.npy"), "--check-rows", "0", "--quiet"],
                         stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=120) == 0, p.stderr.read()
    assert os.path.exists(os.path.join(d, "o.npy"))


@test
def second_sigint_kills_at_once():
    d = tmpdir()
    inp = long_input(d)
    p = subprocess.Popen([FASTROPE, "run", "--input", inp, "--method", "exact", "-o",
                          os.path.join(d, "out.npy"), "--check-rows", "0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         preexec_fn=default_signals)
    time.sleep(0.5)
    # two at once: the second finds the default action (the first may not be acted on yet)
    p.send_signal(signal.SIGINT)
    p.send_signal(signal.SIGINT)
    code = p.wait(timeout=10)
    assert code in (130, -signal.SIGINT), code
    assert os.listdir(d) == ["in.npz"], os.listdir(d)


run_all()
