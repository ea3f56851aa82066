"""impl.attention: bertforge's default SDPA stays out of torch.compile's graph (where the fused GPU kernel keeps
attention dropout inside it) and computes what SDPA inside the graph computes; model.attention_dropout
reaches the transformers config; a wrong value is named before any stage runs."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedLM

from bertforge.common.errors import ConfigError
from bertforge.experiment import load_config
from bertforge.stages import check_settings
from pretrain.config import ModelConfig
from pretrain.model import BERTFORGE_SDPA, attn_implementation, hf_config
from pretrain.module import sparse_mlm_loss
from tests.conftest import compose_raw
from tests.pretrain.conftest import SPECIAL, small_model

def compiled_loss(model, batch):
    """(loss, every FX graph torch.compile made of the sparse MLM loss over two calls; the second call, with
    other tokens, must compile nothing new)."""
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    loss_fn = torch.compile(lambda *args: sparse_mlm_loss(model, *args)[0], backend=recording_backend, dynamic=False)
    loss = loss_fn(*batch)
    first = len(graphs)
    loss_fn(torch.randint(5, 300, batch[0].shape), *batch[1:])
    assert len(graphs) == first
    return loss, graphs


def sdpa_calls(graphs) -> int:
    return sum(node.target is F.scaled_dot_product_attention for gm in graphs for node in gm.graph.nodes)


@pytest.mark.parametrize("arch", ["bert", "modernbert"])
def test_default_sdpa_runs_outside_the_compiled_graph_with_the_same_result(arch):
    ids = torch.randint(5, 300, (2, 64))
    positions, targets = torch.tensor([[3, 9, 17], [1, 40, 63]]), torch.randint(5, 300, (2, 3))
    batch = (ids, positions, targets)
    outside, outside_graphs = compiled_loss(small_model(arch, "sdpa").eval(), batch)
    inside, inside_graphs = compiled_loss(small_model(arch, "sdpa_compiled").eval(), batch)
    assert sdpa_calls(outside_graphs) == 0 and len(outside_graphs) > 1  # the graph breaks at each attention
    assert sdpa_calls(inside_graphs) > 0 and len(inside_graphs) == 1  # traced: one graph, SDPA inside it
    assert torch.allclose(outside, inside, atol=1e-5)
    with torch.no_grad():
        eager, _ = sparse_mlm_loss(small_model(arch, "eager").eval(), *batch)
    assert torch.allclose(outside, eager, atol=1e-5)


@pytest.mark.parametrize("arch,window", [("bert", 128), ("roberta", 128), ("modernbert", 128), ("modernbert", 8)])
def test_default_sdpa_applies_padding_masks_and_sliding_windows(arch, window):
    """Sentence-pair rows (NSP/SOP) come padded with an attention mask, and ModernBERT's local layers see a window
    of tokens: the default attention must apply both, eagerly and compiled, as the reference implementation does."""
    ids, mask = torch.randint(5, 300, (3, 32)), torch.ones(3, 32, dtype=torch.long)
    mask[0, 20:], mask[2, 5:] = 0, 0
    given = mask if window > 32 else None  # the window alone: packed rows come with no mask, yet need one
    kept = mask.bool() if given is not None else torch.ones_like(mask, dtype=torch.bool)
    with torch.no_grad():
        eager = small_model(arch, "eager", local_attention_window=window).eval()
        reference = eager(input_ids=ids, attention_mask=given).logits
        model = small_model(arch, "sdpa", local_attention_window=window).eval()
        torch._dynamo.reset()
        # aot_eager: what differs when compiled is how transformers builds the mask while dynamo traces, and that
        # backend traces the same way without inductor's code generation (minutes on two cores, no mask logic)
        for run in (model, torch.compile(model, backend="aot_eager", dynamic=False)):
            logits = run(input_ids=ids, attention_mask=given).logits
            # padded positions' outputs are not compared: no loss ever reads them
            assert torch.allclose(logits[kept], reference[kept], atol=1e-4)


def test_rows_without_padding_get_no_mask_even_where_transformers_would_build_one(monkeypatch):
    """transformers 5.17 builds a full mask for unpadded rows while torch.compile traces (then SDPA cannot use its
    flash kernel); here its check for a mask it may skip is made to say no, as 5.17's does while tracing."""
    from transformers import masking_utils
    from transformers.masking_utils import bidirectional_mask_function, sdpa_mask

    from pretrain.model import sdpa_mask_unless_unpadded

    monkeypatch.setattr(masking_utils, "_ignore_bidirectional_mask_sdpa", lambda *args, **kwargs: False)
    args = dict(batch_size=2, q_length=8, kv_length=8, q_offset=0, kv_offset=0, mask_function=bidirectional_mask_function,
                allow_is_causal_skip=False, allow_is_bidirectional_skip=True, device=torch.device("cpu"))
    assert sdpa_mask(attention_mask=None, **args) is not None  # the control: transformers builds one
    assert sdpa_mask_unless_unpadded(attention_mask=None, **args) is None
    padded = torch.tensor([[1] * 8, [1] * 5 + [0] * 3], dtype=torch.bool)
    assert torch.equal(sdpa_mask_unless_unpadded(attention_mask=padded, **args), sdpa_mask(attention_mask=padded, **args))


def test_a_model_trained_with_bertforge_sdpa_saves_and_loads_with_default_attention(tmp_path):
    model = small_model("bert", "sdpa").eval()
    assert model.config._attn_implementation == BERTFORGE_SDPA
    model.save_pretrained(tmp_path)
    assert BERTFORGE_SDPA not in (tmp_path / "config.json").read_text()
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert loaded.config._attn_implementation in ("sdpa", "eager")


@pytest.mark.parametrize("arch,key", [("bert", "attention_probs_dropout_prob"), ("roberta", "attention_probs_dropout_prob"),
                                      ("modernbert", "attention_dropout")])
def test_attention_dropout_defaults_to_dropout_and_can_differ(arch, key):
    same = hf_config(ModelConfig(arch=arch, dropout=0.1), 300, SPECIAL)
    apart = hf_config(ModelConfig(arch=arch, dropout=0.1, attention_dropout=0.0), 300, SPECIAL)
    assert getattr(same, key) == 0.1 and getattr(apart, key) == 0.0


def test_unknown_attention_is_named_before_any_stage_runs():
    cfg = load_config(compose_raw("pretrain", ["paths.data_dir=/nowhere", "impl.attention=flash"]))
    with pytest.raises(ConfigError, match=r"impl.attention='flash' is not one of \['sdpa', 'sdpa_compiled', 'eager'\]"):
        check_settings(cfg, "pretrain")
    assert attn_implementation("sdpa_compiled") == "bertforge_sdpa_in_graph"


def test_attention_dropout_names_a_new_model_folder_only_when_set():
    """Unset, the key is left out of the pretrain hash, so every folder made before it existed keeps its name."""
    from bertforge.stages import STAGES, stage_payload

    pretrain = STAGES["pretrain"]
    unset = load_config(compose_raw("pretrain", ["paths.data_dir=/d"]))
    chosen = load_config(compose_raw("pretrain", ["paths.data_dir=/d", "model.attention_dropout=0.0"]))
    assert "attention_dropout" not in stage_payload(unset, pretrain)["model"]
    assert stage_payload(chosen, pretrain)["model"]["attention_dropout"] == 0.0
