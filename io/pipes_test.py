"""pipes_test.py - pipes as a shell user makes them, through the commands: a bundle written to
stdout whose reader stops early (`| head -c 10`) leaves no temporary file in $TMPDIR and the
process ends with a write error, not a crash; garbage piped in is refused from its first bytes.
(The C side: io/output_test.c, io/stream_test.c.)
Run: FASTROPE=build/fastrope PYTHONPATH=scripts /usr/bin/python3 io/pipes_test.py"""
import os
import subprocess

from frtest import FASTROPE, fastrope, run_all, test, tmpdir


def head_c_10(args, tmp):
    """Run fastrope ARGS | head -c 10 with TMPDIR=tmp; its status, stderr and the 10 bytes."""
    env = dict(os.environ, TMPDIR=tmp)
    p = subprocess.Popen([FASTROPE] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    head = p.stdout.read(10)
    p.stdout.close()  # the reader leaves
    err = p.stderr.read()
    return p.wait(timeout=120), err, head


@test
def gen_to_stdout_reader_stops_early():
    tmp = tmpdir()
    # 8 x 4096 x 64 doubles x 3 tensors: 25 MB, far more than a pipe holds
    rc, err, head = head_c_10(["gen", "--n", "4096", "--d", "64", "--batch", "8", "--seed", "1",
                               "-o", "-"], tmp)
    assert head[:4] == b"PK\x03\x04", head
    assert os.listdir(tmp) == [], os.listdir(tmp)
    assert rc == 1 and b"Broken pipe" in err, (rc, err)


@test
def convert_bundle_to_stdout_reader_stops_early():
    d, tmp = tmpdir(), tmpdir()
    src = os.path.join(d, "in.npz")
    r = fastrope("gen", "--n", "2048", "--d", "64", "--batch", "4", "--seed", "2", "-o", src)
    assert r.returncode == 0, r.stderr
    rc, err, head = head_c_10(["convert", src, "-"], tmp)
    assert head[:4] == b"PK\x03\x04", head
    assert os.listdir(tmp) == [], os.listdir(tmp)
    assert rc == 1 and b"Broken pipe" in err, (rc, err)
    assert sorted(os.listdir(d)) == ["in.npz"], os.listdir(d)


@test
def garbage_on_stdin_refused_at_once():
    # 1 GB of zeros used to be buffered whole (1 GB of memory) before the error; now the first
    # bytes decide, and the writer is cut off long before its end.
    d = tmpdir()
    out = os.path.join(d, "out.npy")
    p = subprocess.Popen([FASTROPE, "convert", "-", out], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sent, chunk = 0, bytes(1 << 20)
    try:
        while sent < 1 << 30:
            p.stdin.write(chunk)
            sent += len(chunk)
    except BrokenPipeError:
        pass
    try:
        p.stdin.close()
    except BrokenPipeError:
        pass
    err = p.stderr.read()
    rc = p.wait(timeout=60)
    assert rc == 3 and b"<stdin>: not a .npy" in err, (rc, err)
    assert sent < 64 << 20, "%d bytes taken before the refusal" % sent
    assert os.listdir(d) == [], os.listdir(d)


@test
def dev_zero_refused_at_once():
    r = fastrope("convert", "/dev/zero", os.path.join(tmpdir(), "x.npy"), timeout=20)
    assert r.returncode == 3 and b"/dev/zero: not a .npy" in r.stderr, r


run_all()
