#!/usr/bin/env bash
# chordkd on several machines through torchrun: run this once on every node, same arguments.
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0.example MASTER_PORT=29500 NPROC=4 \
#     experiments/cluster/torchrun.sh fit experiments/stage1.yaml \
#       trainer.num_nodes=2 trainer.devices=4 trainer.strategy=ddp
#   (NODE_RANK=1 on the second node; `label ... --num-nodes 2 --devices 4 --strategy ddp`
#   for labelling.)
#
# Node 0 hosts the rendezvous (MASTER_ADDR:MASTER_PORT must be reachable from every node);
# Lightning reads RANK / LOCAL_RANK / WORLD_SIZE from torchrun's environment, so
# trainer.num_nodes x trainer.devices must equal NNODES x NPROC. Run folders, the audio
# cache and the teacher cache must be on a filesystem every node sees (rank 0 writes
# summaries and merges the label cache). GPUs talk NCCL; CPU runs use gloo.
set -euo pipefail
: "${NNODES:?set NNODES}" "${NODE_RANK:?set NODE_RANK (0 .. NNODES-1)}"
: "${MASTER_ADDR:?set MASTER_ADDR (node 0)}" "${MASTER_PORT:=29500}" "${NPROC:=1}"
exec "${PYTHON:-python}" -m torch.distributed.run \
  --nnodes "$NNODES" --nproc-per-node "$NPROC" --node-rank "$NODE_RANK" \
  --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" \
  -m chordkd "$@"
