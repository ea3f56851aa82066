"""The comparison that ends a sweep reads at a glance: constant metrics named once, categories in sweep
order as bars, a vocabulary size at the size reached."""

import json

from bertforge.sweep_report import RESULT_FILE, write_comparison, x_axis


def _jobs(sweep_dir, jobs):
    """Write each job's result file as a finished Hydra job does (`jobs`: (overrides, metrics) in sweep order)."""
    for number, (overrides, metrics) in enumerate(jobs):
        (sweep_dir / str(number)).mkdir(parents=True)
        (sweep_dir / str(number) / RESULT_FILE).write_text(json.dumps(
            {"stage": "corpus", "overrides": overrides, "folders": {}, "metrics": metrics}))


def test_constant_metrics_are_named_once_above_the_table(tmp_path):
    _jobs(tmp_path, [(["experiment=demo_ga", f"filters={name}"],
                      {"corpus/documents_kept": kept, "corpus/lines_cut": 0, "corpus/kept_share": share})
                     for name, kept, share in [("none", 92, 1.0), ("length", 91, 0.99), ("gopher", 80, 0.87)]])
    table = write_comparison(tmp_path).read_text().splitlines()
    assert table[0] == "Same in every job: corpus/lines_cut 0"
    assert table[2] == "| filters | corpus/documents_kept | corpus/kept_share |"
    assert [row.split(" | ")[0] for row in table[4:]] == ["| none", "| length", "| gopher"]  # sweep order
    with open(tmp_path / "comparison.csv") as handle:  # the CSV keeps every column, for scripts
        assert handle.readline().strip() == "filters,corpus/documents_kept,corpus/lines_cut,corpus/kept_share"


def test_a_categorical_knob_is_drawn_in_sweep_order_and_a_size_at_the_size_reached():
    presets = [{"filters": name} for name in ("none", "length", "gopher", "c4")]
    results = [{"metrics": {}} for _ in presets]
    assert x_axis(["filters"], presets, results) == ("filters", "filters", ["none", "length", "gopher", "c4"], False)
    sizes = [{"tokenizer.vocab_size": str(size)} for size in (1000, 2000, 4000)]
    reached = [{"metrics": {"vocab/vocab_size": size}} for size in (1000, 2000, 3849)]
    assert x_axis(["tokenizer.vocab_size"], sizes, reached) == (
        "tokenizer.vocab_size", "vocabulary size (reached)", [1000.0, 2000.0, 3849.0], True)


def test_a_categorical_sweep_plots(tmp_path):
    _jobs(tmp_path, [([f"filters={name}"], {"corpus/documents_kept": kept}) for name, kept in
                     [("none", 92), ("length", 91), ("gopher", 80)]])
    write_comparison(tmp_path)
    assert (tmp_path / "comparison.png").stat().st_size > 1000


def test_downstream_scores_lead_the_plot_and_the_twins_close_it():
    from bertforge.sweep_report import _panel_rank

    metrics = ["vocab/unk_rate", "downstream/ga_upos.random_init.accuracy", "evaluate/trained.accuracy",
               "downstream/ga_parse.model.las", "pretrain/last_loss"]
    ordered = sorted(metrics, key=_panel_rank)
    assert ordered[0] == "downstream/ga_parse.model.las"
    assert ordered[-1] == "downstream/ga_upos.random_init.accuracy"
    assert ordered.index("pretrain/last_loss") < ordered.index("vocab/unk_rate")  # first headlines before fourth
