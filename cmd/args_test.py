"""Options from tables: values are checked as they are parsed (before any input is opened),
every usage error is one line that names the problem, contradictions are refused, list syntax
is one parser, and --help tells the truth about the options and the formats."""
import os
import re
import threading

import numpy as np

from frtest import fastrope, run_all, test, tmpdir

rng = np.random.default_rng(5)


def fifo():
    """A named pipe nobody writes to: a command that opens it for reading blocks until the
    timeout, so a quick exit proves the error came before any input was touched."""
    d = tmpdir()
    p = os.path.join(d, "never.npz")
    os.mkfifo(p)
    return d, p


def one_line_usage_error(args, timeout=20):
    r = fastrope(*args, timeout=timeout)
    msg = r.stderr.decode()
    assert r.returncode == 2, (args, r.returncode, msg)
    assert msg.startswith("fastrope: ") and msg.count("\n") == 1, (args, msg)
    return msg


@test
def values_are_checked_before_any_input_is_read():
    d, p = fifo()
    out = os.path.join(d, "o.npy")
    cases = [
        (["--scale", "foo"], "--scale"),
        (["--scale", "-1"], "--scale"),
        (["--eps", "0"], "--eps"),
        (["--window", "-3"], "--window"),
        (["--rope-pairs", "diagonal"], "--rope-pairs"),
        (["--method", "magic"], "--method"),
        (["--degree", "65"], "--degree"),
        (["--check-rows", "x"], "--check-rows"),
        (["--report-fd", "-1"], "--report-fd"),
        (["--report-fd", "999"], "--report-fd"),
        (["--dtype", "f2"], "--dtype"),
        (["--max-bytes", "1e9"], "--max-bytes"),
        (["--rotary-dim", "3"], "--rotary-dim"),
        (["--preset", "bert"], "--preset"),
    ]
    for flags, name in cases:
        for cmd in (["run", "-o", out], ["grad", "--dout", p, "-o", out + ".npz"]):
            msg = one_line_usage_error([cmd[0], "--input", p, *cmd[1:], *flags])
            assert name in msg and repr(flags[1]).strip("'") in msg, (flags, msg)


@test
def output_formats_are_checked_before_any_input_is_read():
    d, p = fifo()
    for args in (["run", "--input", p, "-o", os.path.join(d, "o.txt")],
                 ["grad", "--input", p, "--dout", p, "-o", os.path.join(d, "g.npy")],
                 ["grad", "--input", p, "--dout", p, "--dq", os.path.join(d, "dq.bin")],
                 ["gen", "--n", 4, "--d", 2, "-o", os.path.join(d, "g.npy")]):
        msg = one_line_usage_error(args)
        assert "unknown output format" in msg, msg


@test
def the_rotary_dimension_is_blamed_for_its_own_mistakes():
    msg = one_line_usage_error(["run", "--input", "x.npz", "-o", "y.npy", "--rotary-dim", "3"])
    assert "even" in msg and "odd" not in msg, msg
    d = tmpdir()
    inp = os.path.join(d, "in.npz")
    np.savez(inp, q=rng.uniform(-1, 1, (6, 4)), k=rng.uniform(-1, 1, (6, 4)),
             v=rng.uniform(-1, 1, (6, 4)))
    msg = one_line_usage_error(["run", "--input", inp, "-o", os.path.join(d, "o.npy"),
                                "--rotary-dim", "6"])
    assert "--rotary-dim 6" in msg and "d = 4" in msg, msg
    msg = one_line_usage_error(["bound", "--n", 8, "--d", 4, "--B", 1, "--rotary-dim", 6])
    assert "--rotary-dim 6" in msg, msg


@test
def contradictions_are_refused():
    d, p = fifo()
    base = ["run", "--input", p, "-o", os.path.join(d, "o.npy")]
    for flags, words in (
            (["--no-rope", "--rope-base", "500"], ["--rope-base", "--no-rope"]),
            (["-w", p, "--rope-pairs", "half"], ["--rope-pairs", "-w"]),
            (["--no-rope", "--rotary-dim", "2"], ["--rotary-dim"]),
            (["--rope", "--no-rope"], ["at most one rotation"]),
            (["--rope-clip", "4", "-w", p], ["at most one rotation"]),
            (["--causal", "--no-causal"], ["--causal", "--no-causal"]),
            (["--method", "exact", "--degree", "5"], ["--degree", "exact"]),
            (["--eps", "1e-3", "--eps", "1e-4"], ["--eps", "twice", "1e-3", "1e-4"]),
            (["--eps=1e-3", "--eps", "1e-4"], ["--eps", "twice"]),
            (["--window", "3", "--window", "4"], ["--window", "twice"])):
        msg = one_line_usage_error(base + flags)
        for w in words:
            assert w in msg, (flags, w, msg)


@test
def the_same_value_twice_is_not_a_contradiction():
    d = tmpdir()
    out = os.path.join(d, "g.npz")
    r = fastrope("gen", "--n", 4, "--d", 2, "--seed", 3, "--seed", "3", "-o", out)
    assert r.returncode == 0, r.stderr
    r = fastrope("run", "--input", out, "-o", os.path.join(d, "o.npy"), "--causal", "--causal",
                 "--method", "exact", "--quiet", "--eps", "1e-3", "--eps=0.001", "--window", "4",
                 "--window", "04", "--dtype", "f8", "--dtype", "float64")
    assert r.returncode == 0, r.stderr


@test
def missing_and_unknown_options_are_one_line():
    for args in (["run", "--bogus"], ["run", "--window"], ["grad", "--dout"],
                 ["bound", "--n"], ["gen", "--frobnicate", "1"], ["run", "--rope=3"],
                 ["run", "stray-argument", "-o", "x.npy"]):
        one_line_usage_error(args)


@test
def outputs_naming_one_file_are_refused_before_any_work():
    d, p = fifo()
    x = os.path.join(d, "x.json")
    for args in (["run", "--input", p, "-o", x, "--report", x],
                 ["run", "--input", p, "-o", x, "--report", os.path.join(d, ".", "x.json")],
                 ["run", "--input", p, "-o", "-", "--report", "-"],
                 ["run", "--input", p, "-o", "-", "--report-fd", "1"],
                 ["grad", "--input", p, "--dout", p, "--dq", x, "--dk", x],
                 ["grad", "--input", p, "--dout", p, "-o", x, "--report", x]):
        msg = one_line_usage_error(args)
        assert "x.json" in msg or "stdout" in msg, msg
    assert os.listdir(d) == ["never.npz"]


@test
def list_syntax_is_one_parser_for_bound_and_gen():
    d = tmpdir()
    out = os.path.join(d, "g.npz")
    for bad in ("2,,3", "2,", ",2", "2,x", "0,2", "1.5"):
        m1 = one_line_usage_error(["gen", "--n", 4, "--d", 2, "--batch", bad, "-o", out])
        m2 = one_line_usage_error(["bound", "--n", bad, "--d", 4, "--B", 1])
        # the same parser: the same message but for the flag's name
        assert m1.replace("--batch", "FLAG") == m2.replace("--n", "FLAG"), (m1, m2)
    r = fastrope("gen", "--n", 4, "--d", 2, "--batch", "2,3", "-o", out)
    assert r.returncode == 0 and np.load(out)["q"].shape == (2, 3, 4, 2), r.stderr
    msg = one_line_usage_error(["gen", "--n", 4, "--d", 2, "--batch", "1:3:1", "-o", out])
    assert "no ranges" in msg, msg


def help_options(cmd):
    r = fastrope(cmd, "--help")
    assert r.returncode == 0 and r.stdout.startswith(b"Usage: fastrope " + cmd.encode()), r.stdout
    text = r.stdout.decode()
    return text, sorted(set(re.findall(r"^\s+(?:-\w, )?(--[a-zA-Z][\w-]*)", text, re.M)))


@test
def help_lists_exactly_the_options_that_are_accepted():
    """Every long option --help shows is one the parser knows (a value missing is its only
    complaint), and an option it does not show is unknown."""
    for cmd in ("run", "grad", "bound", "gen"):
        text, opts = help_options(cmd)
        assert "--help" in opts and len(opts) > 5, (cmd, opts)
        for o in opts:
            if o == "--help":
                continue
            r = fastrope(cmd, o)
            assert b"unrecognized option" not in r.stderr, (cmd, o, r.stderr)
        r = fastrope(cmd, "--not-an-option")
        assert b"unrecognized option '--not-an-option'" in r.stderr, r.stderr


@test
def help_names_the_formats_read_and_written():
    run_help, _ = help_options("run")
    for fmt in (".npy", ".npz", ".json", ".safetensors"):
        assert fmt in run_help, fmt
    grad_help, _ = help_options("grad")
    assert ".safetensors" in grad_help and "bundle" in grad_help
    gen_help, _ = help_options("gen")
    assert ".npz" in gen_help and ".json" in gen_help and ".safetensors" in gen_help
    assert ".npy" not in gen_help  # a bundle: never one tensor


@test
def help_of_the_shared_options_is_the_same_everywhere():
    blocks = []
    for cmd in ("run", "grad", "bound"):
        text, _ = help_options(cmd)
        i = text.index(" Rotation")
        blocks.append(text[i:text.index(" Method", i)])
    assert blocks[0] == blocks[1], blocks
    # bound reads no tensor: the same block without -w (an explicit W file)
    no_w = re.sub(r"  -w FILE .*\n(?: {20,}.*\n)*", "", blocks[0])
    assert no_w != blocks[0] and no_w == blocks[2], (no_w, blocks[2])


@test
def the_top_level_help_lists_every_command_and_the_formats():
    r = fastrope("--help")
    text = r.stdout.decode()
    cmds = re.findall(r"^  ([a-z]+) {2,}", text, re.M)
    assert {"run", "grad", "bound", "check", "gen", "convert"} <= set(cmds), cmds
    for c in cmds:
        assert fastrope(c, "--help").returncode == 0, c
    for fmt in (".npy", ".npz", ".json", ".safetensors"):
        assert fmt in text, fmt
    r = fastrope()
    assert r.returncode == 2 and r.stderr.startswith(b"usage: fastrope"), r.stderr


run_all()
