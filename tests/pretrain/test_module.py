"""The sparse MLM head equals transformers' dense head; models build at every size and layout; the
FLOP count matches torch's own counter on the masked count training really draws; the training step
masks with the run's masker."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bertforge.common.errors import ConfigError
from pretrain.config import MaskingConfig, ModelConfig, OptimConfig
from pretrain.flops import flops_per_token, mfu
from pretrain.masking import Masker, mask_fixed_count
from pretrain.model import build_model, encoder_and_head, padded_vocab_size
from pretrain.module import MaskedLMModule, sparse_mlm_loss
from tests.conftest import compose_raw
from tests.pretrain.conftest import SPECIAL, small_model
from bertforge.experiment import load_config



@pytest.mark.parametrize("arch", ["bert", "roberta", "modernbert"])
def test_sparse_head_loss_equals_dense_head_loss(arch):
    model = small_model(arch).eval()
    ids = torch.randint(5, 300, (4, 64))
    ids[:, 0], ids[:, 30] = 2, 3
    batch = mask_fixed_count(ids, 10, 4, 300, torch.arange(5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(input_ids=batch.input_ids, labels=batch.dense_labels())  # transformers' own dense loss
        sparse, correct = sparse_mlm_loss(model, batch.input_ids, batch.positions, batch.targets)
    assert torch.allclose(sparse, out.loss, atol=1e-5)
    dense_correct = (out.logits.argmax(-1).gather(1, batch.positions) == batch.targets).sum()
    assert correct == dense_correct


@pytest.mark.parametrize("size,params_millions", [("tiny", 4.4), ("mini", 11.2), ("small", 28.8),
                                                  ("medium", 41.4), ("base", 109.5), ("large", 335.2)])
def test_standard_sizes_have_their_published_parameter_counts(size, params_millions):
    cfg = load_config(compose_raw("pretrain", ["paths.data_dir=/d", f"model={size}"])).model
    with torch.device("meta"):  # no memory, no init time: only shapes
        model = build_model(cfg, vocab_size=30522, pad_token_id=0, seq_len=512, special_ids=SPECIAL)
    encoder, _ = encoder_and_head(model)
    count = sum(p.numel() for p in encoder.parameters()) / 1e6  # the encoder, as papers count it
    assert count == pytest.approx(params_millions, rel=0.02)


def test_xl_is_scholarbert_xl_sized():
    cfg = load_config(compose_raw("pretrain", ["paths.data_dir=/d", "model=xl"])).model
    with torch.device("meta"):
        model = build_model(cfg, vocab_size=50000, pad_token_id=0, seq_len=512, special_ids=SPECIAL)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(770, rel=0.02)


@pytest.mark.parametrize("option,model_type", [("roberta_base", "roberta"), ("modernbert_base", "modernbert"),
                                               ("modernbert_tiny", "modernbert")])
def test_other_layouts_build_from_config(option, model_type):
    cfg = load_config(compose_raw("pretrain", ["paths.data_dir=/d", f"model={option}"])).model
    with torch.device("meta"):
        model = build_model(cfg, vocab_size=3849, pad_token_id=0, seq_len=512, special_ids=SPECIAL)
    assert model.config.model_type == model_type and model.config.vocab_size == 3904


def test_roberta_uses_the_full_configured_length():
    model = small_model("roberta", max_position_embeddings=64)
    model(input_ids=torch.randint(5, 300, (1, 64)))  # positions run to pad_id + 64 without overflow


def test_vocab_padded_to_multiple_of_64():
    assert padded_vocab_size(3849, 64) == 3904 and padded_vocab_size(4096, 64) == 4096
    model = build_model(ModelConfig(), vocab_size=3849, pad_token_id=0, seq_len=128)
    assert model.config.vocab_size == 3904


def test_sequence_longer_than_positions_is_refused():
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        build_model(ModelConfig(max_position_embeddings=128), vocab_size=100, pad_token_id=0, seq_len=256)


def test_unknown_arch_is_named():
    with pytest.raises(ConfigError, match="model.arch='gpt'"):
        build_model(ModelConfig(arch="gpt"), vocab_size=100, pad_token_id=0, seq_len=64)


@pytest.mark.parametrize("arch", ["bert", "roberta", "modernbert"])
def test_flops_per_token_matches_torch_flop_counter(arch):
    # Eager attention: torch's counter sees its matmuls (it has no formula for the CPU SDPA kernel).
    model = small_model(arch, attention="eager")
    ids, positions = torch.randint(5, 300, (4, 64)), torch.randint(0, 64, (4, 10))
    with FlopCounterMode(display=False) as counter:
        loss, _ = sparse_mlm_loss(model, ids, positions, torch.randint(5, 300, (4, 10)))
        loss.backward()
    assert counter.get_total_flops() == pytest.approx(
        flops_per_token(model.config, 64, masked_per_row=10) * ids.numel(), rel=1e-6)


def test_flops_count_the_masked_positions_training_really_draws():
    model = small_model("bert", attention="eager")
    # 70% of tokens maskable: 15% of them is 6.72, drawn as 7 per row, not the 9.6 a bare 15% of 64 gives.
    masker = Masker.from_config(MaskingConfig(ratio=0.15), SPECIAL, 300, {64: 0.7})
    ids = torch.randint(5, 300, (4, 64))
    ids[:, 0] = 2
    batch = masker(ids, torch.Generator().manual_seed(0))
    assert batch.positions.shape == (4, masker.per_row(64)) == (4, 7)
    with FlopCounterMode(display=False) as counter:
        loss, _ = sparse_mlm_loss(model, batch.input_ids, batch.positions, batch.targets)
        loss.backward()
    measured = counter.get_total_flops() / ids.numel()
    counted = flops_per_token(model.config, 64, masked_per_row=masker.per_row(64))
    assert measured == pytest.approx(counted, rel=1e-6)
    assert measured != pytest.approx(flops_per_token(model.config, 64, masked_per_row=10), rel=1e-3)


@pytest.mark.parametrize("bad", [0.15, 0, 65])
def test_flops_refuse_a_ratio_or_an_impossible_count(bad):
    config = small_model("bert").config
    with pytest.raises(ValueError, match="masked_per_row"):
        flops_per_token(config, 64, masked_per_row=bad)


def test_training_step_masks_the_count_its_masker_decides():
    model = small_model("bert")
    module = MaskedLMModule(model, MaskingConfig(ratio=0.15), OptimConfig(), [], SPECIAL, 300, {64: 0.7})
    ids = torch.randint(5, 300, (4, 64))
    torch.manual_seed(5)  # what MicroBatchSeeding does before every micro-batch
    loss = module.training_step(ids, 0)
    assert module.window["masked"] == 4 * module.masker.per_row(64) == 4 * 7
    torch.manual_seed(5)
    batch = module.masker(ids)
    expected, _ = sparse_mlm_loss(model, batch.input_ids, batch.positions, batch.targets)
    assert torch.allclose(loss, expected)


def test_flops_of_bert_base_and_mfu():
    cfg = load_config(compose_raw("pretrain", ["paths.data_dir=/d", "model=base"])).model
    with torch.device("meta"):
        config = build_model(cfg, vocab_size=30522, pad_token_id=0, seq_len=128, special_ids=SPECIAL).config
    per_token = flops_per_token(config, 128)  # transformers' dense head: every position
    # 6 x (85M encoder matmul weights + the 23.5M decoder + 0.6M head dense) plus attention 3 x 12 x 4 x 128 x 768
    assert per_token == pytest.approx(6 * (85e6 + 768 * 30528 + 768 * 768) + 3 * 12 * 4 * 128 * 768, rel=0.01)
    assert mfu(1e6, 4e8, 989.0) == pytest.approx(4e14 / 989e12)


def test_fp16_clips_the_true_gradients_of_fused_adamw():
    """Under fp16 mixed precision Lightning leaves a fused optimiser's gradients multiplied by the loss scale
    (2^16) for the optimiser to divide; clipping them there cut the update ~3000x. One step with a clip
    that bites moves the weights as far as in fp32. (A CPU GradScaler stands in for the CUDA one.)"""
    import lightning as L
    from lightning.pytorch.plugins.precision import MixedPrecision
    from torch.utils.data import DataLoader

    from pretrain.phases import Phase

    def first_update(plugins) -> tuple[float, float]:
        model = small_model("bert")
        optim = OptimConfig(lr=1e-3, warmup_steps=0, grad_clip=0.1)
        module = MaskedLMModule(model, MaskingConfig(ratio=0.15), optim, [Phase(0, 64, 0, 1, 4, 4, 1, 1.0, 0)],
                                SPECIAL, 300, {64: 0.9})
        before = model.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
        torch.manual_seed(1)
        rows = torch.randint(5, 300, (4, 64))
        L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, plugins=plugins).fit(module, DataLoader([rows], batch_size=None))
        moved = (model.bert.encoder.layer[0].attention.self.query.weight.detach() - before).abs().mean().item()
        return moved, module.window["grad_norm"].item()

    fp32, fp32_norm = first_update([])
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    fp16, fp16_norm = first_update([MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    # The clip bites, and the true norm is logged.
    assert fp32_norm > 0.1 and fp16_norm == pytest.approx(fp32_norm, rel=0.05)
    assert fp16 == pytest.approx(fp32, rel=0.1)
