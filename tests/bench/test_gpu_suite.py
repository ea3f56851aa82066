"""The GPU suite's script runs end to end on CPU (tiny models) and writes what the GPU run will."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_cpu_smoke_writes_one_json_and_one_profile_per_run_naming_the_device(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path))
    done = subprocess.run([str(REPO / "bench" / "gpu_suite.sh"), "--cpu-smoke", "--profile"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [summary_path] = tmp_path.glob("*_summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["cpu_smoke"] and "cores visible" in summary["device"]
    runs = {r["run"]: r for r in summary["runs"]}
    assert set(runs) == {"bert_tiny_seq32", "modernbert_tiny_seq32", "bert_tiny_seq32_bf16_layer_norm"}
    assert not [r for r in runs.values() if "error" in r], runs
    bert = json.loads(next(tmp_path.glob("*_bert_tiny_seq32.json")).read_text())
    assert bert["device"] == summary["device"] and set(bert["results"]) == {"bertforge", "hf"}
    for system in bert["results"].values():
        assert system["tokens_per_s"] > 0 and system["peak_memory_mib"] > 100 and system["mfu_vs_989_tflops"] > 0
    assert runs["bert_tiny_seq32"]["speedup_bertforge_over_hf"] > 0
    modern = json.loads(next(tmp_path.glob("*_modernbert_tiny_seq32.json")).read_text())
    assert modern["model"]["name"] == "modernbert_tiny" and set(modern["results"]) == {"bertforge"}
    for run in runs:  # the profiled steps come after the timed ones, in the same compiled model
        profile = next(tmp_path.glob(f"*_{run}_profile.txt")).read_text()
        assert profile.startswith("5 optimiser steps") and "aten::mm" in profile and "AdamW" in profile


def test_gpu_runs_are_the_issue_targets():
    sys.path.insert(0, str(REPO / "bench" / "gpu"))
    import gpu_suite

    runs = {name: " ".join(args) for name, args in gpu_suite.GPU_RUNS.items()}
    for name, model, seq in [("bert_base_seq128", "base", 128), ("bert_base_seq512", "base", 512),
                             ("modernbert_base_seq512", "modernbert_base", 512)]:
        assert f"--model {model} " in runs[name] + " " and f"--seq-len {seq}" in runs[name]
        assert "--precision bf16-mixed" in runs[name] and "--compile" in runs[name] and "--device cuda" in runs[name]
    assert "--only" not in runs["bert_base_seq128"] and "--hf-compile" in runs["bert_base_seq512"]
