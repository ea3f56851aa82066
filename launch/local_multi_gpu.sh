#!/usr/bin/env bash
# When to use: one machine with several GPUs (a workstation, one cloud VM) and no scheduler.
# Lightning starts one process per visible GPU (DDP); the experiment's global batch is kept and the
# gradient accumulation is derived from the GPU count, so the run matches a one-GPU run step for step.
# Choose the hardware layout with TRAINER (a conf/trainer/ option, default ddp; fsdp for large models).
#
#   launch/local_multi_gpu.sh demo_ga
#   CUDA_VISIBLE_DEVICES=0,1 TRAINER=fsdp launch/local_multi_gpu.sh my_experiment
set -euo pipefail
experiment=${1:?usage: launch/local_multi_gpu.sh EXPERIMENT [hydra overrides...]}
shift
exec bertforge pretrain experiment="$experiment" trainer="${TRAINER:-ddp}" "$@"
