"""Which attention kernels SDPA runs for BERT-base's shapes, eagerly and inside torch.compile, with and
without attention dropout, and how long a forward + backward takes with each.

BERT-base trains with dropout 0.1 on the attention probabilities. The GPU suite's profile showed the
compiled model running attention as batched matmuls, a softmax and a dropout kernel instead of a fused
(flash/cuDNN) one; this probe isolates the attention call to see where that comes from.

    python bench/gpu/sdpa_probe.py --out probe.json      # on the GPU machine (~30 s)
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

SHAPES = {"seq128": (256, 12, 128, 64), "seq512": (64, 12, 512, 64)}  # batch, heads, length, head size
KERNEL_WORDS = ("flash", "fmha", "cudnn", "efficient", "attention", "gemm", "bmm", "softmax", "nvjet", "xmma")

_sdpa_outside = torch.compiler.disable(F.scaled_dot_product_attention)


def attention_fn(mode: str, dropout: float):
    def plain(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)

    def outside(q, k, v):
        return _sdpa_outside(q, k, v, dropout_p=dropout)

    if mode == "eager":
        return plain
    return torch.compile(plain if mode == "compiled" else outside, dynamic=False)


def step(fn, q, k, v, grad):
    out = fn(q, k, v)
    out.backward(grad)


def probe(shape, mode: str, dropout: float, repeats: int = 20) -> dict:
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    grad = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    fn = attention_fn(mode, dropout)
    for _ in range(3):
        step(fn, q, k, v, grad)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        step(fn, q, k, v, grad)
        torch.cuda.synchronize()
    kernels = sorted({e.name[:90] for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
                      and any(word in e.name.lower() for word in KERNEL_WORDS)})
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step(fn, q, k, v, grad)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return {"ms_forward_backward": round(statistics.median(times), 3), "kernels": kernels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    for name, shape in SHAPES.items():
        for dropout in (0.0, 0.1):
            for mode in ("eager", "compiled", "compiled_sdpa_outside"):
                torch._dynamo.reset()
                try:
                    row = probe(shape, mode, dropout)
                except Exception as error:  # report and go on: the other cells still tell
                    row = {"error": f"{type(error).__name__}: {error}"[:500]}
                rows.append({"shape": name, "dropout": dropout, "mode": mode} | row)
                print(json.dumps(rows[-1]), flush=True)
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
