"""The evaluate stage's folder for another model (`evaluate.checkpoint`) names that model's weights and
the untrained twin's seed, so neither a retrained model in the same folder nor another seed reuses it."""

from bertforge.stages import _checkpoint, plan


def evaluate_folder(make_cfg, checkpoint, *overrides):
    cfg = make_cfg("evaluate", ["experiment=demo_ga", f"evaluate.checkpoint={checkpoint}", *overrides])
    return plan(cfg, "evaluate")[-1].output.folder


def test_new_weights_in_the_same_folder_or_another_seed_name_another_folder(make_cfg, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')
    (model / "model.safetensors").write_bytes(b"weights, first training")
    first = evaluate_folder(make_cfg, model)
    assert evaluate_folder(make_cfg, model) == first
    assert evaluate_folder(make_cfg, model, "training.seed=7") != first
    (model / "model.safetensors").write_bytes(b"weights, trained again")
    _checkpoint.cache_clear()  # one command resolves a checkpoint once; this test retrains between commands
    assert evaluate_folder(make_cfg, model) != first
