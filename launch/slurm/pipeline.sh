#!/bin/bash
# launch/slurm/pipeline.sh [hydra overrides]
# RUN_DIR=outputs/slurm/big SHARDS=8 NODES=2 GPUS_PER_NODE=8 launch/slurm/pipeline.sh model=hf model.name_or_path=<hub id>
# DRY_RUN=1 launch/slurm/pipeline.sh [hydra overrides]      (print the sbatch commands only)
#
# Submits the whole run as chained SLURM jobs, each starting only when the previous one
# succeeded (--dependency=afterok): data shards (array, never merging) -> one merge job ->
# multi-node train -> eval + export. Every job writes under one run dir, RUN_DIR (default
# outputs/slurm/run-<date>-<time>), its logs under <run dir>/logs/.
# Submitting again with the same RUN_DIR skips the stages whose outputs are complete (a finished
# pipeline submits nothing) and submits nothing while jobs of an earlier submission are queued or
# running. A failing job writes <run dir>/FAILED; the jobs after it are cancelled
# (--kill-on-invalid-dep=yes).
#
# Settings (environment): SHARDS (8), NODES (2), GPUS_PER_NODE (8; 0 on a CPU-only cluster, where
# train uses launch/accelerate/cpu.yaml), CPUS_PER_TASK (each script's own when unset), EXPORT (1);
# extra sbatch options for one stage: DATA_SBATCH_ARGS, MERGE_SBATCH_ARGS, TRAIN_SBATCH_ARGS,
# EVAL_SBATCH_ARGS (e.g. TRAIN_SBATCH_ARGS="--time=12:00:00 --signal=B:USR1@600"); for every job,
# the SBATCH_* variables sbatch reads (SBATCH_PARTITION, SBATCH_ACCOUNT, ...).
set -euo pipefail
cd "$(dirname "$0")/../.."

SHARDS="${SHARDS:-8}"
NODES="${NODES:-2}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
RUN_DIR="${RUN_DIR:-outputs/slurm/run-$(date +%Y%m%d-%H%M%S)}"
JOBS_FILE="${RUN_DIR}/pipeline.jobs"
JOB_ID=""
DRY_RUN_ID=1000
DEPENDENCY=()
COMMON=(--export="ALL,RUN_DIR=${RUN_DIR}")
[[ -n "${CPUS_PER_TASK:-}" ]] && COMMON+=(--cpus-per-task="${CPUS_PER_TASK}")
STAGE_GPUS=$((GPUS_PER_NODE > 0 ? 1 : 0))

submit() {
  # Print and submit one job after the previous one (afterok); its id is left in JOB_ID.
  local stage="$1"
  shift
  local args=("${DEPENDENCY[@]}" "${COMMON[@]}" "$@")
  echo "+ sbatch --parsable $(printf "%q " "${args[@]}")"
  if [[ "${DRY_RUN:-0}" == "1" ]]; then
    DRY_RUN_ID=$((DRY_RUN_ID + 1))
    JOB_ID="${DRY_RUN_ID}"
  else
    JOB_ID="$(sbatch --parsable "${args[@]}")"
    JOB_ID="${JOB_ID%%;*}" # "id;cluster" on federated clusters
    echo "${stage} ${JOB_ID}" >>"${JOBS_FILE}"
  fi
  DEPENDENCY=(--dependency="afterok:${JOB_ID}" --kill-on-invalid-dep=yes)
}

still_queued() {
  # Jobs of an earlier submission of this run dir that are pending or running.
  [[ -f "${JOBS_FILE}" ]] || return 0
  local ids
  ids="$(cut -d' ' -f2 "${JOBS_FILE}" | paste -sd, -)"
  squeue -h -j "${ids}" -o '%i %j %T' 2>/dev/null || true
}

stage_done() {
  # True when a stage's outputs are complete in the run dir.
  case "$1" in
    data) [[ -f "${RUN_DIR}/data/manifest.json" ]] ;;
    train) [[ -f "${RUN_DIR}/train/manifest.json" ]] ;;
    eval) [[ -f "${RUN_DIR}/eval/metrics.json" && ("${EXPORT:-1}" != "1" || -d "${RUN_DIR}/export") ]] ;;
    *) return 1 ;;
  esac
}

todo=()
for stage in data train eval; do # a stage that runs again runs every stage after it too
  if [[ ${#todo[@]} -eq 0 ]] && stage_done "${stage}"; then
    echo "${stage}: done in ${RUN_DIR}, skipped"
  else
    todo+=("${stage}")
  fi
done
if [[ ${#todo[@]} -eq 0 ]]; then
  echo "pipeline ${RUN_DIR}: every stage is done; nothing submitted"
  exit 0
fi
if [[ "${DRY_RUN:-0}" != "1" ]]; then
  queued="$(still_queued)"
  if [[ -n "${queued}" ]]; then
    echo "pipeline ${RUN_DIR}: jobs of an earlier submission are still queued or running; nothing submitted:"
    echo "${queued}"
    exit 0
  fi
  mkdir -p "${RUN_DIR}/logs"
  rm -f "${RUN_DIR}/FAILED" "${JOBS_FILE}"
fi

LOGS="${RUN_DIR}/logs"
submitted=()
# shellcheck disable=SC2086  # the *_SBATCH_ARGS are lists of options
for stage in "${todo[@]}"; do
  case "${stage}" in
    data)
      submit data --array="0-$((SHARDS - 1))" --gpus="${STAGE_GPUS}" ${DATA_SBATCH_ARGS:-} \
        --output="${LOGS}/%x-%A_%a.out" launch/slurm/data.sbatch "$@"
      submitted+=("data ${JOB_ID} (array of ${SHARDS})")
      submit merge --job-name=calibtune-merge --gpus=0 --cpus-per-task=1 ${MERGE_SBATCH_ARGS:-} \
        --output="${LOGS}/%x-%j.out" launch/slurm/data.sbatch data.num_shards="${SHARDS}" "$@"
      submitted+=("merge ${JOB_ID}")
      ;;
    train)
      submit train --nodes="${NODES}" --gpus-per-node="${GPUS_PER_NODE}" ${TRAIN_SBATCH_ARGS:-} \
        --output="${LOGS}/%x-%j.out" launch/slurm/train.sbatch "$@"
      submitted+=("train ${JOB_ID}")
      ;;
    eval)
      submit eval --gpus="${STAGE_GPUS}" ${EVAL_SBATCH_ARGS:-} \
        --output="${LOGS}/%x-%j.out" launch/slurm/eval.sbatch "$@"
      submitted+=("eval ${JOB_ID}")
      ;;
  esac
done
summary="$(printf ' -> %s' "${submitted[@]}")"
echo "submitted: ${summary:4}"
echo "run dir: ${RUN_DIR}   (follow with: squeue --me; logs in ${LOGS}/)"
