"""Side-by-side MLM training throughput: bertforge vs the Hugging Face run_mlm.py recipe.

Both train the same BertForMaskedLM (same config, same initial weights) on the same packed rows, with
the same batch, sequence length, precision, optimiser (fused AdamW, linear schedule, clipping 1.0),
SDPA attention and 15% masking:

  (a) bertforge   pretrain.module.MaskedLMModule in a Lightning Trainer, fed by pretrain.data.PhasedData:
                  fixed-count masking on the device, sparse MLM head, no attention mask, metrics kept on
                  the device, optional torch.compile (--compile)
  (b) HF recipe   transformers.Trainer + DataCollatorForLanguageModeling + BertForMaskedLM, rows given
                  as already-packed `input_ids` (run_mlm.py's group_texts output), dense MLM head
                  (--hf-compile gives it TrainingArguments(torch_compile=True) too)

Each system runs `--warmup-steps` untimed steps, then `--steps` timed ones (the device is synchronised
at both ends). With --repeats > 1 the systems alternate (a b a b ...) and the median is reported, which
evens out other load on a shared machine.

CPU, tiny model, real Irish text (this is what the committed CPU result ran):
  BERTFORGE_DATA=../shared/data python bench/pretrain/bench_mlm.py --device cpu --model tiny \
      --seq-len 128 --batch-size 32 --steps 30 --warmup-steps 5 --repeats 3 --precision 32 \
      --data irish --vocab-size 8000 --out bench/pretrain/results/cpu_tiny_seq128.json

One H100, BERT-base, bf16 (synthetic Zipf-distributed tokens, 30,522-token vocabulary; no data files needed):
  python bench/pretrain/bench_mlm.py --device cuda --model base --seq-len 128 --batch-size 256 \
      --steps 100 --warmup-steps 30 --precision bf16-mixed --data synthetic --compile \
      --out bench/pretrain/results/h100_base_seq128.json
  python bench/pretrain/bench_mlm.py --device cuda --model base --seq-len 512 --batch-size 64 \
      --steps 100 --warmup-steps 30 --precision bf16-mixed --data synthetic --compile \
      --out bench/pretrain/results/h100_base_seq512.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
PROFILE_STEPS = 5  # steps profiled after the timed ones (--profile), so the timing never carries its cost
PEAK_TFLOPS = 989.0  # H100 SXM dense bf16: the denominator of MFU in the issue, whatever the device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="tiny", help="a conf/model option (tiny, base, modernbert_base, ...)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30, help="timed optimiser steps per system and repeat")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed steps first (compile, allocator)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--precision", choices=["32", "bf16-mixed"], default="32")
    parser.add_argument("--data", choices=["irish", "synthetic"], default="irish")
    parser.add_argument("--vocab-size", type=int, default=30522,
                        help="synthetic: the vocabulary; irish: the WordPiece size to train (tokenizer.vocab_size)")
    parser.add_argument("--compile", action="store_true", help="torch.compile bertforge's forward and loss")
    parser.add_argument("--hf-compile", action="store_true", help="TrainingArguments(torch_compile=True) for HF")
    parser.add_argument("--only", choices=["bertforge", "hf"], default=None)
    parser.add_argument("--attention", default="sdpa",
                        help="bertforge's impl.attention (sdpa, sdpa_compiled, eager); the HF recipe keeps its sdpa")
    parser.add_argument("--bf16-layer-norm", action="store_true",
                        help="bertforge's impl.bf16_layer_norm (layer norms in bf16 under bf16-mixed); not the HF recipe")
    parser.add_argument("--model-override", action="append", default=[],
                        help="a Hydra override of the model for both systems, e.g. model.attention_dropout=0")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--note", default="", help="conditions worth recording (shared machine, other load)")
    parser.add_argument("--profile", type=Path, default=None,
                        help=f"bertforge: after the timed steps, {PROFILE_STEPS} more under torch.profiler; "
                             "its table of kernels by own device time is written here")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- data

def irish_rows(seq_len: int, vocab_size: int, work: Path):
    """Packed rows of the Irish treebank at `seq_len`, built by bertforge's own stages; (rows, vocab folder)."""
    from bertforge.stages import run_stages
    from corpora.shards.rows import load_rows

    data_dir = os.environ.get("BERTFORGE_DATA") or str(REPO.parent / "shared" / "data")
    cfg = composed("shards", [f"paths.data_dir={data_dir}", f"paths.work_dir={work}", "experiment=demo_ga",
                              f"shards.seq_len={seq_len}", f"tokenizer.vocab_size={vocab_size}"])
    folders = run_stages(cfg, "shards")
    return np.asarray(load_rows(folders["shards"], "train")), folders["vocab"]


def synthetic_rows(seq_len: int, vocab_size: int, rows: int = 4096, seed: int = 0):
    """Zipf-distributed token rows in the shards layout ([CLS] first, a [SEP] every ~200 tokens)."""
    rng = np.random.default_rng(seed)
    ranks = rng.zipf(1.2, size=(rows, seq_len)) % (vocab_size - 5)
    ids = (ranks + 5).astype(np.int64)  # ids 0..4 are the special tokens
    ids[:, 0] = 2
    ids[rng.random((rows, seq_len)) < 1 / 200] = 3
    return ids


def synthetic_tokenizer(vocab_size: int):
    """A transformers fast tokenizer with the shards' special ids, for the HF collator."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    names = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {name: i for i, name in enumerate(names)} | {f"t{i}": i for i in range(5, vocab_size)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")),
                                   pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                   mask_token="[MASK]")


SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}


# --------------------------------------------------------------------------- timing

def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Stopwatch:
    """Wall time between the end of optimiser step `start_step` and the end of training."""

    def __init__(self, device: str, start_step: int):
        self.device, self.start_step = device, start_step
        self.started = self.stopped = None

    def step_done(self, step: int) -> None:
        if step == self.start_step and self.started is None:
            sync(self.device)
            self.started = time.perf_counter()

    def stop(self) -> float:
        if self.stopped is None:  # the first stop counts (the profiled steps come after it)
            sync(self.device)
            self.stopped = time.perf_counter()
        return self.seconds()

    def seconds(self) -> float:
        return self.stopped - self.started


def step_profiler(device: str, wait: int):
    """torch.profiler over PROFILE_STEPS optimiser steps after the first `wait` (compilation done)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return torch.profiler.profile(activities=activities,
                                  schedule=torch.profiler.schedule(wait=wait, warmup=1, active=PROFILE_STEPS))


def write_profile(profiler, device: str, path: Path) -> None:
    """The profiled steps' operators and kernels by their own time, device time first where there is one."""
    events = profiler.key_averages()
    order = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{PROFILE_STEPS} optimiser steps\n" + events.table(sort_by=order, row_limit=45, max_name_column_width=70))


# --------------------------------------------------------------------------- (a) bertforge

def run_bertforge(args, model_cfg, hf_config, init_state, rows, vocab_size: int) -> dict:
    import lightning as L

    from pretrain.config import MaskingConfig, OptimConfig, TrainingConfig
    from pretrain.data import PackedRows, PhasedData
    from pretrain.model import attn_implementation, use_bf16_layer_norms
    from pretrain.module import MaskedLMModule
    from pretrain.phases import plan_phases

    total = args.warmup_steps + args.steps
    extra = PROFILE_STEPS + 1 if args.profile else 0  # one step for the profiler's own warm-up
    optim = OptimConfig(lr=1e-4, warmup_steps=args.warmup_steps, weight_decay=0.01, grad_clip=1.0)
    plan = plan_phases(TrainingConfig(max_steps=total + extra, batch_size=args.batch_size), 0, optim, args.seq_len)
    model = fresh_model(hf_config, init_state, attn_implementation(args.attention))
    if args.bf16_layer_norm:
        use_bf16_layer_norms(model)
    maskable = float(1 - np.isin(rows[:256], list(SPECIAL.values())).mean())
    module = MaskedLMModule(model, MaskingConfig(), optim, plan, SPECIAL, vocab_size, {args.seq_len: maskable},
                            compile_backend="inductor" if args.compile else "")
    data = PhasedData(plan, {args.seq_len: PackedRows(rows, seed=0)}, num_workers=0,
                      pin_memory=args.device == "cuda")
    watch = Stopwatch(args.device, args.warmup_steps)
    profiler = step_profiler(args.device, wait=total) if args.profile else None

    class Timing(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            watch.step_done(trainer.global_step)
            if trainer.global_step == total:
                watch.stop()
            if profiler is not None:
                profiler.step()

    if profiler is not None:
        profiler.start()
    trainer = L.Trainer(max_steps=total + extra, accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
                        precision=args.precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Timing()],
                        reload_dataloaders_every_n_epochs=1, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    seconds = watch.seconds()
    if profiler is not None:
        profiler.stop()
        write_profile(profiler, args.device, args.profile)
    loss = module.pop_window()["train/loss"]  # mean over the run's steps (never read before: no syncs)
    return {"seconds": seconds, "loss_mean": loss, "masked_per_row": module.masker.per_row(args.seq_len)}


# --------------------------------------------------------------------------- (b) HF run_mlm.py recipe

class RowsDataset(torch.utils.data.Dataset):
    """Packed rows as run_mlm.py's group_texts leaves them: input_ids with an all-ones attention mask."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        ids = torch.as_tensor(self.rows[i], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def run_hf(args, hf_config, init_state, rows, tokenizer) -> dict:
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

    total = args.warmup_steps + args.steps
    model = fresh_model(hf_config, init_state)
    watch = Stopwatch(args.device, args.warmup_steps)
    losses = []

    class Timing(TrainerCallback):
        def on_step_end(self, targs, state, control, **kwargs):
            watch.step_done(state.global_step)

        def on_log(self, targs, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=total, learning_rate=1e-4,
            warmup_steps=args.warmup_steps, weight_decay=0.01, max_grad_norm=1.0, lr_scheduler_type="linear",
            optim="adamw_torch_fused", bf16=args.precision == "bf16-mixed", use_cpu=args.device == "cpu",
            torch_compile=args.hf_compile, logging_steps=total, save_strategy="no", report_to="none",
            disable_tqdm=True, dataloader_num_workers=0, seed=0)
        collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=0.15)
        trainer = Trainer(model=model, args=targs, train_dataset=RowsDataset(rows), data_collator=collator,
                          callbacks=[Timing()])
        trainer.train()
    return {"seconds": watch.stop(), "loss_mean": losses[-1] if losses else None}


# --------------------------------------------------------------------------- shared

def composed(stage: str, overrides: list[str]):
    """The typed config exactly as `bertforge <stage> overrides...` would compose it."""
    from hydra import compose, initialize_config_module

    from bertforge.experiment import load_config

    with initialize_config_module(config_module="bertforge_conf", version_base=None):
        return load_config(compose(config_name=stage, overrides=overrides))


def fresh_model(hf_config, init_state, attention: str = "sdpa"):
    """The config's masked-LM class (BERT, ModernBERT...) with this transformers attn_implementation and the
    benchmark's fixed initial weights."""
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_config(hf_config, attn_implementation=attention)
    model.load_state_dict(init_state)
    return model


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads"


def commit() -> str:
    try:
        if os.environ.get("BERTFORGE_COMMIT"):  # a copied tree whose .git may be stale (a lent GPU machine)
            return os.environ["BERTFORGE_COMMIT"]
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def peak_memory_mib(device: str) -> float:
    """Peak memory of the run just finished: allocated on the GPU, or this process's RSS so far on CPU."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import transformers

    from pretrain.flops import flops_per_token, mfu
    from pretrain.model import build_model

    with tempfile.TemporaryDirectory() as work:
        if args.data == "irish":
            from transformers import PreTrainedTokenizerFast

            rows, vocab_dir = irish_rows(args.seq_len, args.vocab_size, Path(work))
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(vocab_dir))
        else:
            rows, tokenizer = synthetic_rows(args.seq_len, args.vocab_size), synthetic_tokenizer(args.vocab_size)
    vocab_size = len(tokenizer)
    model_cfg = composed("pretrain", ["paths.data_dir=/unused", "paths.work_dir=/unused", f"model={args.model}",
                                      *args.model_override]).model
    torch.manual_seed(0)
    reference = build_model(model_cfg, vocab_size, SPECIAL["pad"], args.seq_len, SPECIAL)
    hf_config, init_state = reference.config, {k: v.clone() for k, v in reference.state_dict().items()}
    systems = ["bertforge", "hf"] if args.only is None else [args.only]
    seconds = {name: [] for name in systems}
    peaks = {name: 0.0 for name in systems}
    losses, masked_per_row = {}, None
    for repeat in range(args.repeats):
        for name in systems:
            torch.manual_seed(repeat)
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            result = run_bertforge(args, model_cfg, hf_config, init_state, rows, vocab_size) if name == "bertforge" \
                else run_hf(args, hf_config, init_state, rows, tokenizer)
            seconds[name].append(result["seconds"])
            peaks[name] = max(peaks[name], peak_memory_mib(args.device))
            losses[name] = result["loss_mean"]
            masked_per_row = result.get("masked_per_row", masked_per_row)
            print(f"repeat {repeat} {name}: {args.steps * args.batch_size * args.seq_len / result['seconds']:,.0f} "
                  f"tokens/s", flush=True)
    tokens = args.steps * args.batch_size * args.seq_len
    # bertforge's head runs on the positions it masked; the HF recipe's dense head on every position.
    flops = {"bertforge": flops_per_token(hf_config, args.seq_len, masked_per_row=masked_per_row),
             "hf": flops_per_token(hf_config, args.seq_len)}
    results = {}
    for name in systems:
        median = statistics.median(seconds[name])
        results[name] = {
            "tokens_per_s": tokens / median, "seconds_per_step": median / args.steps,
            "seconds_all_repeats": seconds[name], "train_flops_per_token": flops[name],
            "mfu_vs_989_tflops": mfu(tokens / median, flops[name], PEAK_TFLOPS),
            # The same useful work counted for both: bertforge's FLOPs (sparse head) per token.
            "mfu_vs_989_tflops_sparse_head_flops": mfu(tokens / median, flops["bertforge"], PEAK_TFLOPS),
            # ... and as papers count a model's FLOPs: the head on every position (transformers' dense head).
            "mfu_vs_989_tflops_dense_head_flops": mfu(tokens / median, flops["hf"], PEAK_TFLOPS),
            "last_logged_loss": losses.get(name),
            "peak_memory_mib": peaks[name],
            "peak_memory_kind": "torch.cuda.max_memory_allocated" if args.device == "cuda" else "process max RSS",
        }
    report = {
        "device": device_name(args.device), "command_args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "note": args.note, "load_average_1min_at_end": os.getloadavg()[0],
        "model": {"name": args.model, "parameters": sum(p.numel() for p in reference.parameters()),
                  "vocab_size_padded": hf_config.vocab_size},
        "tokens_per_step": args.batch_size * args.seq_len, "results": results,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__}, "commit": commit(),
    }
    if len(systems) == 2:
        report["speedup_bertforge_over_hf"] = results["bertforge"]["tokens_per_s"] / results["hf"]["tokens_per_s"]
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
