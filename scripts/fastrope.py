"""fastrope.py - RoPE attention from Python through the fastrope command (numpy only).

    import fastrope
    out, report = fastrope.run(q, k, v, causal=True, rope_pairs="half", eps=1e-4)
    grads, report = fastrope.grad(q, k, v, dout=dout)        # grads["dq"], ["dk"], ["dv"], ["out"]
    rows = fastrope.check(["dumps/"])                         # one dict per checked dump

q, k: [..., n, d], v: [..., n, dv]; leading axes are a batch and come back unchanged. Keyword
options are the command's flags: `causal=True` -> `--causal`, `rope_pairs="half"` ->
`--rope-pairs half`, `check_rows="all"` -> `--check-rows all`; False or None leaves a flag out,
and a keyword the command does not take raises TypeError before anything is started. A failed
command raises FastropeError with fastrope's one-line message and its exit code (2 usage, 3 bad
input, 4 accuracy not guaranteed, 1 internal).

How the data moves: the inputs are written as an .npz bundle (numpy.savez, straight into the
process's stdin, in chunks: no second copy of the inputs), the output is read from its stdout
into the result array, and the JSON report arrives on a pipe of its own (--report-fd). W and
dout/target go through further pipes named /dev/fd/N. Every pipe is served by its own thread,
because with large tensors each side can block on another.

The binary: binary=..., else $FASTROPE, else `fastrope` on PATH, else ../build/fastrope next to
this file.
"""
import errno
import io
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np

__all__ = ["run", "grad", "check", "FastropeError", "find_binary"]


class FastropeError(RuntimeError):
    """The command failed: message is its error text (stderr), returncode its exit code."""

    def __init__(self, message, returncode, argv=None):
        super().__init__(message)
        self.message = message
        self.returncode = returncode
        self.argv = argv

    def __str__(self):
        return f"{self.message} (exit code {self.returncode})"


# ---- options ----------------------------------------------------------------------------------

# Keywords that are on/off flags; every other option takes a value.
_FLAGS = {"rope", "no_rope", "causal", "strict", "grad_w", "recursive", "per_head"}
_ATTENTION = {"rope", "rope_base", "rope_pairs", "rope_scale", "rotary_dim", "rope_clip",
              "no_rope", "scale", "causal", "window", "method", "eps", "degree", "max_degree"}
_OPTIONS = {
    "run": _ATTENTION | {"check_rows", "dtype", "strict"},
    "grad": _ATTENTION | {"check_rows", "dtype", "grad_w"},
    "check": _ATTENTION | {"check_rows", "tol", "names", "preset", "recursive", "per_head",
                           "shard"},
}
# Keywords the helper itself consumes.
_OWN = {"binary", "timeout", "quiet", "extra_args"}


def _flags(command, options):
    """The command-line flags for the keyword options; TypeError for anything not accepted."""
    allowed = _OPTIONS[command]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"fastrope.{command}() got unexpected keyword argument(s) "
                        f"{', '.join(unknown)}; accepted: {', '.join(sorted(allowed | _OWN))}")
    args = []
    for name in sorted(options):  # sorted: the same call gives the same command line
        value = options[name]
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if name in _FLAGS:
            if value is not True:
                raise TypeError(f"{name}= takes True or False, not {value!r}")
            args.append(flag)
        elif value is True or not isinstance(value, (str, int, float, np.integer, np.floating)):
            raise TypeError(f"{name}= takes a number or a string, not {value!r}")
        else:
            args += [flag, str(value)]
    return args


def find_binary(binary=None):
    """binary, else $FASTROPE, else fastrope on PATH, else ../build/fastrope from this file."""
    if binary:
        return os.fspath(binary)
    if os.environ.get("FASTROPE"):
        return os.environ["FASTROPE"]
    found = shutil.which("fastrope")
    if found:
        return found
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "fastrope")


def _array(name, x):
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, not dtype {a.dtype}")
    return a


# ---- reading results ------------------------------------------------------------------------

class _Unbuffered:
    """A read-only view of a pipe: numpy's format readers only call read()."""

    def __init__(self, f):
        self.f = f

    def read(self, n=-1):
        return self.f.read(n)


def _read_npy(f):
    """One .npy from the stream f into a fresh array, read in place (no intermediate bytes)."""
    src = _Unbuffered(f)
    version = np.lib.format.read_magic(src)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(src)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(src)
    else:
        shape, fortran, dtype = np.lib.format._read_array_header(src, version)
    if dtype.hasobject:
        raise ValueError("fastrope wrote an object array")
    out = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    view = memoryview(out.reshape(-1, order="A")).cast("B") if out.size else memoryview(b"")
    got = 0
    while got < len(view):
        r = f.readinto(view[got:])
        if not r:
            raise ValueError(f"the .npy output ended after {got} of {len(view)} data bytes")
        got += r
    return out


def _read_npz(f):
    """An .npz from the stream f: zip needs to seek, so it is read whole, then unpacked."""
    with np.load(io.BytesIO(f.read()), allow_pickle=False) as z:
        return {name: z[name] for name in z.files}


def _read_jsonl(f):
    return [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]


# ---- running the command --------------------------------------------------------------------

def _thread(fn, *args):
    box = {}

    def body():
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # handed to the caller after the process ends
            box["error"] = e

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, box


class _PipeWriter:
    """The write end of a pipe for numpy's writers. When the reader went away (the command
    failed early), the first write raises BrokenPipeError to stop numpy, and later writes
    (zipfile finishing its archive from a finalizer) are dropped instead of failing again."""

    def __init__(self, f):
        self.f = f
        self.broken = False

    def write(self, b):
        if self.broken:
            return len(b)
        try:
            return self.f.write(b)
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET):
                raise
            self.broken = True
            raise BrokenPipeError(errno.EPIPE, "the command stopped reading") from None

    def read(self, n=-1):  # numpy's savez takes only objects with read() for files
        raise io.UnsupportedOperation("a pipe's write end")

    def flush(self):
        if not self.broken:
            try:
                self.f.flush()
            except OSError:
                self.broken = True


def _writer(fobj, write):
    """write() into fobj, then close it. A reader that went away is no error here: the exit
    code says what happened."""
    pw = _PipeWriter(fobj)
    try:
        write(pw)
        pw.flush()
    except BrokenPipeError:
        pass
    finally:
        pw.broken = True
        try:
            fobj.close()
        except OSError:
            pass


def _savez(arrays):
    return lambda f: np.savez(f, **arrays)


def _save(array):
    return lambda f: np.save(f, array, allow_pickle=False)


def _execute(binary, argv, stdin=None, read_stdout=None, feeds=(), report=True, quiet=True,
             quiet_flag=True, timeout=None):
    """Run `binary argv...`. stdin(f) writes the process's stdin; read_stdout(f) parses its
    stdout; feeds is a list of (flag, writer): each writer's bytes go through a pipe of their
    own, named /dev/fd/N after flag. report: pass --report-fd and parse the JSON. quiet: keep
    the command's stderr (else it is copied to sys.stderr), and pass --quiet if quiet_flag.
    Returns (parsed stdout, report dict or None); raises FastropeError on a non-zero exit, with
    .output set to what read_stdout made of stdout, when it could."""
    argv = list(argv)
    child_fds, our_fds, feeders = [], [], []
    try:
        for flag, write in feeds:
            r, w = os.pipe()
            our_fds += [r, w]
            child_fds.append(r)
            feeders.append((w, write))
            argv += [flag, f"/dev/fd/{r}"]
        rep_r = None
        if report:
            rep_r, rep_w = os.pipe()
            our_fds += [rep_r, rep_w]
            child_fds.append(rep_w)
            argv += ["--report-fd", str(rep_w)]
        if quiet and quiet_flag:
            argv.append("--quiet")
        full = [binary] + argv
        proc = subprocess.Popen(full, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=child_fds)
    except BaseException:
        for fd in our_fds:
            os.close(fd)
        raise
    # The child has its own copies; ours of the ends it uses must go, or no pipe ever ends.
    for fd in child_fds:
        os.close(fd)
    writers = []
    if stdin:
        writers.append(_thread(_writer, proc.stdin, stdin))
    for w, write in feeders:
        writers.append(_thread(_writer, os.fdopen(w, "wb"), write))
    report_f = os.fdopen(rep_r, "rb") if report else None
    t_report = _thread(report_f.read) if report else (None, {"value": b""})
    t_err = _thread(proc.stderr.read)

    def consume(f):
        try:
            return read_stdout(f) if read_stdout else None
        finally:
            f.read()  # drain what is left, so the command never blocks on a full pipe

    t_out = _thread(consume, proc.stdout)
    try:
        proc.wait(timeout=timeout)
    except BaseException:  # a timeout or KeyboardInterrupt: leave no process behind
        proc.kill()
        proc.wait()
        raise
    finally:
        for t, _ in writers + [t_report, t_err, t_out]:
            if t:
                t.join()
        if report_f:
            report_f.close()
        proc.stdout.close()
        proc.stderr.close()
    stderr = t_err[1].get("value", b"").decode(errors="replace")
    if not quiet and stderr:
        sys.stderr.write(stderr)
    if proc.returncode != 0:
        err = FastropeError(stderr.strip() or f"{' '.join(full)} failed", proc.returncode, full)
        err.output = t_out[1].get("value")
        raise err
    for _, box in writers + [t_report, t_out]:
        if "error" in box:
            raise box["error"]
    text = t_report[1]["value"].decode()
    return t_out[1].get("value"), (json.loads(text) if text.strip() else None)


def _split_own(options):
    own = {k: options.pop(k) for k in list(options) if k in _OWN}
    return (find_binary(own.get("binary")), own.get("timeout"), own.get("quiet", True),
            [str(a) for a in own.get("extra_args", ())])


def _inputs(q, k, v):
    return {"q": _array("q", q), "k": _array("k", k), "v": _array("v", v)}


def _w_feed(w):
    """How W reaches the command: a path as it is, an array through a pipe."""
    if w is None:
        return [], []
    if isinstance(w, (str, os.PathLike)):
        return ["-w", os.fspath(w)], []
    return [], [("-w", _save(_array("w", w)))]


def run(q, k, v, w=None, **options):
    """Attention T = softmax(tau Q_i W_{j-i} K_j^T) V over the last two axes.

    w: None (the rotation from the options: RoPE by default), an explicit W array
    [2n-1, d, d] (or with q's leading axes in front), or the path of a W file.
    Options: causal, window, method, eps, degree, max_degree, scale, rope, rope_base,
    rope_pairs, rope_scale, rotary_dim, rope_clip, no_rope, check_rows, dtype, strict;
    binary, timeout (seconds), quiet (False: fastrope's summary goes to sys.stderr),
    extra_args (further raw flags). Returns (out, report): out has q's leading axes and
    [n, dv]; report is the JSON report as a dict.
    """
    binary, timeout, quiet, extra = _split_own(options)
    flags = _flags("run", options)
    arrays = _inputs(q, k, v)
    wflags, feeds = _w_feed(w)
    argv = ["run", "--input", "-", "-o", "-"] + flags + wflags + extra
    return _execute(binary, argv, stdin=_savez(arrays), read_stdout=_read_npy, feeds=feeds,
                    quiet=quiet, timeout=timeout)


def grad(q, k, v, dout=None, target=None, w=None, **options):
    """Gradients of attention: give dout (G = dL/dT, the shape of the output) or target E
    (L = 1/2 ||T - E||^2, so G = T - E; the report then has "loss"). Returns (grads, report):
    grads holds dq, dk, dv and out (and dw with grad_w=True and an explicit w). Options as for
    run(), plus grad_w; no strict."""
    if (dout is None) == (target is None):
        raise TypeError("fastrope.grad() needs exactly one of dout= and target=")
    binary, timeout, quiet, extra = _split_own(options)
    flags = _flags("grad", options)
    arrays = _inputs(q, k, v)
    wflags, feeds = _w_feed(w)
    if dout is not None:
        feeds.append(("--dout", _save(_array("dout", dout))))
    else:
        feeds.append(("--target", _save(_array("target", target))))
    argv = ["grad", "--input", "-", "-o", "-"] + flags + wflags + extra
    return _execute(binary, argv, stdin=_savez(arrays), read_stdout=_read_npz, feeds=feeds,
                    quiet=quiet, timeout=timeout)


def check(paths, **options):
    """`fastrope check PATHS --format jsonl`: one dict per line of its output. paths: a path
    (file or folder) or a list of them. Exit code 4 (some dump missed the accuracy) still
    returns the rows, which say which; other failures raise FastropeError."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    binary, timeout, quiet, extra = _split_own(options)
    flags = _flags("check", options)
    argv = ["check"] + paths + ["--format", "jsonl"] + flags + extra
    try:
        rows, _ = _execute(binary, argv, read_stdout=_read_jsonl, report=False, quiet=quiet,
                           quiet_flag=False, timeout=timeout)
    except FastropeError as e:
        if e.returncode == 4 and e.output:
            return e.output
        raise
    return rows
