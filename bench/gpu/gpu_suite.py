"""The GPU training suite: BERT-base at sequence 128 and 512 (bf16, torch.compile) for bertforge and
the Hugging Face run_mlm recipe side by side, and ModernBERT-base at 512 (bertforge), on one GPU.

Each run is `bench/pretrain/bench_mlm.py` (same model, same initial weights, same synthetic rows for
both systems), here in one process one after the other (the compile cache reset between runs).
It writes one JSON per run named for the device (`<out>/<device>_<run>.json`, the device as
`torch.cuda.get_device_name()` gives it), and `<out>/<device>_summary.json` with tokens/s, MFU and
peak memory of every system and the issue's targets: bertforge >= 2x the recipe's tokens/s and
>= 40 % MFU (of 989 dense bf16 TFLOP/s) on BERT-base.

    python bench/gpu/gpu_suite.py --out bench/gpu/results            # on one H100/H200: <= 8 min
    python bench/gpu/gpu_suite.py --cpu-smoke --out /tmp/suite        # tiny models on CPU: the same code path
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pretrain"))  # bench_mlm is a script, not a package
import bench_mlm

MFU_TARGET, SPEEDUP_TARGET = 0.40, 2.0
GPU = ["--device", "cuda", "--precision", "bf16-mixed", "--data", "synthetic", "--compile", "--steps", "40",
       "--warmup-steps", "15"]
GPU_RUNS = {  # name -> bench_mlm arguments; batches of 32 k tokens (BERT's 256 x 128)
    "bert_base_seq128": GPU + ["--model", "base", "--seq-len", "128", "--batch-size", "256", "--hf-compile"],
    "bert_base_seq512": GPU + ["--model", "base", "--seq-len", "512", "--batch-size", "64", "--hf-compile"],
    "modernbert_base_seq512": GPU + ["--model", "modernbert_base", "--seq-len", "512", "--batch-size", "64",
                                     "--only", "bertforge"],
    # The same attention traced into the graph, beside the default (SDPA outside it) in one run.
    "bert_base_seq512_sdpa_compiled": GPU + ["--model", "base", "--seq-len", "512", "--batch-size", "64",
                                             "--only", "bertforge", "--attention", "sdpa_compiled"],
    # Layer norms in bf16 (impl.bf16_layer_norm), beside the default's fp32 norms of autocast.
    "bert_base_seq128_bf16_layer_norm": GPU + ["--model", "base", "--seq-len", "128", "--batch-size", "256",
                                               "--only", "bertforge", "--bf16-layer-norm"],
}
CPU = ["--device", "cpu", "--precision", "32", "--data", "synthetic", "--vocab-size", "512", "--steps", "2",
       "--warmup-steps", "1", "--seq-len", "32", "--batch-size", "4"]
CPU_RUNS = {
    "bert_tiny_seq32": CPU + ["--model", "tiny"],
    "modernbert_tiny_seq32": CPU + ["--model", "modernbert_tiny", "--only", "bertforge"],
    "bert_tiny_seq32_bf16_layer_norm": CPU + ["--model", "tiny", "--only", "bertforge", "--bf16-layer-norm",
                                              "--precision", "bf16-mixed"],
}


def slug(device: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", device.lower()).strip("_")[:40]


def summarise(name: str, report: dict) -> dict:
    results = report["results"]
    row = {"run": name, "device": report["device"], "model": report["model"]["name"],
           "seq_len": report["command_args"]["seq_len"], "batch_size": report["command_args"]["batch_size"]}
    for system, r in results.items():
        row[system] = {"tokens_per_s": round(r["tokens_per_s"], 1), "mfu": round(r["mfu_vs_989_tflops"], 4),
                       "mfu_dense_head_flops": round(r["mfu_vs_989_tflops_dense_head_flops"], 4),
                       "peak_memory_mib": round(r["peak_memory_mib"], 1)}
    if "speedup_bertforge_over_hf" in report:
        row["speedup_bertforge_over_hf"] = round(report["speedup_bertforge_over_hf"], 3)
        row["meets_speedup_target"] = report["speedup_bertforge_over_hf"] >= SPEEDUP_TARGET
    row["meets_mfu_target"] = results["bertforge"]["mfu_vs_989_tflops"] >= MFU_TARGET
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny models on CPU, a few steps: checks the suite runs")
    parser.add_argument("--only", nargs="*", help="run names to run (default: all)")
    parser.add_argument("--profile", action="store_true",
                        help="after each bertforge run's timed steps, profile a few more: <device>_<run>_profile.txt")
    args = parser.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or give --cpu-smoke")
    runs = CPU_RUNS if args.cpu_smoke else GPU_RUNS
    args.out.mkdir(parents=True, exist_ok=True)
    device = bench_mlm.device_name("cpu" if args.cpu_smoke else "cuda")
    rows, started = [], time.time()
    for name, run_args in runs.items():
        if args.only and name not in args.only:
            continue
        path = args.out / f"{slug(device)}_{name}.json"
        begun = time.time()
        try:
            profile = ["--profile", str(path.with_name(path.stem + "_profile.txt"))] if args.profile else []
            report = bench_mlm.main(run_args + profile + ["--out", str(path), "--note", f"gpu_suite run {name}"])
            rows.append(summarise(name, report) | {"wall_s": round(time.time() - begun, 1)})
        except Exception as error:  # one failing run (say, a compile error) must not cost the others
            rows.append({"run": name, "error": f"{type(error).__name__}: {error}"[:2000]})
            print(f"gpu_suite: {name} failed: {error}", file=sys.stderr, flush=True)
        torch._dynamo.reset()  # each run compiles its own model from a clean cache
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    summary = {"device": device, "cpu_smoke": args.cpu_smoke, "wall_s": round(time.time() - started, 1),
               "targets": {"speedup_bertforge_over_hf": SPEEDUP_TARGET, "mfu": MFU_TARGET}, "runs": rows}
    (args.out / f"{slug(device)}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
