"""fastrope_capi.py - the C library (libfastrope.so) through ctypes: where it is, its structs
mirrored field by field, and the prototypes of the functions the Python module calls.

This is the binding only: no policy, no option names. scripts/fastrope.py builds problems
from keywords on top of it. The mirrors must match core/fastrope.h exactly (a struct passed by
pointer with another layout is silent memory corruption): scripts/fastrope_test.py compiles a
small C program against the header and compares every size and offset with these.

The library: $FASTROPE_LIB, else libfastrope.so beside $FASTROPE (the build directory, or
../lib of an installed bin/fastrope), else build/ beside scripts/, else the system's
(ldconfig's libfastrope.so.0).
"""
import ctypes
import ctypes.util
import os

__all__ = ["FastropeError", "find_library", "library", "Problem", "Rotation", "Options",
           "Bounds", "PlanInfo", "ExecInfo", "Diff", "CostModel", "NMETHODS", "NGRADS",
           "NFFTS", "STATUS"]

# fr_status: the values are the command's exit codes.
STATUS = {0: "ok", 1: "internal or resource failure", 2: "usage", 3: "bad input",
          4: "accuracy not guaranteed", 5: "canceled"}
OK, ENOMEM, EUSAGE, EINPUT, EACCURACY, ECANCELED = range(6)

# Enumerations the mirrors need; method names are asked from the library (fr_method_name).
ROT_NONE, ROT_ROPE, ROT_CLIP, ROT_EXPLICIT = range(4)
PAIRS_INTERLEAVED, PAIRS_HALF = range(2)
F64, F32 = range(2)
NMETHODS = 5  # FR_NMETHODS: the length of fr_plan_info.predicted_s
NGRADS = 4    # FR_NGRADS: dq, dk, dv, dw
FFT_AUTO, FFT_KISSFFT, FFT_FFTW, FFT_FFTW_FLOAT = range(4)
NFFTS = 4     # FR_NFFTS: the length of fr_cost_model's per-back-end constants
GRAD_NAMES = ("dq", "dk", "dv", "dw")


class FastropeError(RuntimeError):
    """fastrope failed: message is its one-line error, returncode the status (the command's exit
    code: 1 internal, 2 usage, 3 bad input, 4 accuracy not guaranteed, 5 canceled)."""

    def __init__(self, message, returncode, argv=None):
        super().__init__(message)
        self.message = message
        self.returncode = returncode
        self.argv = argv

    def __str__(self):
        return f"{self.message} (exit code {self.returncode})"


# ---- the mirrored structs (core/fastrope.h) ----------------------------------------------------

c_int64, c_double, c_int = ctypes.c_int64, ctypes.c_double, ctypes.c_int
PROGRESS_FN = ctypes.CFUNCTYPE(c_int, ctypes.c_void_p, ctypes.c_char_p, c_double)


class Rotation(ctypes.Structure):
    _fields_ = [("kind", c_int), ("base", c_double), ("pairs", c_int), ("pos_scale", c_double),
                ("rotary_dim", c_int64), ("clip", c_int64),
                ("w", ctypes.POINTER(c_double)), ("w_count", c_int64),
                ("support_hint", c_int64), ("family", c_int)]


class Problem(ctypes.Structure):
    _fields_ = [("n", c_int64), ("d", c_int64), ("dv", c_int64), ("tau", c_double),
                ("rot", Rotation), ("causal", c_int), ("window", c_int64),
                ("batch", c_int64), ("kv_batch", c_int64)]


class Bounds(ctypes.Structure):
    _fields_ = [("B_q", c_double), ("B_k", c_double), ("B_v", c_double), ("B", c_double),
                ("B_over_sqrt_ln_n", c_double), ("R", c_double), ("R_from", ctypes.c_char_p),
                ("R_norm", c_double), ("R_abs", c_double)]


class Options(ctypes.Structure):
    _fields_ = [("method", c_int), ("eps", c_double), ("degree", c_int), ("max_degree", c_int),
                ("precision", c_int), ("fft", c_int), ("pool_bounds", c_int),
                ("cost", ctypes.c_void_p), ("progress", PROGRESS_FN),
                ("progress_user", ctypes.c_void_p)]


class PlanInfo(ctypes.Structure):
    _fields_ = [("method", c_int), ("reason", ctypes.c_char_p), ("degree", c_int),
                ("eta", c_double), ("poly_bound", c_double), ("rounding_bound", c_double),
                ("a_priori_bound", c_double), ("keys_exact", c_int64), ("rows_exact", c_int64),
                ("needed_degree", c_int), ("support", c_int64),
                ("alphas", c_int64), ("q_monomials", c_int64), ("k_monomials", c_int64),
                ("kernels", c_int64), ("ffts", c_int64), ("fft_size", c_int64),
                ("fft", c_int), ("fft_precision", ctypes.c_char_p), ("features", c_int64), ("predicted_s", c_double * NMETHODS),
                ("entry", c_int64), ("bounds", Bounds), ("fit_R", c_double),
                ("fit", Bounds), ("plans", c_int64)]


class ExecInfo(ctypes.Structure):
    _fields_ = [("rows_recomputed", c_int64), ("rounding_bound", c_double),
                ("a_priori_bound", c_double)]


class CostModel(ctypes.Structure):
    """fr_cost_model (core/fastrope_planner.h): the constants `fastrope calibrate` measures."""
    _fields_ = [("exact_0", c_double), ("exact_flop", c_double), ("exact_exp", c_double),
                ("rope_0", c_double), ("rope_row", c_double), ("rope", c_double),
                ("rope_causal", c_double), ("rope_window", c_double), ("fft_0", c_double),
                ("fft", c_double * NFFTS), ("acc", c_double * NFFTS)]


class Diff(ctypes.Structure):
    _fields_ = [("max_abs", c_double), ("max_rel", c_double), ("ref_max", c_double),
                ("count", c_int64)]


# What the layout test compares: C type name -> mirror.
MIRRORS = {"fr_rotation": Rotation, "fr_problem": Problem, "fr_bounds": Bounds,
           "fr_options": Options, "fr_plan_info": PlanInfo, "fr_exec_info": ExecInfo,
           "fr_diff": Diff, "fr_cost_model": CostModel}


# ---- finding and loading the library -----------------------------------------------------------

_NAME = "libfastrope.so"
_HERE = os.path.dirname(os.path.abspath(__file__))


def candidates():
    """Where the library is looked for, in order (paths that may not exist)."""
    out = []
    if os.environ.get("FASTROPE_LIB"):
        out.append(os.environ["FASTROPE_LIB"])
    if os.environ.get("FASTROPE"):
        bindir = os.path.dirname(os.path.abspath(os.environ["FASTROPE"]))
        out += [os.path.join(bindir, _NAME), os.path.join(bindir, "..", "lib", _NAME + ".0")]
    out.append(os.path.join(_HERE, "..", "build", _NAME))
    return out


def find_library():
    """The first existing candidate (a path), else the system's name (for dlopen), else None."""
    if os.environ.get("FASTROPE_LIB"):  # named explicitly: used or failed, never skipped
        return os.environ["FASTROPE_LIB"]
    for path in candidates():
        if os.path.exists(path):
            return os.path.normpath(path)
    return ctypes.util.find_library("fastrope")


P = ctypes.POINTER
_D = P(c_double)
_F = P(ctypes.c_float)
_PROTOTYPES = {
    # name: (restype, argtypes); the fr_status functions return c_int
    "fr_problem_default": (Problem, [c_int64, c_int64, c_int64]),
    "fr_problem_check": (c_int, [P(Problem), ctypes.c_char_p, ctypes.c_size_t]),
    "fr_options_default": (Options, []),
    "fr_method_name": (ctypes.c_char_p, [c_int]),
    "fr_method_parse": (c_int, [ctypes.c_char_p, P(c_int)]),
    "fr_fft_name": (ctypes.c_char_p, [c_int]),
    "fr_fft_parse": (c_int, [ctypes.c_char_p, P(c_int)]),
    "fr_find_nonfinite": (c_int64, [_D, c_int64]),
    "fr_bounds_compute": (c_int, [P(Problem), _D, _D, _D, P(Bounds), ctypes.c_char_p,
                                  ctypes.c_size_t]),
    "fr_bounds_compute_f32": (c_int, [P(Problem), _F, _F, _F, P(Bounds), ctypes.c_char_p,
                                      ctypes.c_size_t]),
    "fr_plan_create": (c_int, [P(ctypes.c_void_p), P(Problem), P(Bounds), P(Options),
                               ctypes.c_char_p, ctypes.c_size_t]),
    "fr_plan_get_info": (None, [ctypes.c_void_p, P(PlanInfo)]),
    "fr_plan_entry_info": (c_int, [ctypes.c_void_p, c_int64, P(PlanInfo)]),
    "fr_plan_free": (None, [ctypes.c_void_p]),
    "fr_execute": (c_int, [ctypes.c_void_p, _D, _D, _D, _D, P(ExecInfo), ctypes.c_char_p,
                           ctypes.c_size_t]),
    "fr_execute_backward": (c_int, [ctypes.c_void_p, _D, _D, _D, _D, _D, _D, _D, _D, _D, _D,
                                    _D, P(ExecInfo), ctypes.c_char_p, ctypes.c_size_t]),
    "fr_execute_f32": (c_int, [ctypes.c_void_p, _F, _F, _F, _F, P(ExecInfo), ctypes.c_char_p,
                               ctypes.c_size_t]),
    "fr_execute_backward_f32": (c_int, [ctypes.c_void_p, _F, _F, _F, _F, _F, _F, _F, _F, _F,
                                        _F, _F, P(ExecInfo), ctypes.c_char_p, ctypes.c_size_t]),
    "fr_check_rows": (c_int, [P(Problem), _D, _D, _D, _D, P(c_int64), c_int64, P(Diff),
                              P(Diff), ctypes.c_char_p, ctypes.c_size_t]),
    "fr_check_backward_rows": (c_int, [P(Problem), _D, _D, _D, _D, _D, _D, _D, _D, _D,
                                       P(c_int64), c_int64, P(Diff), P(Diff), ctypes.c_char_p,
                                       ctypes.c_size_t]),
}

_lib = None


def library():
    """The loaded library with its prototypes set (loaded once). OSError when there is none."""
    global _lib
    if _lib is None:
        path = find_library()
        if path is None:
            raise OSError(f"{_NAME} not found: build it (make), set $FASTROPE_LIB, or install "
                          f"it (make install); looked in {', '.join(candidates())}")
        lib = ctypes.CDLL(path)  # CDLL: the GIL is released during each call
        for name, (restype, argtypes) in _PROTOTYPES.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        lib.path = path
        _lib = lib
    return _lib


def _kinds(struct):
    """Each field of a mirrored struct with how to_dict converts it, from the field's C type
    (worked out once per struct: to_dict runs on every in-process call)."""
    if "_kinds" not in struct.__dict__:
        kinds = []
        for name, ctype in struct._fields_:
            if name in ("method", "fft", "predicted_s"):
                kinds.append((name, name))
            elif isinstance(ctype, type) and issubclass(ctype, ctypes.Structure):
                kinds.append((name, ctype))
            elif ctype is ctypes.c_char_p:
                kinds.append((name, "str"))
            elif isinstance(ctype, type) and issubclass(ctype, ctypes.Array):
                kinds.append((name, "list"))
            else:
                kinds.append((name, None))
        struct._kinds = kinds
    return struct._kinds


def to_dict(s, method_name):
    """A mirrored struct as a dict: strings decoded, nested structs as dicts, the method enum
    by name, predicted_s by method name (negative: not applicable, left out)."""
    out = {}
    for name, kind in _kinds(type(s)):
        x = getattr(s, name)
        if kind is None:
            pass
        elif kind == "method":
            x = method_name(x)
        elif kind == "fft":
            x = library().fr_fft_name(x).decode()
        elif kind == "predicted_s":
            x = {method_name(m): x[m] for m in range(NMETHODS) if x[m] >= 0}
        elif kind == "str":
            x = None if x is None else x.decode(errors="replace")
        elif kind == "list":
            x = list(x)
        else:
            x = to_dict(x, method_name)
        out[name] = x
    return out
