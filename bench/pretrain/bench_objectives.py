"""Training speed of the pair objectives against plain MLM: bertforge's own module, same model, same batch.

  mlm       packed rows, no attention mask, dynamic masking, sparse MLM head (the default)
  mlm_nsp   [CLS] A [SEP] B [SEP] pair rows, padded: attention mask and token types, the pooler and the
            next-sentence head besides the sparse MLM head (training.objective=mlm_nsp)

Both read rows built by bertforge's stages from the Irish treebank at --seq-len, start from the same
weights and run `--warmup-steps` untimed then `--steps` timed optimiser steps; the objectives alternate
(--repeats) and medians are compared. Tokens count every row position (padding too), so tokens/s is a
like-for-like step rate; `real_tokens_share` says how much of a pair row is text.

  BERTFORGE_DATA=../shared/data python bench/pretrain/bench_objectives.py --device cpu --model tiny \
      --seq-len 128 --batch-size 32 --steps 20 --warmup-steps 3 --repeats 3 \
      --out bench/pretrain/results/cpu_tiny_seq128_nsp.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_mlm  # noqa: E402  (the shared timing, model and device helpers)

OBJECTIVES = ("mlm", "mlm_nsp")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", choices=["32", "bf16-mixed"], default="32")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--note", default="")
    return parser.parse_args()


def shards(objective: str, args, work: Path):
    """(shards folder, its manifest format, vocab size) built by the stages for `objective`."""
    from bertforge.common.stage_folder import read_manifest
    from bertforge.stages import run_stages

    data_dir = os.environ.get("BERTFORGE_DATA") or str(bench_mlm.REPO.parent / "shared" / "data")
    cfg = bench_mlm.composed("shards", [f"paths.data_dir={data_dir}", f"paths.work_dir={work}", "experiment=demo_ga",
                                        f"shards.seq_len={args.seq_len}", f"tokenizer.vocab_size={args.vocab_size}",
                                        f"training.objective={objective}"])
    folder = run_stages(cfg, "shards")["shards"]
    fmt = read_manifest(folder)["format"]
    return folder, fmt


def run(objective: str, args, hf_config, init_state, folder: Path, fmt: dict) -> float:
    import lightning as L

    from pretrain.config import MaskingConfig, OptimConfig, TrainingConfig
    from pretrain.data import PhasedData
    from pretrain.module import MaskedLMModule
    from pretrain.objectives import as_pretraining_model
    from pretrain.phases import plan_phases
    from pretrain.train_stage import training_rows

    total = args.warmup_steps + args.steps
    optim = OptimConfig(lr=1e-4, warmup_steps=args.warmup_steps)
    plan = plan_phases(TrainingConfig(max_steps=total, batch_size=args.batch_size), 0, optim, args.seq_len)
    model = bench_mlm.fresh_model(hf_config, init_state)
    if objective != "mlm":
        model = as_pretraining_model(model)
    shares = (fmt.get("pairs") or fmt)["maskable_share"]
    module = MaskedLMModule(model, MaskingConfig(), optim, plan, fmt["special_ids"], fmt["vocab_size"],
                            {int(k): v for k, v in shares.items()})
    rows = training_rows(folder, fmt, args.seq_len, 0, module.masker)
    data = PhasedData(plan, {args.seq_len: rows}, num_workers=0, pin_memory=args.device == "cuda")
    watch = bench_mlm.Stopwatch(args.device, args.warmup_steps)
    cpu = {}

    class Timing(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            watch.step_done(trainer.global_step)
            if trainer.global_step == args.warmup_steps and "start" not in cpu:
                cpu["start"] = time.process_time()

    trainer = L.Trainer(max_steps=total, accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
                        precision=args.precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Timing()],
                        reload_dataloaders_every_n_epochs=1, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    # CPU seconds of this process as well as wall seconds: on a machine shared with other jobs the wall
    # time mostly measures their load, the CPU time what this objective costs.
    return watch.stop(), time.process_time() - cpu["start"]


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from pretrain.model import build_model

    with tempfile.TemporaryDirectory() as work:
        built = {objective: shards(objective, args, Path(work)) for objective in OBJECTIVES}
        fmt = built["mlm"][1]
        model_cfg = bench_mlm.composed("pretrain", ["paths.data_dir=/unused", "paths.work_dir=/unused",
                                                    f"model={args.model}"]).model
        torch.manual_seed(0)
        reference = build_model(model_cfg, fmt["vocab_size"], fmt["special_ids"]["pad"], args.seq_len,
                                fmt["special_ids"])
        hf_config, init_state = reference.config, {k: v.clone() for k, v in reference.state_dict().items()}
        seconds = {objective: [] for objective in OBJECTIVES}
        cpu_seconds = {objective: [] for objective in OBJECTIVES}
        for repeat in range(args.repeats):
            for objective in OBJECTIVES:
                torch.manual_seed(repeat)
                wall, cpu = run(objective, args, hf_config, init_state, *built[objective])
                seconds[objective].append(wall)
                cpu_seconds[objective].append(cpu)
                print(f"repeat {repeat} {objective}: {wall / args.steps:.3f} s/step wall, {cpu / args.steps:.3f} "
                      "CPU s/step", flush=True)
        pairs = built["mlm_nsp"][1]["pairs"]
        info = np.fromfile(built["mlm_nsp"][0] / f"train-{args.seq_len}.pairs_info.bin", dtype=np.int32).reshape(-1, 3)
    tokens = args.steps * args.batch_size * args.seq_len
    results = {o: {"seconds_per_step": statistics.median(s) / args.steps,
                   "tokens_per_s": tokens / statistics.median(s), "seconds_all_repeats": s,
                   "cpu_seconds_per_step": statistics.median(cpu_seconds[o]) / args.steps,
                   "cpu_seconds_all_repeats": cpu_seconds[o]}
               for o, s in seconds.items()}
    report = {
        "device": bench_mlm.device_name(args.device), "command_args": vars(args) | {"out": str(args.out)},
        "note": args.note, "load_average_1min_at_end": os.getloadavg()[0],
        "model": {"name": args.model, "parameters": sum(p.numel() for p in reference.parameters())},
        "results": results,
        "step_time_ratio_nsp_over_mlm": results["mlm_nsp"]["seconds_per_step"] / results["mlm"]["seconds_per_step"],
        "cpu_time_ratio_nsp_over_mlm": results["mlm_nsp"]["cpu_seconds_per_step"] /
        results["mlm"]["cpu_seconds_per_step"],
        "pair_rows": {"examples": pairs["by_seq_len"][str(args.seq_len)]["examples"],
                      "real_tokens_share": float((info[:, 0] + info[:, 1] + 3).mean() / args.seq_len),
                      "random_next_share": pairs["by_seq_len"][str(args.seq_len)]["label_share"]},
        "commit": bench_mlm.commit(),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
