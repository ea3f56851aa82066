"""Optimisers: fused AdamW and LAMB, both with decoupled weight decay kept off biases and norms."""

from __future__ import annotations

import torch
from torch import nn

from bertforge.common.errors import ConfigError
from pretrain.config import OptimConfig

OPTIMISERS = ("adamw", "lamb")
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def parameter_groups(model: nn.Module, weight_decay: float, body: set[int] = frozenset()) -> list[dict]:
    """Matrices decayed; biases and normalisation weights not (they are not weights to shrink towards
    zero). Embeddings are decayed, as in BERT. Parameters whose id is in `body` go to groups of their own
    (flagged `"body": True`) so a schedule can hold them still (`training.embedding_warmup_steps`)."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters(recurse=False)}
    norm_params |= {id(p) for name, p in model.named_parameters() if "norm" in name.lower()}  # custom norms
    groups: dict[tuple[bool, bool], list] = {}
    seen = set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue  # tied weights (decoder = embeddings) appear once
        seen.add(id(param))
        decayed = not (param.ndim < 2 or id(param) in norm_params)
        groups.setdefault((id(param) in body, decayed), []).append(param)
    return [{"params": params, "weight_decay": weight_decay if decayed else 0.0, "body": in_body}
            for (in_body, decayed), params in sorted(groups.items(), key=lambda item: (item[0][0], not item[0][1]))]


def check_optim_config(optim_cfg: OptimConfig) -> None:
    """ConfigError naming the key unless `optim.name` is a known optimiser and its lr, betas and eps are
    usable: from the config alone, so the pre-run settings check (`pretrain.settings_check`) can ask."""
    if optim_cfg.name not in OPTIMISERS:
        raise ConfigError(f"optim.name={optim_cfg.name!r} is not one of {list(OPTIMISERS)}")
    if not optim_cfg.lr > 0:
        raise ConfigError(f"optim.lr={optim_cfg.lr} must be above 0 (the peak learning rate)")
    betas = list(optim_cfg.betas)
    if len(betas) != 2 or not all(0 <= beta < 1 for beta in betas):
        raise ConfigError(f"optim.betas={betas} must be two values in [0, 1), e.g. [0.9, 0.98]")
    if not optim_cfg.eps > 0:
        raise ConfigError(f"optim.eps={optim_cfg.eps} must be above 0, e.g. 1e-6")


def build_optimizer(model: nn.Module, optim_cfg: OptimConfig, body: set[int] = frozenset()) -> torch.optim.Optimizer:
    """The configured optimiser over `model`'s parameters (call after the model is on its device);
    `body`: ids of parameters grouped apart (see `parameter_groups`)."""
    check_optim_config(optim_cfg)
    groups = parameter_groups(model, optim_cfg.weight_decay, body)
    betas = tuple(optim_cfg.betas)
    if optim_cfg.name == "adamw":
        device = next(model.parameters()).device
        # One fused kernel for all parameters (CUDA, and CPU since torch 2.4) instead of a loop of small ones.
        return torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=betas, eps=optim_cfg.eps,
                                 fused=device.type in ("cuda", "cpu"))
    return Lamb(groups, lr=optim_cfg.lr, betas=betas, eps=optim_cfg.eps)  # the one name left (check_optim_config)


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., 2019, "Large Batch Optimization for Deep Learning", algorithm 2).

    Per parameter tensor: the Adam direction with bias correction plus decoupled weight decay,
        u = m_hat / (sqrt(v_hat) + eps) + weight_decay * w,
    scaled by the layer-wise trust ratio ||w|| / ||u|| (1 when either norm is zero):
        w <- w - lr * (||w|| / ||u||) * u.
    The trust ratio lets one learning rate suit layers whose weights and updates differ in scale,
    which is what keeps very large batches (BERT in 76 minutes: 64k sequences) stable.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0):
        if lr <= 0 or eps <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid LAMB hyperparameters lr={lr} betas={betas} eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        skip = getattr(self, "found_inf", None)  # 1 on a step to skip, set on the device (no host sync)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    # a device tensor: a skipped step adds 0 to it without asking the device whether it was skipped
                    state["step"] = torch.zeros((), device=param.device)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] = state["step"] + (1 if skip is None else 1 - skip)  # a skipped step counts no step
                grad, m, v = param.grad.float(), state["exp_avg"], state["exp_avg_sq"]
                if skip is not None:  # a bad step (see MaskedLMModule): moments and weights stay as they are
                    grad = torch.where(skip.bool(), 0.0, grad)
                    m_before, v_before = m.clone(), v.clone()
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                m_hat = m / (1 - beta1 ** state["step"])
                v_hat = v / (1 - beta2 ** state["step"])
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(param, alpha=group["weight_decay"])
                # Norms stay on the device: a torch.where, not a Python `if`, so no host sync.
                w_norm, u_norm = param.float().norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                if skip is not None:
                    trust = trust * (1 - skip)
                    m.copy_(torch.where(skip.bool(), m_before, m))
                    v.copy_(torch.where(skip.bool(), v_before, v))
                param.add_((update * trust).to(param.dtype), alpha=-group["lr"])
        return loss
