#!/bin/bash
# launch/slurm/pipeline.sh [hydra overrides]
# SHARDS=8 NODES=2 GPUS_PER_NODE=8 launch/slurm/pipeline.sh model=hf model.name_or_path=<hub id>
# DRY_RUN=1 launch/slurm/pipeline.sh [hydra overrides]      (print the sbatch commands only)
#
# Submits the whole run as chained SLURM jobs, each starting only when the previous one
# succeeded (--dependency=afterok): data shards (array; the last shard merges) -> multi-node
# train -> eval + export. Every job writes under one run dir, outputs/slurm/<data array job id>.
set -euo pipefail
cd "$(dirname "$0")/../.."

SHARDS="${SHARDS:-8}"
NODES="${NODES:-2}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
JOB_ID=""
DRY_RUN_ID=1000

submit() {
  # Print and submit one job; its id is left in JOB_ID.
  echo "+ sbatch --parsable $(printf "%q " "$@")"
  if [[ "${DRY_RUN:-0}" == "1" ]]; then
    DRY_RUN_ID=$((DRY_RUN_ID + 1))
    JOB_ID="${DRY_RUN_ID}"
  else
    JOB_ID="$(sbatch --parsable "$@")"
    JOB_ID="${JOB_ID%%;*}"  # "id;cluster" on federated clusters
  fi
}

mkdir -p outputs/slurm
submit --array="0-$((SHARDS - 1))" launch/slurm/data.sbatch "$@"
data_job="${JOB_ID}"
RUN_DIR="outputs/slurm/${data_job}"
submit --dependency="afterok:${data_job}" --export="ALL,RUN_DIR=${RUN_DIR}" \
  --nodes="${NODES}" --gpus-per-node="${GPUS_PER_NODE}" launch/slurm/train.sbatch "$@"
train_job="${JOB_ID}"
submit --dependency="afterok:${train_job}" --export="ALL,RUN_DIR=${RUN_DIR}" \
  launch/slurm/eval.sbatch "$@"
eval_job="${JOB_ID}"

echo "submitted: data ${data_job} -> train ${train_job} -> eval ${eval_job}"
echo "run dir: ${RUN_DIR}   (follow with: squeue --me; logs in outputs/slurm/)"
