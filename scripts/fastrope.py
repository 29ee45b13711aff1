"""fastrope.py - RoPE attention from Python (numpy only): in-process through the C library, or
through the fastrope command and pipes.

    import fastrope
    out, info = fastrope.attention(q, k, v, causal=True, eps=1e-4)   # in-process (ctypes)
    grads, info = fastrope.attention_grad(q, k, v, dout=dout)        # grads["dq"], ["dk"], ...
    out, report = fastrope.run(q, k, v, causal=True, rope_pairs="half", eps=1e-4)   # a process
    grads, report = fastrope.grad(q, k, v, dout=dout)        # grads["dq"], ["dk"], ["dv"], ["out"]
    rows = fastrope.check(["dumps/"])                         # one dict per checked dump

q, k: [..., n, d], v: [..., n, dv]; leading axes are a batch and come back unchanged. Keyword
options are the command's flags: `causal=True` -> `--causal`, `rope_pairs="half"` ->
`--rope-pairs half`, `check_rows="all"` -> `--check-rows all`; False or None leaves a flag out,
and a keyword the command does not take raises TypeError before anything is started. A failure
raises FastropeError with fastrope's one-line message and its exit code (2 usage, 3 bad input,
4 accuracy not guaranteed, 1 internal); Ctrl-C raises Interrupted, which is both a
KeyboardInterrupt and a FastropeError (returncode 130), after stopping the work.

In-process (attention, attention_grad): the arrays go to libfastrope.so by pointer, without a
copy when they are C-contiguous float64; k and v may have fewer heads than q (grouped-query
attention, from the shapes). The library is found as fastrope_capi.find_library() says
($FASTROPE_LIB, beside $FASTROPE, build/ beside scripts/, the system's).

Through the command (run, grad, check): the inputs are written as an .npz bundle (numpy.savez,
straight into the process's stdin, in chunks: no second copy of the inputs), the output is read
from its stdout into the result array, and the JSON report arrives on a pipe of its own
(--report-fd). W and dout/target go through further pipes named /dev/fd/N. Every pipe is served
by its own thread, because with large tensors each side can block on another. The binary:
binary=..., else $FASTROPE, else `fastrope` on PATH, else ../build/fastrope next to this file.
"""
import ctypes
import errno
import functools
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import warnings

import numpy as np

import fastrope_capi as capi
from fastrope_capi import FastropeError

__all__ = ["attention", "attention_grad", "run", "grad", "check", "FastropeError",
           "Interrupted", "find_binary", "find_library"]

find_library = capi.find_library


class Interrupted(FastropeError, KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a call: the command was stopped, or the library canceled the
    run and freed everything. A KeyboardInterrupt, so that Ctrl-C still ends a script, and a
    FastropeError with returncode 130, the command's exit code for SIGINT."""


# ---- options ----------------------------------------------------------------------------------

# Keywords that are on/off flags; every other option takes a value.
_FLAGS = {"rope", "no_rope", "causal", "no_causal", "strict", "grad_w", "recursive", "per_head"}
# The attention options every computing command shares (cmd/attn.c), and the input limits.
_ATTENTION = {"rope", "rope_base", "rope_pairs", "rope_scale", "rotary_dim", "rope_clip",
              "no_rope", "preset", "scale", "causal", "no_causal", "window", "method", "eps",
              "degree", "max_degree", "fft"}
# The command's options about files (in-process calls read no inputs from files): the input
# limits, and the cost constants of `fastrope calibrate` (cost=FILE; by default the cache's),
# which the in-process calls read as the command does (_cost_model).
_LIMITS = {"max_elements", "max_bytes", "cost"}
# check's own options (format: the helper reads jsonl, and returns table and csv as text).
_CHECK = {"recursive", "names", "per_head", "format", "shard", "check_rows", "tol"}
_OPTIONS = {
    "run": _ATTENTION | _LIMITS | {"check_rows", "dtype", "strict"},
    "grad": _ATTENTION | _LIMITS | {"check_rows", "dtype", "grad_w"},
    "check": _ATTENTION | _LIMITS | _CHECK,
    # in-process: the limits are for files, which are not read here; out= and progress= are
    # the calls' own (a result array to fill, and a callback that can cancel)
    "attention": _ATTENTION | {"check_rows", "dtype", "strict", "out", "progress", "cost"},
    "attention_grad": _ATTENTION | {"check_rows", "dtype", "grad_w", "progress", "cost"},
}
# Keywords the pipe helper itself consumes.
_OWN = {"binary", "timeout", "quiet", "extra_args"}


def _check_keywords(fn, options, own=()):
    """TypeError for a keyword fn does not take, or a value of the wrong kind: before anything
    runs, like a misspelt argument of any Python function."""
    allowed = _OPTIONS[fn]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"fastrope.{fn}() got unexpected keyword argument(s) "
                        f"{', '.join(unknown)}; accepted: {', '.join(sorted(allowed | set(own)))}")
    for name, value in options.items():
        if value is None or value is False or name in ("out", "progress"):
            continue
        if name in _FLAGS:
            if value is not True:
                raise TypeError(f"{name}= takes True or False, not {value!r}")
        elif value is True or not isinstance(value, (str, int, float, np.integer, np.floating)):
            raise TypeError(f"{name}= takes a number or a string, not {value!r}")


def _flags(command, options):
    """The command-line flags for the keyword options; TypeError for anything not accepted."""
    _check_keywords(command, options, _OWN)
    args = []
    for name in sorted(options):  # sorted: the same call gives the same command line
        value = options[name]
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        args += [flag] if name in _FLAGS else [flag, str(value)]
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
    interrupted = False
    try:
        proc.wait(timeout=timeout)
    except KeyboardInterrupt:
        interrupted = True
        _interrupt(proc)
    except BaseException:  # a timeout: leave no process behind
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
    if interrupted:
        # The command's own exit code (130 once it handles SIGINT), or 130 when the signal
        # ended it (-2) or we had to kill it.
        rc = proc.returncode if proc.returncode > 0 else 130
        raise Interrupted(stderr.strip() or "fastrope: interrupted", rc, full)
    if proc.returncode != 0:
        err = FastropeError(stderr.strip() or f"{' '.join(full)} failed", proc.returncode, full)
        err.output = t_out[1].get("value")
        raise err
    for _, box in writers + [t_report, t_out]:
        if "error" in box:
            raise box["error"]
    text = t_report[1]["value"].decode()
    return t_out[1].get("value"), (json.loads(text) if text.strip() else None)


# How long a command stopped by SIGINT may take to remove its temporaries and exit.
_GRACE_S = 2.0


def _interrupt(proc):
    """Stop the command as Ctrl-C would have in a shell: SIGINT, so that it removes its
    temporaries and leaves its outputs as they were; SIGKILL if it has not ended after the
    grace period, or at a second Ctrl-C."""
    try:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=_GRACE_S)
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()


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
    Options: causal, window, method, eps, degree, max_degree, fft, scale, rope, rope_base,
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


def _check_values(options):
    """check's structured values as the command spells them: names={"q": "wq"} ->
    "q=wq", shard=(K, N) -> "K/N"."""
    names = options.get("names")
    if isinstance(names, dict):
        options["names"] = ",".join(f"{role}={name}" for role, name in names.items())
    shard = options.get("shard")
    if isinstance(shard, (tuple, list)) and len(shard) == 2:
        options["shard"] = f"{int(shard[0])}/{int(shard[1])}"


def check(paths, **options):
    """`fastrope check PATHS`: exactly check's options (recursive, names, per_head, format,
    shard and the attention options; see `fastrope check --help`), others raise TypeError.
    names may be a dict {"q": "wq", ...} and shard a pair (K, N). paths: a path (file or
    folder) or a list of them. Returns one dict per line of `--format jsonl` (the default), or
    check's text for format="table" or "csv". Exit code 4 (some dump missed the accuracy)
    still returns the rows, which say which; other failures raise FastropeError."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    binary, timeout, quiet, extra = _split_own(options)
    _check_values(options)
    fmt = options.pop("format", None) or "jsonl"
    flags = _flags("check", options)
    if fmt not in ("jsonl", "table", "csv"):
        raise ValueError(f"format= takes jsonl, table or csv, not {fmt!r}")
    read = _read_jsonl if fmt == "jsonl" else (lambda f: f.read().decode())
    argv = ["check"] + paths + ["--format", fmt] + flags + extra
    try:
        rows, _ = _execute(binary, argv, read_stdout=read, report=False, quiet=quiet,
                           quiet_flag=False, timeout=timeout)
    except FastropeError as e:
        if e.returncode == 4 and e.output and not isinstance(e, Interrupted):
            return e.output
        raise
    return rows


# ---- in-process: the library through ctypes -----------------------------------------------------

_ERRLEN = 512
_PRESETS = ("paper", "llama", "neox", "gptj")
_PAIRS = {"interleaved": capi.PAIRS_INTERLEAVED, "half": capi.PAIRS_HALF}
_ROPE_ONLY = ("rope_base", "rope_pairs", "rope_scale", "rotary_dim")


def _usage(message):
    return FastropeError("fastrope: " + message, capi.EUSAGE)


def _bad_input(message):
    return FastropeError("fastrope: " + message, capi.EINPUT)


def _number(name, value, low, high=math.inf, above=False, whole=False):
    """A keyword's number, in the range the command's option takes (cmd/attn.c's tables)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    ok = math.isfinite(x) and (x > low if above else x >= low) and x <= high
    if not ok or (whole and x != int(x)):
        kind = "a whole number" if whole else "a number"
        rng = f"{'>' if above else '>='} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")
        raise _usage(f"{name}={value!r}: not {kind} {rng}")
    return int(x) if whole else x


_codes = {}  # (parser, name) -> code: parsed once, not on every in-process call


# ---- the cost constants of `fastrope calibrate` (cmd/cost.c's file, read as the command does) ----

_COST_MAGIC = "fastrope-cost-model 1"
_COST_MAX_BYTES = 65536
# The constants by name, as the file spells them: (member, index or None, must be > 0).
_COST_FIELDS = {
    "exact_0": ("exact_0", None, False), "exact_flop": ("exact_flop", None, False),
    "exact_exp": ("exact_exp", None, False), "rope_0": ("rope_0", None, False),
    "rope_row": ("rope_row", None, False), "rope": ("rope", None, False),
    "rope_causal": ("rope_causal", None, True), "rope_window": ("rope_window", None, True),
    "fft_0": ("fft_0", None, False),
    "fft_kissfft": ("fft", capi.FFT_KISSFFT, False), "fft_fftw": ("fft", capi.FFT_FFTW, False),
    "fft_fftw-float": ("fft", capi.FFT_FFTW_FLOAT, False),
    "acc_kissfft": ("acc", capi.FFT_KISSFFT, False), "acc_fftw": ("acc", capi.FFT_FFTW, False),
    "acc_fftw-float": ("acc", capi.FFT_FFTW_FLOAT, False),
}
# Parsed files by (path, mtime, size): a loop of small calls reads its cost file once.
_cost_files = {}


@functools.lru_cache(maxsize=None)
def _cpu_model():
    """This CPU's model name as the command keys its cost file (cmd/cost.c's cli_cpu_model)."""
    try:
        with open("/proc/cpuinfo", errors="replace") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    name = line.split(":", 1)[1].lstrip(" \t").rstrip("\r\n")
                    return name or "unknown"
    except OSError:
        pass
    return "unknown"


@functools.lru_cache(maxsize=None)
def _omp_max_threads():
    """omp_get_max_threads of the library's OpenMP runtime (loaded with it), or None."""
    capi.library()
    try:
        return ctypes.CDLL("libgomp.so.1").omp_get_max_threads
    except (OSError, AttributeError):
        return None


def _threads():
    """The threads the library runs on (the command's omp_get_max_threads)."""
    fn = _omp_max_threads()
    return int(fn()) if fn else os.cpu_count() or 1


def _cost_cache_path():
    """The command's cache file: $XDG_CACHE_HOME/fastrope/cost-model (absolute
    XDG_CACHE_HOME), else ~/.cache/fastrope/cost-model (cmd/wisdom.c's cli_cache_dir)."""
    xdg, home = os.environ.get("XDG_CACHE_HOME", ""), os.environ.get("HOME", "")
    if xdg.startswith("/"):
        return os.path.join(xdg, "fastrope", "cost-model")
    return os.path.join(home, ".cache", "fastrope", "cost-model") if home else None


def _parse_cost(text):
    """(CostModel, cpu, threads) from a cost file's text, or a string saying why not."""
    model, cpu, threads, seen, magic = capi.CostModel(), None, None, set(), False
    for lineno, line in enumerate(text.split("\n"), 1):
        if len(line) >= 511:
            return f"line {lineno} is too long"
        if not line or line[0] == "#":
            continue
        if not magic:
            if line != _COST_MAGIC:
                return f"not a cost file (its first line is not '{_COST_MAGIC}')"
            magic = True
            continue
        key, sep, val = line.partition(" ")
        if not sep:
            return f"line {lineno} has no value"
        if key == "cpu":
            cpu = val
            continue
        try:  # strtod's whole string: no spaces around it, no digit separators
            x = float(val) if val == val.strip() and "_" not in val else None
        except ValueError:
            x = None
        if key == "threads":
            if x is None or not 1 <= x <= 1e6 or x != math.floor(x):
                return f"line {lineno}: threads '{val[:64]}' is not a whole number >= 1"
            threads = int(x)
            continue
        if key not in _COST_FIELDS:
            return f"line {lineno}: unknown constant '{key[:64]}'"
        member, index, positive = _COST_FIELDS[key]
        if x is None or not math.isfinite(x) or x < 0 or (positive and x == 0):
            return (f"line {lineno}: {key[:64]} = '{val[:64]}' is not a finite number "
                    f"{'>' if positive else '>='} 0")
        if index is None:
            setattr(model, member, x)
        else:
            getattr(model, member)[index] = x
        seen.add(key)
    if not magic:
        return "empty: not a cost file"
    for key in _COST_FIELDS:
        if key not in seen:
            return f"incomplete: no {key}"
    if not cpu or threads is None:
        return "incomplete: no cpu or threads line"
    return model, cpu, threads


def _read_cost(path):
    """_parse_cost of the file at path (cached while it is unchanged), or why not."""
    try:
        st = os.stat(path)
    except OSError as e:
        return e.strerror
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _cost_files:
        try:
            with open(path, "rb") as f:
                data = f.read(_COST_MAX_BYTES + 1)
        except OSError as e:
            return e.strerror
        if len(data) > _COST_MAX_BYTES or b"\0" in data:
            return "not a cost file"
        _cost_files.clear()  # one or two files in use: no growth with the calls
        _cost_files[key] = _parse_cost(data.decode("utf-8", errors="surrogateescape"))
    return _cost_files[key]


def _cost_model(path):
    """(CostModel or None, source) as the command settles them (cmd/cost.c's cli_cost_use):
    path, a cost file that must be one (FastropeError, bad input, otherwise), used with a
    warning when it was measured on another CPU or thread count; or, for None, the cache's
    file when it was measured on this CPU with this many threads, a broken or foreign one
    ignored with a warning; else the built-in constants (None). source is what the command's
    report says in plan.cost: "calibrated PATH" or "built-in"."""
    explicit = path is not None
    if not explicit:
        path = _cost_cache_path()
        if path is None or not os.path.exists(path):
            return None, "built-in"  # not calibrated
    else:
        path = os.fspath(path)
    got = _read_cost(path)
    if isinstance(got, str):
        if explicit:
            raise _bad_input(f"{path}: {got}")
        warnings.warn(f"fastrope: {path}: {got}; ignored, the built-in cost constants are used "
                      "(fastrope calibrate rewrites it)", stacklevel=4)
        return None, "built-in"
    model, cpu, threads = got
    here, nthreads = _cpu_model(), _threads()
    if cpu != here or threads != nthreads:
        if not explicit:
            warnings.warn(f"fastrope: {path} was measured on '{cpu}' with {threads} threads, "
                          f"not this '{here}' with {nthreads}; ignored, the built-in cost "
                          "constants are used (fastrope calibrate rewrites it)", stacklevel=4)
            return None, "built-in"
        warnings.warn(f"fastrope: {path} was measured on '{cpu}' with {threads} threads, not "
                      f"this '{here}' with {nthreads}: its predictions may be off", stacklevel=4)
    return model, "calibrated " + path


def _method_code(name):
    if isinstance(name, str) and ("method", name) in _codes:
        return _codes["method", name]
    lib = capi.library()
    code = ctypes.c_int()
    if lib.fr_method_parse(str(name).encode(), ctypes.byref(code)) != 0:
        names = ", ".join(lib.fr_method_name(m).decode() for m in range(capi.NMETHODS))
        raise _usage(f"method={name!r}: not one of {names}")
    if isinstance(name, str):
        _codes["method", name] = code.value
    return code.value


def _fft_code(name):
    if isinstance(name, str) and ("fft", name) in _codes:
        return _codes["fft", name]
    lib = capi.library()
    code = ctypes.c_int()
    if lib.fr_fft_parse(str(name).encode(), ctypes.byref(code)) != 0:
        names = ", ".join(lib.fr_fft_name(b).decode() for b in range(4))
        raise _usage(f"fft={name!r}: not one of {names}")
    if isinstance(name, str):
        _codes["fft", name] = code.value
    return code.value


@functools.lru_cache(maxsize=None)
def _method_name(code):
    return capi.library().fr_method_name(code).decode()


class _Attention:
    """The attention keywords as the command reads them (cmd/attn.c: at most one rotation, a
    preset's defaults under the explicit options, the same ranges), independent of shapes."""

    def __init__(self, opts):
        given = {k for k, x in opts.items() if x is not None and x is not False}
        clip = "rope_clip" in given
        if sum(("rope" in given, "no_rope" in given, clip, opts.get("_w") is not None)) > 1:
            raise _usage("give at most one rotation: rope, rope_clip, w or no_rope")
        self.kind = (capi.ROT_NONE if "no_rope" in given else capi.ROT_CLIP if clip
                     else capi.ROT_EXPLICIT if opts.get("_w") is not None else capi.ROT_ROPE)
        if self.kind in (capi.ROT_NONE, capi.ROT_EXPLICIT):
            for name in _ROPE_ONLY:
                if name in given:
                    raise _usage(f"{name} sets a parameter of RoPE, but "
                                 f"{'no_rope' if self.kind == capi.ROT_NONE else 'an explicit W'} "
                                 "has none: give one or the other")
        if "causal" in given and "no_causal" in given:
            raise _usage("causal and no_causal contradict each other")
        self.base = _number("rope_base", opts["rope_base"], 0, above=True) \
            if "rope_base" in given else 10000.0
        self.pos_scale = _number("rope_scale", opts["rope_scale"], 0, above=True) \
            if "rope_scale" in given else 1.0
        self.clip = _number("rope_clip", opts["rope_clip"], 0, whole=True) if clip else 0
        self.rotary_dim = 0
        if "rotary_dim" in given:
            self.rotary_dim = _number("rotary_dim", opts["rotary_dim"], 2, whole=True)
            if self.rotary_dim % 2:
                raise _usage(f"rotary_dim={self.rotary_dim}: not an even number >= 2 (RoPE "
                             "rotates pairs of coordinates)")
        pairs = opts.get("rope_pairs")
        if pairs is not None and pairs not in _PAIRS:
            raise _usage(f"rope_pairs={pairs!r}: not one of interleaved, half")
        preset = opts.get("preset")
        if preset is not None and preset not in _PRESETS:
            raise _usage(f"preset={preset!r}: not one of {', '.join(_PRESETS)}")
        scale = opts.get("scale")
        if scale is not None and scale not in ("paper", "sdpa"):
            scale = _number("scale", scale, 0, above=True)
        causal = "causal" in given
        # A model family's conventions, under the options given explicitly (apply_preset).
        if preset is not None:
            if pairs is None:
                pairs = "half" if preset in ("llama", "neox") else "interleaved"
            if scale is None:
                scale = "paper" if preset == "paper" else "sdpa"
            if "causal" not in given and "no_causal" not in given:
                causal = preset != "paper"
        self.pairs = _PAIRS[pairs or "interleaved"]
        self.scale = scale or "paper"
        self.causal = causal
        self.window = -1 if opts.get("window") is None else \
            _number("window", opts["window"], 0, whole=True)
        self.method = _method_code(opts.get("method") or "auto")
        if self.method == _method_code("exact") and "degree" in given:
            raise _usage("degree sets the polynomial of the fast methods; method exact has "
                         "none: give one or the other")
        self.eps = _number("eps", opts["eps"], 0, above=True) if "eps" in given else None
        self.degree = _number("degree", opts["degree"], 0, 64, whole=True) \
            if "degree" in given else None
        self.max_degree = _number("max_degree", opts["max_degree"], 0, 64, whole=True) \
            if "max_degree" in given else None
        self.fft = _fft_code(opts.get("fft") or "auto")

    def tau(self, d):
        if self.scale == "sdpa":
            return 1.0 / math.sqrt(d)
        return 1.0 / d if self.scale == "paper" else self.scale


def _shape(a):
    return "[" + ", ".join(str(x) for x in a.shape) + "]"


def _real(name, x):
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, not dtype {a.dtype}")
    return a


def _contiguous(a, dtype):
    """a as the library reads it: the same array (no copy) when it already is C-contiguous
    with this dtype, else a converted copy."""
    return np.ascontiguousarray(a, dtype=dtype)


def _kv_batch(q, k):
    """How many key/value problems k has, and whether q's problems can share them: the same
    leading axes, or grouped-query attention (k's heads, the last leading axis, dividing q's;
    HF's repeat_kv order), or one key/value problem for every query problem."""
    lq, lk = q.shape[:-2], k.shape[:-2]
    kv = int(np.prod(lk, dtype=np.int64))
    if lk == lq or kv == 1:
        return kv
    if len(lk) == len(lq) and lk[:-1] == lq[:-1] and lq[-1] % lk[-1] == 0:
        return kv
    raise _bad_input(f"k has shape {_shape(k)} but q has shape {_shape(q)}: k needs q's leading "
                     "axes, or fewer heads in the last leading axis (grouped-query attention: "
                     "q's heads a multiple of k's)")


def _load_w(w):
    """W from a file as the command takes it: a .npy tensor, or an .npz bundle's member w."""
    if not isinstance(w, (str, os.PathLike)):
        return w
    z = np.load(os.fspath(w), allow_pickle=False)
    if isinstance(z, np.ndarray):
        return z
    with z:
        return z["w"]


class _Plan:
    """A plan of the library, freed when dropped; it keeps W alive (the plan points at it)."""

    def __init__(self, lib, handle, w):
        self.lib, self.handle, self.w = lib, handle, w

    def info(self):
        pi = capi.PlanInfo()
        self.lib.fr_plan_get_info(self.handle, ctypes.byref(pi))
        return capi.to_dict(pi, _method_name)

    def free(self):
        if self.handle:
            self.lib.fr_plan_free(self.handle)
            self.handle = None

    __del__ = free

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()


class _Progress:
    """The library's progress callback, and the hook for canceling a run in-process: it calls
    progress(phase, fraction) when given, and returns non-zero, which makes the library stop
    and return FR_ECANCELED having freed everything, when that returns true, raises, or when
    Ctrl-C arrives. The library calls it from the thread that called it (OpenMP's thread 0),
    a few times a second inside every phase ("plan", "forward pass", "backward pass"), so
    Python's SIGINT handler runs inside it and the KeyboardInterrupt is caught here: the call
    stops within a fraction of a second and raises Interrupted."""

    def __init__(self, progress):
        self.progress = progress
        self.interrupted = False
        self.error = None
        self.previous = None
        self.fn = capi.PROGRESS_FN(self._call)

    # Around each library call (`with progress:`), Python's own SIGINT handler is replaced by
    # one that only records the signal: Python runs a signal's handler at the next bytecode,
    # which may be the callback's very first one, before any try could catch a
    # KeyboardInterrupt (ctypes would then print it and go on). A caller's own handler is left
    # alone; the except below covers it.
    def __enter__(self):
        if (threading.current_thread() is threading.main_thread() and
                signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, sig, frame):
        self.interrupted = True

    def __exit__(self, exc_type, exc, tb):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None
        if exc_type is None and self.interrupted:  # Ctrl-C came: the call stopped, or ended
            raise Interrupted("fastrope: interrupted", 130)

    def _call(self, user, phase, fraction):
        if self.interrupted:
            return 1
        try:
            if self.progress is not None and self.progress(phase.decode(), fraction):
                return 1
            return 0
        except KeyboardInterrupt:
            self.interrupted = True
        except BaseException as e:  # re-raised by the caller once the library has returned
            self.error = e
        return 1

    def raise_canceled(self, message):
        if self.interrupted:
            raise Interrupted("fastrope: interrupted (" + message + ")", 130)
        if self.error is not None:
            raise self.error
        raise FastropeError("fastrope: " + message, capi.ECANCELED)


def _check_count(n, want):
    """Rows checked against exact attention: 'all', a count, or the command's default (all when
    n <= 4096, else 256); cmd/job.c's job_check_count."""
    if want == "all":
        return n
    m = (n if n <= 4096 else 256) if want is None else _number("check_rows", want, 0, whole=True)
    return min(m, n)


def _sample_rows(n, m):
    """Evenly spaced rows with the first and the last (cmd/job.c's job_sample_rows)."""
    if m == 1:
        return np.zeros(1, np.int64)
    t = np.arange(m, dtype=np.float64)
    return (t * float(n - 1) / float(m - 1)).astype(np.int64)


@functools.lru_cache(maxsize=None)
def _exec_dtype():
    """fr_exec_info as a numpy record (made once: deriving it from the ctypes struct on every
    call cost more than a small problem's execution)."""
    return np.dtype(capi.ExecInfo)


class _Call:
    """One in-process call: the inputs as the library reads them, the problem and options, and
    the plan. attention() and attention_grad() use it once; fastrope_torch keeps one from the
    forward to the backward, so that the backward differentiates the method that ran."""

    def __init__(self, fn, q, k, v, w, options, backward=False):
        """backward: a backward will follow (attention_grad, or autograd), so the precision is
        one the library can differentiate in."""
        _check_keywords(fn, options)
        self.fn, self.lib = fn, capi.library()
        w = _load_w(w)
        self.attn = _Attention(dict(options, _w=w))
        self.progress = _Progress(options.get("progress"))
        arrays = [_real("q", q), _real("k", k), _real("v", v)]
        self._shapes(*arrays, w)
        # float32 in, float32 out: computed in single precision where the library can (its
        # single-precision plans, for the requested method and for a backward when one
        # follows), else in double and rounded once at the end.
        f32 = all(a.dtype == np.float32 for a in arrays)
        self.single = f32 and _single_built("backward" if backward else "forward")
        dtype = options.get("dtype")
        if dtype not in (None, "f4", "float32", "f8", "float64"):
            raise _usage(f"dtype={dtype!r}: not one of f4, float32, f8, float64")
        self.out_dtype = np.dtype(np.float32 if (dtype in ("f4", "float32") or
                                                 (dtype is None and f32)) else np.float64)
        ctype = np.float32 if self.single else np.float64
        self.q, self.k, self.v = (_contiguous(a, ctype) for a in arrays)
        self.w = None if w is None else _contiguous(_real("w", w), np.float64)
        self.options = options
        self.problem = self._problem()

    def _shapes(self, q, k, v, w):
        for name, a in (("q", q), ("k", k), ("v", v)):
            if a.ndim < 2:
                raise _bad_input(f"{name} needs shape [..., n, {'dv' if name == 'v' else 'd'}], "
                                 f"got {_shape(a)}")
        if k.shape[-2:] != q.shape[-2:]:
            raise _bad_input(f"k has shape {_shape(k)} but q has shape {_shape(q)}; their n "
                             "and d must match")
        if v.shape[:-1] != k.shape[:-1]:
            raise _bad_input(f"v has shape {_shape(v)} but k has shape {_shape(k)}; v needs "
                             "[..., n, dv] with k's leading axes and n")
        if q.size == 0 or v.size == 0:
            raise _bad_input(f"empty problem: q has shape {_shape(q)} and v has shape "
                             f"{_shape(v)}")
        self.lead = q.shape[:-2]
        self.n, self.d = q.shape[-2:]
        self.dv = v.shape[-1]
        self.batch = int(np.prod(self.lead, dtype=np.int64))
        self.kv_batch = _kv_batch(q, k)
        self.w_count = 0
        if w is not None:
            ws = np.shape(w)
            lw = len(ws) - 3
            if lw < 0 or ws[lw:] != (2 * self.n - 1, self.d, self.d) or \
                    (lw and ws[:lw] != self.lead):
                raise _bad_input(f"W has shape [{', '.join(map(str, ws))}] but q has shape "
                                 f"{_shape(q)}: W needs [2n-1, d, d] = [{2 * self.n - 1}, "
                                 f"{self.d}, {self.d}] (optionally with q's leading axes in "
                                 "front)")
            self.w_count = self.batch if lw else 1

    def _problem(self):
        """fr_problem as the command builds it (cmd/job.c's job_problem)."""
        a, lib = self.attn, self.lib
        p = lib.fr_problem_default(self.n, self.d, self.dv)
        p.rot.kind, p.rot.base, p.rot.pairs = a.kind, a.base, a.pairs
        p.rot.pos_scale, p.rot.rotary_dim, p.rot.clip = a.pos_scale, a.rotary_dim, a.clip
        if self.w is not None:
            p.rot.w = self.w.ctypes.data_as(capi.P(ctypes.c_double))
            p.rot.w_count = self.w_count
        p.causal, p.window, p.tau = int(a.causal), a.window, a.tau(self.d)
        p.batch, p.kv_batch = self.batch, self.kv_batch
        rope = a.kind in (capi.ROT_ROPE, capi.ROT_CLIP)
        if rope and a.rotary_dim > self.d:
            raise _usage(f"rotary_dim={a.rotary_dim} is larger than d = {self.d} (q has shape "
                         f"{_shape(self.q)})")
        if rope and not a.rotary_dim and self.d % 2:
            raise _bad_input(f"RoPE rotates pairs of coordinates, but q has shape "
                             f"{_shape(self.q)} (d = {self.d} is odd); use rotary_dim or no_rope")
        err = ctypes.create_string_buffer(_ERRLEN)
        self._status(lib.fr_problem_check(ctypes.byref(p), err, _ERRLEN), err)
        return p

    def _status(self, st, err):
        if st == capi.ECANCELED:
            self.progress.raise_canceled(err.value.decode(errors="replace"))
        if st != capi.OK:
            raise FastropeError("fastrope: " + err.value.decode(errors="replace"), st)

    def _ptr(self, a):
        if a is None:
            return None
        return a.ctypes.data_as(capi.P(ctypes.c_float if a.dtype == np.float32
                                       else ctypes.c_double))

    def bounds(self):
        """Every problem's bounds (also the library's check of the inputs: finite values, and
        scores that do not overflow)."""
        b = (capi.Bounds * self.batch)()
        err = ctypes.create_string_buffer(_ERRLEN)
        compute = self.lib.fr_bounds_compute_f32 if self.single else self.lib.fr_bounds_compute
        st = compute(ctypes.byref(self.problem), self._ptr(self.q), self._ptr(self.k),
                     self._ptr(self.v), b, err, _ERRLEN)
        if st == capi.EINPUT:
            self._nonfinite()
        self._status(st, err)
        return b

    def _nonfinite(self):
        """The first NaN or infinity, as a numpy index (the library gives a flat one)."""
        for name, a in (("q", self.q), ("k", self.k), ("v", self.v)):
            flat = a.reshape(-1)
            i = self.lib.fr_find_nonfinite(self._ptr(flat.astype(np.float64, copy=False)),
                                           flat.size)
            if i >= 0:
                where = ", ".join(str(int(x)) for x in np.unravel_index(i, a.shape))
                what = "NaN" if np.isnan(flat[i]) else "an infinity"
                raise _bad_input(f"{name} has {what} at [{where}]")

    def plan(self, bounds):
        """The plan for these shapes, options and bounds (a _Plan: with, or free())."""
        a = self.attn
        opt = self.lib.fr_options_default()
        opt.method = a.method
        if a.eps is not None:
            opt.eps = a.eps
        if a.degree is not None:
            opt.degree = a.degree
        if a.max_degree is not None:
            opt.max_degree = a.max_degree
        opt.fft = a.fft
        opt.precision = capi.F32 if self.single else capi.F64
        opt.progress = self.progress.fn
        cost, self.cost_source = _cost_model(self.options.get("cost"))
        if cost is not None:  # read during fr_plan_create only, while cost is alive here
            opt.cost = ctypes.cast(ctypes.pointer(cost), ctypes.c_void_p)
        self.eps = opt.eps
        handle = ctypes.c_void_p()
        err = ctypes.create_string_buffer(_ERRLEN)
        with self.progress:
            st = self.lib.fr_plan_create(ctypes.byref(handle), ctypes.byref(self.problem),
                                         bounds, ctypes.byref(opt), err, _ERRLEN)
        if st == capi.EUSAGE and self.single:
            # A method the single-precision plans do not have: in double, on the same bounds
            # (the library bounds float data exactly as its double copy).
            self.single = False
            self.q, self.k, self.v = (x.astype(np.float64) for x in (self.q, self.k, self.v))
            return self.plan(bounds)
        self._status(st, err)
        return _Plan(self.lib, handle, self.w)

    def _info(self, plan, entries):
        """The plan's info (the worst problem's) with what the executions did: rows recomputed
        exactly (summed over the batch), the certified bounds (the largest), and per problem
        in info["exec"] (a numpy record array)."""
        info = plan.info()
        ex = np.frombuffer(entries, _exec_dtype())
        info["batch"], info["kv_batch"] = self.batch, self.kv_batch
        info["cost"] = self.cost_source
        info["rows_recomputed"] = int(ex["rows_recomputed"].sum())
        info["rounding_bound"] = float(ex["rounding_bound"].max())
        info["a_priori_bound"] = float(ex["a_priori_bound"].max())
        info["exec"] = ex
        return info

    def _new(self, shape, out=None):
        """A result array of the computation's dtype, or out when it is one already."""
        dtype = np.float32 if self.single else np.float64
        if out is None:
            return np.empty(shape, dtype)
        if not isinstance(out, np.ndarray) or out.shape != tuple(shape) or \
                out.dtype != dtype or not out.flags.c_contiguous or not out.flags.writeable:
            raise TypeError(f"out= must be a writeable C-contiguous {np.dtype(dtype).name} array "
                            f"of shape {tuple(shape)}")
        return out

    def forward(self, plan, out=None):
        """T for every problem, into a new array (or out); returns (T, info)."""
        t = self._new(self.lead + (self.n, self.dv), out)
        entries = (capi.ExecInfo * self.batch)()
        err = ctypes.create_string_buffer(_ERRLEN)
        execute = self.lib.fr_execute_f32 if self.single else self.lib.fr_execute
        with self.progress:
            st = execute(plan.handle, self._ptr(self.q), self._ptr(self.k), self._ptr(self.v),
                         self._ptr(t), entries, err, _ERRLEN)
        self._status(st, err)
        return t, self._info(plan, entries)

    def backward(self, plan, dout=None, target=None, want_out=True, grad_w=False):
        """dq, dk, dv (dk and dv summed over each group of grouped-query attention), T when
        want_out, dW when grad_w; returns (grads, info) with info["loss"] for a target."""
        dtype = np.float32 if self.single else np.float64
        up = dout if dout is not None else target
        name = "dout" if dout is not None else "target"
        up = _contiguous(_real(name, up), dtype)
        if up.shape != self.lead + (self.n, self.dv):
            raise _bad_input(f"{name} has shape {_shape(up)} but the output has shape "
                             f"[{', '.join(map(str, self.lead + (self.n, self.dv)))}]")
        g = {"dq": np.empty(self.q.shape, dtype), "dk": np.empty(self.k.shape, dtype),
             "dv": np.empty(self.v.shape, dtype)}
        if want_out:
            g["out"] = np.empty(up.shape, dtype)
        if grad_w:
            if self.w is None:
                raise _usage("grad_w needs an explicit W (w=)")
            g["dw"] = np.empty(self.w.shape, dtype)
        loss = (ctypes.c_float if self.single else ctypes.c_double)()
        entries = (capi.ExecInfo * self.batch)()
        err = ctypes.create_string_buffer(_ERRLEN)
        backward = self.lib.fr_execute_backward_f32 if self.single else \
            self.lib.fr_execute_backward
        with self.progress:
            st = backward(plan.handle, self._ptr(self.q), self._ptr(self.k), self._ptr(self.v),
                          self._ptr(up) if dout is not None else None,
                          self._ptr(up) if target is not None else None,
                          self._ptr(g.get("out")), self._ptr(g["dq"]), self._ptr(g["dk"]),
                          self._ptr(g["dv"]), self._ptr(g.get("dw")),
                          ctypes.byref(loss) if target is not None else None, entries, err,
                          _ERRLEN)
        self._status(st, err)
        info = self._info(plan, entries)
        info["loss"] = float(loss.value) if target is not None else None
        self.upstream = (name, up)
        return g, info

    # ---- the checks against exact attention (run's and grad's --check-rows) ------------------

    def check_forward(self, t, info):
        """info["error"]: t against exact attention on sampled rows, as run's report has it."""
        want = self.options.get("check_rows")
        m = _check_count(self.n, want) if want is not None or self.options.get("strict") else 0
        if info["method"] == "exact" or m == 0:
            info["error"] = None
            return
        rows = _sample_rows(self.n, m)
        every = capi.Diff()
        err = ctypes.create_string_buffer(_ERRLEN)
        q, k, v, t = (np.asarray(x, np.float64) for x in (self.q, self.k, self.v, t))
        st = self.lib.fr_check_rows(ctypes.byref(self.problem), self._ptr(q), self._ptr(k),
                                    self._ptr(v), self._ptr(t),
                                    rows.ctypes.data_as(capi.P(ctypes.c_int64)), m, None,
                                    ctypes.byref(every), err, _ERRLEN)
        self._status(st, err)
        info["error"] = {"rows_checked": m * self.batch, "max_abs": every.max_abs,
                         "max_rel": every.max_rel, "a_priori_bound": info["a_priori_bound"],
                         "eps": self.eps, "within_eps": every.max_abs <= self.eps}

    def check_backward(self, g, info):
        """info["error"]: the gradients against the exact ones on sampled rows (grad's)."""
        want = self.options.get("check_rows")
        m = 0 if want is None else _check_count(self.n, want)
        if info["method"] == "exact" or m == 0:
            info["error"] = None
            return
        full = m == self.n
        rows = None if full else _sample_rows(self.n, m)
        every = (capi.Diff * capi.NGRADS)()
        err = ctypes.create_string_buffer(_ERRLEN)
        name, up = self.upstream
        f64 = [None if x is None else np.asarray(x, np.float64)
               for x in (self.q, self.k, self.v, up, g["dq"], g["dk"], g["dv"], g.get("dw"))]
        q, k, v, up, dq, dk, dv, dw = f64
        st = self.lib.fr_check_backward_rows(
            ctypes.byref(self.problem), self._ptr(q), self._ptr(k), self._ptr(v),
            self._ptr(up) if name == "dout" else None, self._ptr(up) if name == "target" else None,
            self._ptr(dq), self._ptr(dk), self._ptr(dv), self._ptr(dw),
            None if full else rows.ctypes.data_as(capi.P(ctypes.c_int64)), m, None, every, err,
            _ERRLEN)
        self._status(st, err)
        info["error"] = {"rows_checked": m * self.batch, "eps": self.eps,
                         "a_priori_bound_out": info["a_priori_bound"]}
        for i, gname in enumerate(capi.GRAD_NAMES):
            info["error"][gname] = None if every[i].count == 0 else \
                {"max_abs": every[i].max_abs, "max_rel": every[i].max_rel}


_single = {}


def _single_built(what):
    """Whether the library runs single-precision plans forward, or also backward: asked
    once each, on a one-token exact problem."""
    if what not in _single:
        lib = capi.library()
        p = lib.fr_problem_default(1, 2, 1)
        opt = lib.fr_options_default()
        opt.method, opt.precision = _method_code("exact"), capi.F32
        handle = ctypes.c_void_p()
        err = ctypes.create_string_buffer(_ERRLEN)
        ok = lib.fr_plan_create(ctypes.byref(handle), ctypes.byref(p), None, ctypes.byref(opt),
                                err, _ERRLEN) == capi.OK
        x = (ctypes.c_float * 8)()
        if ok:
            _single["forward"] = lib.fr_execute_f32(handle, x, x, x, x, None, err,
                                                    _ERRLEN) == capi.OK
            _single["backward"] = lib.fr_execute_backward_f32(
                handle, x, x, x, x, None, None, x, x, x, None, None, None, err,
                _ERRLEN) == capi.OK
            lib.fr_plan_free(handle)
        else:
            _single["forward"] = _single["backward"] = False
    return _single[what]


def _as_out_dtype(x, dtype):
    return x if x.dtype == dtype else x.astype(dtype)


def attention(q, k, v, w=None, **options):
    """Attention T = softmax(tau Q_i W_{j-i} K_j^T) V in this process (libfastrope).

    q, k: [..., n, d], v: [..., n, dv]; leading axes are a batch (k and v may have fewer heads
    in the last leading axis: grouped-query attention, or one head for all). w: None (the
    rotation from the options), an explicit W [2n-1, d, d] (or with q's leading axes in
    front), or a W file. Options as `fastrope run`'s: causal, no_causal, window, method, eps,
    degree, max_degree, fft, scale, rope, no_rope, rope_clip, rope_base, rope_pairs, rope_scale,
    rotary_dim, preset, check_rows (default 0 here: no check, unless strict), dtype (default:
    float32 when q, k and v are, else float64), strict, cost (a `fastrope calibrate` cost file;
    default: the cache's, $XDG_CACHE_HOME/fastrope/cost-model, when it was measured on this CPU
    with this many threads, as the command); and out= (an array to fill: C-contiguous float64
    of the output's shape), progress= (a callable(phase, fraction); true cancels).

    Returns (out, info): info is the plan's description (method, reason, degree, eta, bounds,
    predicted_s, plans, ...; the worst problem's; cost: the constants auto's choice was
    predicted with, "calibrated PATH" or "built-in", as the command's report's plan.cost) with
    the executions' rows_recomputed (summed),
    a_priori_bound and rounding_bound (the largest), per problem in info["exec"], and with
    check_rows, info["error"] as run's report has it.
    """
    call = _Call("attention", q, k, v, w, options)
    with call.plan(call.bounds()) as plan:
        out, info = call.forward(plan, options.get("out"))
    call.check_forward(out, info)
    if options.get("strict") and info["error"] and not info["error"]["within_eps"]:
        raise FastropeError(f"fastrope: observed max error {info['error']['max_abs']:.3g} "
                            f"exceeds eps {call.eps:.3g} on {info['error']['rows_checked']} "
                            "checked rows (strict)", capi.EACCURACY)
    return _as_out_dtype(out, call.out_dtype), info


def attention_grad(q, k, v, dout=None, target=None, w=None, **options):
    """Gradients of attention in this process: give dout (G = dL/dT) or target E (L = 1/2
    ||T - E||^2, G = T - E; info["loss"] is the batch's L). Returns (grads, info): grads holds
    dq, dk, dv (dk, dv of k's and v's shapes: summed over each group under grouped-query
    attention), out, and dw with grad_w=True and an explicit w. The fast methods give the exact
    gradient of their own forward. Options as attention()'s and grad_w; no strict, no out."""
    if (dout is None) == (target is None):
        raise TypeError("fastrope.attention_grad() needs exactly one of dout= and target=")
    call = _Call("attention_grad", q, k, v, w, options, backward=True)
    with call.plan(call.bounds()) as plan:
        g, info = call.backward(plan, dout, target, grad_w=bool(options.get("grad_w")))
    call.check_backward(g, info)
    return {name: _as_out_dtype(x, call.out_dtype) for name, x in g.items()}, info
