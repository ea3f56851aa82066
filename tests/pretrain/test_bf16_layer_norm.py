"""impl.bf16_layer_norm: under bf16 autocast the layer norms take and return bf16, so the residual stream
stays in bf16; outside autocast, and in every saved weight, the model is unchanged."""

import copy

import pytest
import torch

from pretrain.model import Bf16LayerNorm, use_bf16_layer_norms
from tests.pretrain.conftest import small_model


def _norm_outputs(model, input_ids):
    """The encoder's last hidden state and the dtype of every layer norm's output, under CPU bf16 autocast."""
    dtypes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
             for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model.base_model(input_ids=input_ids).last_hidden_state
    for hook in hooks:
        hook.remove()
    return hidden, dtypes


@pytest.mark.parametrize("arch", ["bert", "roberta", "modernbert"])
def test_norms_keep_bf16_under_autocast_and_nothing_else_changes(arch):
    reference = small_model(arch)
    model = copy.deepcopy(reference).eval()
    reference.eval()
    norms = use_bf16_layer_norms(model)
    assert norms == sum(isinstance(m, torch.nn.LayerNorm) for m in reference.modules()) > 0
    assert all(type(m) is Bf16LayerNorm for m in model.modules() if isinstance(m, torch.nn.LayerNorm))
    input_ids = torch.randint(5, 300, (4, 64), generator=torch.Generator().manual_seed(0))

    expected, expected_dtypes = _norm_outputs(reference, input_ids)
    hidden, dtypes = _norm_outputs(model, input_ids)
    assert set(expected_dtypes) == {torch.float32}  # autocast's rule: the residual stream in fp32
    assert set(dtypes) == {torch.bfloat16} and hidden.dtype == torch.bfloat16
    torch.testing.assert_close(hidden.float(), expected.float(), atol=0.1, rtol=0.05)  # bf16 rounding only
    # without autocast (evaluation, fp32 training) it is the same model, with the same weights
    with torch.no_grad():
        assert torch.equal(model(input_ids=input_ids).logits, reference(input_ids=input_ids).logits)
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in reference.state_dict().items()}
