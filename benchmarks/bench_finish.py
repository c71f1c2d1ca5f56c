"""Rank 0's end of a CLI run per unit: build cv_results, write cv_results.json/.csv and best.json.

Peers, interleaved in one process on the same synthetic unit records (5 splits, the records rank 0
holds at the end of a run):

* ``before``: the per-value writer this replaced (benchmarks/_old_output.py, kept as the peer);
* ``after``: hpcml.cv.output.write_cv_results (bulk columns, hpcml.cv.columns);
* ``folded``: hpcml.cv.accrue.ResultColumns, in two parts: ``arrival`` (``add`` of every unit, what
  rank 0's observer does as results arrive, between requests) and ``final`` (``finish``: means, stds,
  ranks, ``param_*`` columns, the texts, written with best.json: what is left after the last unit).

``before`` and ``after`` build ``cv_results`` with hpcml.cv.reduce.build_cv_results (scikit-learn's
``_format_results``), timed separately as ``format``.  CPU (process time) and wall per unit; load
average recorded (shared machine: the ratio of the interleaved peers is what counts).  Outputs are
checked byte-identical in every round.

    nice -n -15 python benchmarks/bench_finish.py --units 20000 100000 163840 --repeat 3 \
        --json benchmarks/results/finish_cost.json --plot benchmarks/results/finish_cost.png
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import _common as C
import _old_output as old

from hpcml.cv import output
from hpcml.cv.accrue import ResultColumns
from hpcml.cv.reduce import best_candidate, build_cv_results

N_SPLITS = 5


def records(n_units: int) -> tuple[list[dict], list[dict], list[str]]:
    """Candidate-major unit results (distinct scores), candidate params and model names."""
    n_cand = n_units // N_SPLITS
    out = [{"test_scores": {"score": (u % 997) / 997}, "fit_time": 0.5 + u * 1e-7, "score_time": 0.01,
            "n_test_samples": 100, "fit_error": None} for u in range(n_cand * N_SPLITS)]  # fmt: skip
    params = [{"C": float(i), "gamma": 1e-3, "kernel": "rbf"} for i in range(n_cand)]
    return out, params, ["svc"] * n_cand


def _timed(fn) -> tuple[float, float, object]:  # noqa: ANN001
    c0, w0 = time.process_time(), time.perf_counter()
    value = fn()
    return time.process_time() - c0, time.perf_counter() - w0, value


def one(n_units: int, folder: str) -> dict:
    """One interleaved round: format, then the old and the new writer on the same cv_results."""
    out, params, models = records(n_units)
    f_cpu, f_wall, results = _timed(lambda: build_cv_results(params, N_SPLITS, out, False, models, ["score"]))

    def before() -> tuple[str, str]:
        texts = old.cv_results_texts(results)
        for name, text in zip((output.CV_RESULTS_JSON, output.CV_RESULTS_CSV), texts):
            output.atomic_write(os.path.join(folder, name), text)
        output.write_json(folder, output.BEST_JSON, best_candidate(results, "score"))
        return texts

    def after() -> None:
        output.write_cv_results(folder, results)
        output.write_json(folder, output.BEST_JSON, best_candidate(results, "score"))

    columns = ResultColumns(params, N_SPLITS, models, ["score"], False)

    def arrival() -> None:
        for unit, result in enumerate(out):
            columns.add(unit, result)

    def final() -> None:
        folded = columns.finish()
        assert folded is not None, columns.failed
        output.write_cv_texts(folder, folded[1], folded[2])
        output.write_json(folder, output.BEST_JSON, best_candidate(folded[0], "score"))

    b_cpu, b_wall, texts = _timed(before)
    a_cpu, a_wall, _ = _timed(after)
    _check_bytes(folder, texts, "the bulk writer's")
    r_cpu, r_wall, _ = _timed(arrival)
    z_cpu, z_wall, _ = _timed(final)
    _check_bytes(folder, texts, "the folded columns'")
    n = len(out)
    return {"format": (f_cpu / n, f_wall / n), "before": (b_cpu / n, b_wall / n), "after": (a_cpu / n, a_wall / n),
            "arrival": (r_cpu / n, r_wall / n), "final": (z_cpu / n, z_wall / n)}  # fmt: skip


def _check_bytes(folder: str, texts: tuple[str, str], whose: str) -> None:
    with open(os.path.join(folder, output.CV_RESULTS_JSON), encoding="utf-8") as fh:
        same = fh.read() == texts[0]
    with open(os.path.join(folder, output.CV_RESULTS_CSV), encoding="utf-8", newline="") as fh:
        same = same and fh.read() == texts[1]
    if not same:
        raise SystemExit(f"bench_finish: {whose} bytes differ from the old writer's")


def run(n_units: int, repeat: int) -> dict:
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            rounds.append(one(n_units, tmp))
            print(n_units, rounds[-1], file=sys.stderr, flush=True)
    peers = {}
    for key in ("format", "before", "after", "arrival", "final"):
        cpu = C.summary([r[key][0] for r in rounds])
        wall = C.summary([r[key][1] for r in rounds])
        peers[key] = {"per_unit_cpu_median": cpu["median"], "per_unit_wall_median": wall["median"],
                      "per_unit_cpu": cpu, "per_unit_wall": wall}  # fmt: skip
    keys = ("format", "before", "after", "arrival", "final")
    fmt, bef, aft, arr, fin = (peers[k]["per_unit_cpu_median"] for k in keys)
    return {"units": n_units, "repeat": repeat, "peers": peers, "finish_before": fmt + bef,
            "finish_after": fmt + aft, "write_speedup": bef / aft, "finish_speedup": (fmt + bef) / (fmt + aft),
            "arrival_folded": arr, "finish_folded": fin, "folded_final_speedup": (fmt + aft) / fin,
            "folded_total_ratio": (arr + fin) / (fmt + aft), "bytes_identical": True}  # fmt: skip


def plot(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["results"]
    fig, ax = plt.subplots(figsize=(8, 4))
    xs = range(len(rows))
    width = 0.2
    bars = (
        ("finish_before", "end: format + old writer"),
        ("finish_after", "end: format + bulk writer (full path)"),
        ("finish_folded", "end: folded columns (final)"),
        ("arrival_folded", "folded: as results arrive (during the run)"),
    )
    for i, (key, label) in enumerate(bars):
        values = [r[key] * 1e6 for r in rows]
        drawn = ax.bar([x + (i - 1.5) * width for x in xs], values, width, label=label,
                       hatch="//" if key == "arrival_folded" else None)  # fmt: skip
        ax.bar_label(drawn, labels=[f"{v:.1f}" for v in values], fontsize=7)
    ax.set_xticks(list(xs), [f"{r['units']:,} units" for r in rows])
    ax.set_ylabel("rank 0 CPU per unit (us)")
    ax.legend(fontsize=7)
    C.save_figure(fig, doc, "cv_results on rank 0 per unit: at the end vs folded as results arrive", path)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, nargs="+", default=[20000, 100000])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--plot", metavar="FILE.png")
    p.add_argument("--json", metavar="FILE.json")
    args = p.parse_args()
    doc = {"benchmark": "finish_cost", "environment": C.environment(), "params": vars(args)}
    doc["results"] = [run(n, args.repeat) for n in args.units]
    C.finish(doc, args, plot)


if __name__ == "__main__":
    main()
