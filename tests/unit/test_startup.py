"""hpcml.startup: phase marks, module counts, audited file accesses, the per-rank summary."""

from __future__ import annotations

import sys

from hpcml.startup import PHASES, Startup, process_age, summarize


def test_marks_accumulate_in_order_with_module_counts():
    st = Startup(count_files=False)
    assert st.phases["interpreter"] == process_age() or st.phases["interpreter"] > 0
    st.mark("mpi_init")
    st.mark("layout")
    record = st.as_dict()
    assert list(record["seconds"]) == ["interpreter", "mpi_init", "layout"]
    assert record["total"] == sum(record["seconds"].values())
    assert record["modules"]["layout"] == len(sys.modules)
    assert "files" not in record


def test_audit_hook_counts_imports_and_opens_until_plan(tmp_path, monkeypatch):
    (tmp_path / "hpcml_startup_probe_a.py").write_text("X = 1\n")
    (tmp_path / "hpcml_startup_probe_b.py").write_text("Y = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    st = Startup(count_files=True)
    before = dict(st.files)
    exec("import hpcml_startup_probe_a")  # an import statement: one audited import, source/bytecode opens
    with open(tmp_path / "hpcml_startup_probe_a.py") as fh:
        fh.read()
    st.mark("plan")  # counting stops here
    counted = dict(st.files)
    assert counted["import"] - before["import"] == 1
    assert counted["open"] - before["open"] >= 2
    exec("import hpcml_startup_probe_b")
    assert st.as_dict()["files"] == counted


def test_summary_median_max_and_slowest_rank():
    ranks = [
        {"seconds": {p: 1.0 for p in PHASES}, "total": 7.0, "modules": {}},
        {"seconds": {p: 3.0 for p in PHASES}, "total": 21.0, "modules": {}},
        {"seconds": {p: 2.0 for p in PHASES}, "total": 14.0, "modules": {}},
    ]
    out = summarize(ranks)
    assert out["median"] == {**{p: 2.0 for p in PHASES}, "total": 14.0}
    assert out["max"]["imports"] == 3.0 and out["slowest_rank"]["imports"] == 1
    assert out["per_rank"] is ranks
    two = summarize(ranks[:2])
    assert two["median"]["total"] == 14.0
