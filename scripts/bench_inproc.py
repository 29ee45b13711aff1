"""bench_inproc.py - what calling fastrope in-process (fastrope.attention, ctypes) costs against
the pipe helper (fastrope.run, one process per call), in one run.

1. Many small calls: --calls in-process calls at n = 64, d = 4 (issue 19's target: 1000 in
   at most 0.3 s), for method auto and exact, against --pipe-calls pipe calls (per call and
   extrapolated to --calls). Best of --repeat (one run when it takes over 5 s).
2. Peak memory of one large call: n = 2^20, d = 8, polyrope (target: at most the inputs plus
   the output plus 10%). Each is measured in a child process of its own: its high-water
   resident size (getrusage's ru_maxrss) after the call, minus the same child's before the
   inputs were made (the interpreter, numpy and the library loaded); the pipe helper's is the
   command's own peak (RUSAGE_CHILDREN in its child). With --grad, also one backward call
   (fastrope.attention_grad with dout: inputs q, k, v, dout; outputs dq, dk, dv and out).

    FASTROPE=build/fastrope PYTHONPATH=scripts python3 scripts/bench_inproc.py [--quick]
"""
import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

import fastrope


def small_calls(calls, pipe_calls, repeat, n, d):
    rng = np.random.default_rng(1)
    q, k, v = (rng.uniform(-1, 1, (n, d)) for _ in range(3))
    rows = []
    for method in ("auto", "exact"):
        fastrope.attention(q, k, v, method=method)  # the library loaded, caches warm
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(calls):
                out, info = fastrope.attention(q, k, v, method=method)
            best = min(best, time.perf_counter() - t0)
            if best > 5:  # long enough to be steady: the other repeats would only take time
                break
        ran = info["method"]
        fastrope.run(q, k, v, method=method)
        pbest = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(pipe_calls):
                pout, rep = fastrope.run(q, k, v, method=method)
            pbest = min(pbest, time.perf_counter() - t0)
        assert np.array_equal(out, pout), "in-process and pipe results differ"
        rows.append((method, ran, best, pbest / pipe_calls * calls))
    print(f"{calls} calls at n = {n}, d = {d} (best of {repeat}; the pipe helper timed over "
          f"{pipe_calls} calls and scaled to {calls})")
    print("%-7s %-7s %12s %12s %12s %9s" % ("method", "ran", "in-process s", "per call ms",
                                            "pipe s", "ratio"))
    for method, ran, t, p in rows:
        print("%-7s %-7s %12.3f %12.3f %12.2f %8.0fx" % (method, ran, t, t / calls * 1e3, p,
                                                         p / t))
    return rows


def child_memory(mode, n, d, degree):
    """In a child: the high-water RSS the call added beyond the interpreter's, and the sizes
    of the inputs and the output (bytes)."""
    import fastrope_capi
    fastrope_capi.library()
    degree = {} if degree is None else {"degree": degree}
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rng = np.random.default_rng(2)
    q, k, v = (rng.uniform(-0.4, 0.4, (n, d)) for _ in range(3))
    inputs = q.nbytes + k.nbytes + v.nbytes
    t0 = time.perf_counter()
    if mode == "inproc-grad":
        dout = rng.uniform(-1, 1, (n, d))
        inputs += dout.nbytes
        t0 = time.perf_counter()
        g, info = fastrope.attention_grad(q, k, v, dout=dout, method="polyrope", **degree)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        print(json.dumps({"peak": peak, "inputs": inputs,
                          "output": sum(x.nbytes for x in g.values()),
                          "method": info["method"], "degree": info["degree"],
                          "seconds": time.perf_counter() - t0}))
        return
    if mode == "inproc":
        out, info = fastrope.attention(q, k, v, method="polyrope", **degree)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        method, deg = info["method"], info["degree"]
    else:
        out, rep = fastrope.run(q, k, v, method="polyrope", **degree)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        method, deg = rep["method"], rep["poly"]["degree"]
    secs = time.perf_counter() - t0
    print(json.dumps({"peak": peak, "inputs": inputs, "output": out.nbytes, "method": method,
                      "degree": deg, "seconds": secs}))


def memory(n, d, degree, pipe, grad):
    rows = []
    for mode in ("inproc",) + (("pipe",) if pipe else ()) + (("inproc-grad",) if grad else ()):
        r = subprocess.run([sys.executable, __file__, "--child", mode, "--mem-n", str(n),
                            "--mem-d", str(d)] + ([] if degree is None else
                                                  ["--degree", str(degree)]),
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"bench_inproc.py: the {mode} child failed: {r.stderr.strip()}")
        rows.append((mode, json.loads(r.stdout.splitlines()[-1])))
    print(f"\npeak memory of one call at n = {n}, d = {d}, polyrope degree {rows[0][1]['degree']} "
          "(MB = 2^20 bytes)")
    print("%-22s %10s %10s %10s %9s %9s" % ("", "peak MB", "inputs MB", "output MB",
                                              "peak/(in+out)", "seconds"))
    for mode, m in rows:
        name = {"inproc": "in-process (above base)", "pipe": "pipe helper's command",
                "inproc-grad": "in-process backward"}[mode]
        io_ = m["inputs"] + m["output"]
        print("%-22s %10.1f %10.1f %10.1f %9.3f %9.1f" % (name, m["peak"] / 2**20,
                                                           m["inputs"] / 2**20,
                                                           m["output"] / 2**20,
                                                           m["peak"] / io_, m["seconds"]))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--pipe-calls", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mem-n", type=int, default=1 << 20)
    ap.add_argument("--mem-d", type=int, default=8)
    ap.add_argument("--degree", type=int, help="polyrope's degree (default: its own choice)")
    ap.add_argument("--no-pipe-memory", action="store_true",
                    help="skip the command's peak memory (it repeats the large call)")
    ap.add_argument("--grad", action="store_true",
                    help="also the peak memory of one backward call in-process")
    ap.add_argument("--child", choices=("inproc", "pipe", "inproc-grad"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child_memory(a.child, a.mem_n, a.mem_d, a.degree)
        return
    if a.quick:
        a.calls, a.pipe_calls, a.repeat, a.mem_n = 50, 5, 1, 1 << 14
    small_calls(a.calls, a.pipe_calls, a.repeat, 64, 4)
    memory(a.mem_n, a.mem_d, a.degree, not a.no_pipe_memory, a.grad)


if __name__ == "__main__":
    main()
