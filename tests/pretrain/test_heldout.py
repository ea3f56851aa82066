"""Held-out scoring (pretrain.heldout): the loss and accuracy of transformers' own dense head on the
same masks, for our layouts (sparse head) and for a masked LM we cannot split; the run's whole-word
masking honoured; one host sync per call. Training-time validation (pretrain.validation) runs on its
own schedule and its time is left out of throughput (pretrain.step_metrics)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import DistilBertConfig, DistilBertForMaskedLM

import pretrain.heldout as heldout
import pretrain.step_metrics as step_metrics
import pretrain.validation as validation
from pretrain.config import MaskingConfig
from pretrain.heldout import has_sparse_head, row_batches, score_heldout
from pretrain.masking import Masker
from pretrain.step_metrics import StepMetricsLogger
from pretrain.validation import HeldoutValidation
from tests.conftest import FakeClock
from tests.pretrain.test_module import SPECIAL, small_model

VOCAB, SEQ = 300, 64
FIRST_CONTINUATION = 150  # in WORD_STARTS, ids from here on continue a word (like WordPiece's "##")
WORD_STARTS = torch.arange(VOCAB) < FIRST_CONTINUATION


def heldout_rows(count: int = 12) -> torch.Tensor:
    """(count, SEQ) ids as the shards stage packs them: [CLS] first, a [SEP] between documents."""
    ids = torch.randint(5, VOCAB, (count, SEQ), generator=torch.Generator().manual_seed(0))
    ids[:, 0], ids[:, 40] = SPECIAL["cls"], SPECIAL["sep"]
    return ids


def masker_of(cfg: MaskingConfig) -> Masker:
    return Masker.from_config(cfg, SPECIAL, VOCAB, {SEQ: 62 / 64}, WORD_STARTS)


def distilbert() -> DistilBertForMaskedLM:
    """A masked LM that `encoder_and_head` cannot split: scored through its own full logits."""
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=VOCAB, dim=64, n_layers=2, n_heads=2, hidden_dim=128,
                              max_position_embeddings=SEQ, pad_token_id=0)
    return DistilBertForMaskedLM(config)


def dense_reference(model, batches, masker: Masker, seed: int, mask_draws: int) -> dict:
    """transformers' own masked-LM loss (labels: the targets) on the masks `masker` draws from `seed` (all rows
    at once in each draw: fewer than MASK_ROWS), scored a batch at a time."""
    loss_sum, correct, count = 0.0, 0, 0
    sizes = [len(ids) for ids in batches]
    with torch.no_grad():
        for draw in range(mask_draws):
            whole = masker(torch.cat(batches), heldout.mask_generator(seed, draw, 0, "cpu"))
            for ids, positions, targets in zip(*(t.split(sizes) for t in (whole.input_ids, whole.positions,
                                                                           whole.targets))):
                batch = SimpleNamespace(input_ids=ids, positions=positions, targets=targets,
                                        dense_labels=lambda ids=ids, p=positions, t=targets: torch.full_like(
                                            ids, -100).scatter(1, p, t))
                out = model.eval()(input_ids=batch.input_ids, labels=batch.dense_labels())
                loss_sum += out.loss.item() * batch.targets.numel()
                correct += (out.logits.argmax(-1).gather(1, batch.positions) == batch.targets).sum().item()
                count += batch.targets.numel()
    return {"loss": loss_sum / count, "accuracy": correct / count, "masked_tokens": count}


@pytest.mark.parametrize("arch", ["bert", "roberta", "modernbert", "distilbert"])
def test_scores_equal_transformers_dense_loss_on_the_same_masks(arch):
    model = distilbert() if arch == "distilbert" else small_model(arch)
    assert has_sparse_head(model) == (arch != "distilbert")
    batches = list(heldout_rows().split(5))  # 5, 5 and 2 rows
    masker = masker_of(MaskingConfig(ratio=0.3, whole_word=True, span_mean_len=2.0))
    expected = dense_reference(model, batches, masker, seed=3, mask_draws=2)
    if has_sparse_head(model):  # the split model must not need its full forward (the dense head)
        model.forward = lambda *args, **kwargs: pytest.fail("the full vocabulary head ran")
    scores = score_heldout(model, batches, masker, seed=3, mask_draws=2)
    assert scores["masked_tokens"] == expected["masked_tokens"] == 2 * 12 * masker.per_row(SEQ)
    assert scores["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert scores["accuracy"] == expected["accuracy"]
    assert scores == score_heldout(model, batches, masker, seed=3, mask_draws=2)  # fixed by the seed
    assert scores["loss"] != score_heldout(model, batches, masker, seed=4, mask_draws=2)["loss"]


def test_scores_do_not_depend_on_how_the_rows_are_cut_into_batches(monkeypatch):
    """evaluate.batch_size and a device's micro-batch are memory settings: the masks, and so the scores, are the
    rows', the seed's and the draw's alone, also across chunks of MASK_ROWS rows."""
    model = small_model("bert")
    rows = heldout_rows(12)
    masker = masker_of(MaskingConfig(ratio=0.3, whole_word=True))
    scores = [score_heldout(model, list(rows.split(size)), masker, seed=5, mask_draws=2) for size in (12, 5, 3, 1)]
    assert all(s["masked_tokens"] == scores[0]["masked_tokens"] for s in scores)
    assert [s["loss"] for s in scores] == pytest.approx([scores[0]["loss"]] * 4, rel=1e-6)
    assert len({s["accuracy"] for s in scores}) == 1
    monkeypatch.setattr(heldout, "MASK_ROWS", 4)  # three chunks of rows, each masked from its own seed
    chunked = [score_heldout(model, list(rows.split(size)), masker, seed=5, mask_draws=2) for size in (12, 5, 1)]
    assert [s["loss"] for s in chunked] == pytest.approx([chunked[0]["loss"]] * 3, rel=1e-6)


def test_validation_scores_the_experiments_rows_on_any_hardware(monkeypatch, tmp_path):
    """Training's validation takes `logger.val_batches` global batches of held-out rows (training.batch_size rows
    each), cut into the device's micro-batches: the same rows, and so the same val/* scores, for any micro-batch."""
    import pretrain.train_stage as train_stage

    held_out = heldout_rows(40).numpy().astype(np.uint16)
    monkeypatch.setattr(train_stage, "load_rows", lambda folder, split: held_out)
    model, masker = small_model("bert"), masker_of(MaskingConfig())
    cuts = {micro: train_stage.heldout_batches(tmp_path, micro, 2 * 16) for micro in (4, 8, 16)}
    for batches in cuts.values():
        assert torch.equal(torch.cat(batches), torch.from_numpy(held_out[:32].astype(np.int64)))
    scores = [score_heldout(model, batches, masker, seed=1) for batches in cuts.values()]
    assert [s["loss"] for s in scores] == pytest.approx([scores[0]["loss"]] * 3, rel=1e-6)


def test_scoring_runs_in_eval_mode_and_restores_the_mode():
    model = small_model("bert", dropout=0.5).train()
    batches = [heldout_rows()]
    masker = masker_of(MaskingConfig())
    first = score_heldout(model, batches, masker, seed=0)
    assert model.training  # back in training mode
    assert first == score_heldout(model, batches, masker, seed=0)  # no dropout while scoring
    assert first["loss"] == pytest.approx(dense_reference(model, batches, masker, 0, 1)["loss"], rel=1e-5)


def _cut_words_per_row(ids: torch.Tensor, positions: torch.Tensor) -> list[int]:
    """Per row: words (a start id then its continuation ids) with some but not all tokens masked."""
    specials = (SPECIAL["cls"], SPECIAL["sep"])
    counts = []
    for row, chosen in zip(ids.tolist(), positions.tolist()):
        chosen, cut, word = set(chosen), 0, []
        for position, token in enumerate(row + [SPECIAL["sep"]]):  # a final [SEP] closes the last word
            if token < FIRST_CONTINUATION and word:  # a word start, [CLS] or [SEP] closes the word before
                cut += 0 < sum(p in chosen for p in word) < len(word)
                word = []
            if token not in specials:  # never masked, so no part of a word
                word.append(position)
        counts.append(cut)
    return counts


@pytest.mark.parametrize("whole_word", [True, False])
def test_scoring_masks_whole_words_when_the_run_does(monkeypatch, whole_word):
    scored = []

    def spy(model, input_ids, positions, sparse):
        scored.append(positions)
        return real(model, input_ids, positions, sparse)

    real = heldout.masked_logits
    monkeypatch.setattr(heldout, "masked_logits", spy)
    ids = heldout_rows()
    score_heldout(small_model("bert"), [ids], masker_of(MaskingConfig(whole_word=whole_word)), seed=1)
    cut = _cut_words_per_row(ids, scored[0])
    if whole_word:
        assert max(cut) <= 1  # only the word where the fixed count runs out may be cut
    else:
        assert sum(cut) > 3 * len(ids)  # token masking cuts many of these two-token words


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_one_host_sync_per_call_whatever_the_batches(monkeypatch, arch):
    model = distilbert() if arch == "distilbert" else small_model(arch)
    reads = []
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"):
        def counting(self, *args, _name=name, _real=getattr(torch.Tensor, name), **kwargs):
            reads.append(_name)
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counting)
    score_heldout(model, list(heldout_rows().split(3)), masker_of(MaskingConfig()), seed=0, mask_draws=2)
    assert reads == ["tolist"]  # 8 batches scored, one read back


def test_row_batches_cover_the_requested_rows_in_order():
    rows = np.arange(10 * 4, dtype=np.uint16).reshape(10, 4)
    assert [b.shape[0] for b in row_batches(rows, 4)] == [4, 4, 2]
    limited = row_batches(rows, 4, max_rows=6)
    assert [b.shape[0] for b in limited] == [4, 2] and limited[0].dtype == torch.int64
    assert torch.equal(torch.cat(limited), torch.from_numpy(rows[:6].astype(np.int64)))


class RecordingLogger:
    def __init__(self):
        self.rows = []

    def log_metrics(self, metrics, step):
        self.rows.append((step, metrics))


@pytest.mark.parametrize("validation_first", [False, True])
def test_validation_time_is_neither_throughput_nor_data_wait(monkeypatch, validation_first):
    clock = FakeClock()
    monkeypatch.setattr(step_metrics.time, "perf_counter", clock)  # the clock of StepMetricsLogger.untimed

    def slow_score(model, batches, masker, seed, mask_draws):
        clock.now += 5.0  # validation takes 5 s
        return {"loss": 2.0, "accuracy": 0.5, "masked_tokens": 10}

    monkeypatch.setattr(validation, "score_heldout", slow_score)
    module = SimpleNamespace(device=torch.device("cpu"), model=None,
                             masker=SimpleNamespace(at_ratio=lambda ratio: None),
                             pop_window=lambda: {"train/loss": 3.0, "tokens": 100})
    plan = [SimpleNamespace(end_step=4, seq_len=SEQ, index=0)]
    metrics = StepMetricsLogger(plan, [1e6], every_n_steps=2, peak_tflops=1.0, progress_bar=False)
    validate = HeldoutValidation([torch.zeros(1, SEQ)], every_n_steps=2, ratio=0.15, seed=0,
                                 step_metrics=metrics)
    callbacks = [validate, metrics] if validation_first else [metrics, validate]
    logger = RecordingLogger()
    trainer = SimpleNamespace(global_step=0, max_steps=4, loggers=[logger], is_global_zero=True)
    for callback in callbacks:
        callback.on_train_start(trainer, module)
    for step in range(1, 5):
        clock.now += 0.1  # the loader
        for callback in callbacks:
            callback.on_train_batch_start(trainer, module, None, step)
        clock.now += 1.0  # the step
        trainer.global_step = step
        for callback in callbacks:
            callback.on_train_batch_end(trainer, module, None, None, step)
    # Two steps of 1.1 s per interval; the 5 s of each validation counted nowhere.
    assert [h["step"] for h in metrics.history] == [2, 4]
    assert [h["throughput/tokens_per_s"] for h in metrics.history] == pytest.approx([100 / 2.2, 100 / 2.2])
    assert [h["time/data_wait_s"] for h in metrics.history] == pytest.approx([0.2, 0.2])
    # Validating after this callback has logged puts each validation's 5 s in the next interval's account.
    untimed = [5.0, 5.0] if validation_first else [0.0, 5.0]
    assert [h["time/untimed_s"] for h in metrics.history] == pytest.approx(untimed)
    assert validate.history == [{"step": s, "val/loss": 2.0, "val/masked_accuracy": 0.5} for s in (2, 4)]
    assert sorted(step for step, row in logger.rows if "val/loss" in row) == [2, 4]


def test_validation_scores_the_modules_masking_at_its_ratio_once_per_due_step():
    model = small_model("bert")
    masker = masker_of(MaskingConfig(ratio=0.3, whole_word=True))
    module = SimpleNamespace(device=torch.device("cpu"), model=model, masker=masker)
    batches = [heldout_rows()]
    validate = HeldoutValidation(batches, every_n_steps=3, ratio=0.15, seed=7)
    logger = RecordingLogger()
    trainer = SimpleNamespace(global_step=0, max_steps=7, loggers=[logger])
    for step in (0, 0, 1, 2, 3, 3, 4, 5, 6, 6, 7):  # repeats: micro-batches of one accumulating step
        trainer.global_step = step
        validate.on_train_batch_end(trainer, module, None, None, 0)
    assert [h["step"] for h in validate.history] == [3, 6, 7]
    expected = score_heldout(model, batches, masker.at_ratio(0.15), seed=7)
    assert validate.history[0]["val/loss"] == pytest.approx(expected["loss"])
    assert expected["masked_tokens"] == 12 * masker.at_ratio(0.15).per_row(SEQ)


def test_fewer_held_out_rows_than_a_micro_batch_are_still_scored(monkeypatch):
    """The demo: 14 held-out rows, micro-batches of 32. Whole batches only left validation nothing to score,
    so logger.val_every_n_steps silently did nothing."""
    import pretrain.train_stage as train_stage

    rows = np.arange(14 * 8).reshape(14, 8)
    monkeypatch.setattr(train_stage, "load_rows", lambda folder, split: rows)
    batches = train_stage.heldout_batches(None, batch_size=32, rows=64)
    assert [b.shape for b in batches] == [(14, 8)] and torch.equal(batches[0], torch.from_numpy(rows))
    assert [len(b) for b in train_stage.heldout_batches(None, batch_size=4, rows=8)] == [4, 4]


def test_a_resumed_run_does_not_validate_again_at_the_step_it_resumed_from():
    """With accumulation, a resumed run's first micro-batches end at the resumed step (validated before its
    checkpoint was saved): validating there again wrote a second val row for that step."""
    check = HeldoutValidation([torch.zeros(1, 4, dtype=torch.long)], every_n_steps=4, ratio=0.15, seed=0)
    check.on_train_start(SimpleNamespace(global_step=4), None)
    assert not check.due(4, max_steps=12) and check.due(8, max_steps=12)
