#!/usr/bin/env bash
# When to use: any cluster without SLURM (Kubernetes, plain SSH machines, cloud VMs), or one machine
# when you prefer torchrun to Lightning's own process launcher. Run the same command on every node;
# torchrun starts one process per device and Lightning reads RANK/WORLD_SIZE from it.
#
#   launch/torchrun.sh demo_ga                                        # one node, every GPU
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 launch/torchrun.sh my_exp  # on node0 (NODE_RANK=1 on node1)
#   NPROC_PER_NODE=2 TRAINER=ddp_cpu launch/torchrun.sh demo_ga       # two CPU processes (gloo)
#
# The work folder (BERTFORGE_WORK) must be on a filesystem every node sees. Restarting a killed run
# with the same command resumes it from its last checkpoint.
set -euo pipefail
experiment=${1:?usage: launch/torchrun.sh EXPERIMENT [hydra overrides...]}
shift
nnodes=${NNODES:-1}
# torch counts the GPUs this process may use (it honours CUDA_VISIBLE_DEVICES; `nvidia-smi -L` lists every GPU
# and MIG slice), and a machine without a driver gives 0 here instead of ending the script under `set -e`.
nproc=${NPROC_PER_NODE:-$(python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)}
[ "$nproc" -gt 0 ] || { echo "torchrun.sh: no GPU found; set NPROC_PER_NODE (and TRAINER=ddp_cpu on CPUs)" >&2; exit 2; }
if [ "$nnodes" -eq 1 ]; then
  rendezvous=(--standalone)
else
  port=${MASTER_PORT:-29500}
  rendezvous=(--nnodes="$nnodes" --node-rank="${NODE_RANK:?set NODE_RANK (0..NNODES-1)}"
              --master-addr="${MASTER_ADDR:?set MASTER_ADDR to node 0}" --master-port="$port")
fi
default_trainer=$([ "$nnodes" -gt 1 ] && echo multinode || echo ddp)
# Corpus, vocabulary and shards once, in one process, before the ranks start (reused if built). On
# several nodes only node 0 builds them: start the other nodes once it has printed "shards: ...".
if [ "${NODE_RANK:-0}" = 0 ]; then
  bertforge shards experiment="$experiment" "$@"
fi
exec torchrun "${rendezvous[@]}" --nproc-per-node="$nproc" -m bertforge pretrain experiment="$experiment" \
  trainer="${TRAINER:-$default_trainer}" trainer.devices="$nproc" trainer.num_nodes="$nnodes" \
  trainer.cluster=torchrun "$@"
