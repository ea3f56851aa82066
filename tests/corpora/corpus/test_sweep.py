"""`bertforge corpus -m ...` as a user runs it: one comparison table and one plot across the runs."""

import csv

from tests.bertforge.test_cli import sweep


def test_filter_preset_sweep_ends_in_one_table_and_plot(tmp_path, data_dir):
    work = tmp_path / "w"
    folder = sweep("corpus", "-m", "filters=none,gabert_doc,gopher", data_dir=data_dir, work=work)
    rows = list(csv.DictReader((folder / "comparison.csv").open()))
    assert [r["filters"] for r in rows] == ["none", "gabert_doc", "gopher"]
    kept = {r["filters"]: int(r["corpus/documents_kept"]) for r in rows}
    assert kept["none"] > kept["gabert_doc"] and kept["none"] > kept["gopher"]
    assert float(rows[0]["corpus/kept_share"]) == 1.0
    assert (folder / "comparison.png").stat().st_size > 5000
    assert "corpus/documents_kept" in (folder / "comparison.md").read_text()


def test_single_threshold_sweep(tmp_path, data_dir):
    work = tmp_path / "w"
    folder = sweep("corpus", "-m", "filters.quality.min_words=10,150,250", data_dir=data_dir, work=work)
    rows = list(csv.DictReader((folder / "comparison.csv").open()))
    kept = [int(r["corpus/documents_kept"]) for r in rows]
    assert [r["filters.quality.min_words"] for r in rows] == ["10", "150", "250"]
    assert kept[0] > kept[1] > kept[2]
