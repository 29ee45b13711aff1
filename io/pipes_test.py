"""pipes_test.py - outputs to a pipe as a shell user makes them, through the commands: a bundle
written to stdout whose reader stops early (`| head -c 10`) leaves no temporary file in $TMPDIR
and the process ends with a write error, not a crash. (The C side: io/output_test.c.)
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


run_all()
