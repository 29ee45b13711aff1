"""reproduce.sh --quick runs end to end and its results say what they must: every experiment
has its table, the a-priori bound holds on every row, and plots exist when matplotlib does."""
import csv
import os
import subprocess

from frtest import FASTROPE, run_all, test, tmpdir

HERE = os.path.dirname(os.path.abspath(__file__))


@test
def reproduce_quick_end_to_end():
    out = os.path.join(tmpdir(), "results")
    r = subprocess.run(["sh", os.path.join(HERE, "reproduce.sh"), "--quick", "--out", out],
                       capture_output=True, text=True, env=dict(os.environ, FASTROPE=FASTROPE),
                       timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    md = open(os.path.join(out, "results.md")).read()
    for k in range(1, 6):
        assert f"## {k}." in md, f"experiment {k} missing"
    for name in ("degree_vs_B", "degree_vs_n", "error_vs_bound", "threshold", "scaling",
                 "grad_error"):
        assert os.path.exists(os.path.join(out, name + ".csv")), name
    try:
        import matplotlib  # noqa: F401
        for name in ("degree_vs_B", "error_vs_bound", "threshold", "scaling"):
            assert os.path.getsize(os.path.join(out, name + ".png")) > 1000, name
    except ImportError:
        assert "matplotlib is not installed" in r.stderr
    with open(os.path.join(out, "error_vs_bound.csv")) as f:
        rows = [row for row in csv.DictReader(f) if row["observed"]]
    assert rows, "no error measured"
    for row in rows:
        assert float(row["observed"]) <= float(row["bound"]), row
    with open(os.path.join(out, "degree_vs_B.csv")) as f:
        degs = [int(row["degree"]) for row in csv.DictReader(f) if row["degree"]]
    assert degs and min(degs) < max(degs)


run_all()
