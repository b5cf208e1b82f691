#!/bin/bash
# source launch/slurm/common.sh      (from the *.sbatch scripts; nothing to run on its own)
#
# What every calibtune batch script shares:
# - calibtune_env: the checkout's .venv, and CPU threads from the allocation: srun gets the job's
#   --cpus-per-task (SLURM >= 22.05 no longer passes it on by itself) and OMP_NUM_THREADS is the
#   task's CPUs divided by the processes it starts.
# - run_step: runs one srun step in the background so that the batch shell can act on signals.
#   SIGUSR1 (`#SBATCH --signal=B:USR1@<seconds>` ahead of the time limit) is forwarded to the step,
#   again every few seconds until the step ends (a trainer ignores it until its handler is in
#   place); SIGTERM reaches the step's processes from SLURM itself. A step that ended non-zero
#   after such a signal, or after SLURM chose the job for preemption, is requeued (`scontrol
#   requeue`: same job id, same run dir, the trainer resumes from its checkpoint). Any other
#   failure is reported in the job log and in <run dir>/FAILED, and exits non-zero so that jobs
#   depending on this one (afterok) never start.

STOP_SIGNAL=""
STEP_PID=""

calibtune_env() {
  # Activate the checkout's venv if there is one; export the CPU settings for srun and torch.
  # $1: processes each srun task starts (1 unless a launcher starts several).
  local processes="${1:-1}"
  if [[ -f "${CALIBTUNE_VENV:-.venv}/bin/activate" ]]; then
    # shellcheck disable=SC1091
    source "${CALIBTUNE_VENV:-.venv}/bin/activate"
  fi
  export SRUN_CPUS_PER_TASK="${SLURM_CPUS_PER_TASK:-1}"
  local threads=$((SRUN_CPUS_PER_TASK / processes))
  export OMP_NUM_THREADS=$((threads > 0 ? threads : 1))
}

on_stop_signal() {
  # Trap: remember the signal; run_step forwards USR1 to the step.
  STOP_SIGNAL="$1"
  echo "calibtune: job $(job_ref) received SIG$1 at $(date +%T)"
}

preempted_in_this_run() {
  # True when SLURM chose this job for preemption after its current start.
  local info start preempt
  info="$(scontrol show job -o "${SLURM_JOB_ID}" 2>/dev/null)" || return 1
  start="$(grep -o 'StartTime=[^ ]*' <<<"${info}" | cut -d= -f2)"
  preempt="$(grep -o 'PreemptTime=[^ ]*' <<<"${info}" | cut -d= -f2)"
  [[ -n "${preempt}" && "${preempt}" != "None" && ! "${preempt}" < "${start}" ]]
}

job_log() {
  # The job's stdout file, as SLURM resolved it.
  scontrol show job -o "${SLURM_JOB_ID}" 2>/dev/null | grep -o 'StdOut=[^ ]*' | cut -d= -f2 || true
}

job_ref() {
  # This job as squeue shows it: <array id>_<task> for an array task, else the job id.
  if [[ -n "${SLURM_ARRAY_JOB_ID:-}" ]]; then
    echo "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
  else
    echo "${SLURM_JOB_ID}"
  fi
}

report_failure() {
  # One clear line in the job log and in <run dir>/FAILED. $1: stage, $2: what happened.
  local message
  message="calibtune: stage $1 failed: job $(job_ref) on $(hostname -s) $2 at $(date '+%F %T')"
  message+="; log: $(job_log). Jobs that depend on it do not run."
  message+=" Fix the cause and submit again: finished stages are skipped."
  echo "${message}" >&2
  mkdir -p "${RUN_DIR}"
  echo "${message}" >>"${RUN_DIR}/FAILED"
}

run_step() {
  # run_step <stage> <srun ...>: run the step; on a stop signal or preemption requeue the job,
  # on any other failure report it and exit with the step's status.
  local stage="$1" status=0
  shift
  "$@" &
  STEP_PID=$!
  while true; do
    if [[ "${STOP_SIGNAL}" == "USR1" ]] && kill -0 "${STEP_PID}" 2>/dev/null; then
      kill -USR1 "${STEP_PID}" 2>/dev/null || true # srun forwards it to every task
      sleep 5
      continue
    fi
    wait "${STEP_PID}" && status=0 || status=$?
    kill -0 "${STEP_PID}" 2>/dev/null || break # the step ended; else a trap interrupted wait
  done
  [[ ${status} -eq 0 ]] && return 0
  if [[ -n "${STOP_SIGNAL}" ]] || preempted_in_this_run; then
    echo "calibtune: stage ${stage} stopped (${STOP_SIGNAL:+SIG}${STOP_SIGNAL:-preemption}, step exit ${status}); requeueing job $(job_ref)"
    trap - USR1 TERM # SLURM ends this shell with SIGTERM while it requeues the job
    if scontrol requeue "${SLURM_JOB_ID}"; then
      sleep 60 &
      wait $!
      exit "${status}"
    fi
    report_failure "${stage}" "was stopped (${STOP_SIGNAL:-preemption}) and could not be requeued"
    exit "${status}"
  fi
  report_failure "${stage}" "exited with status ${status}"
  exit "${status}"
}

# From the start of the script: a signal that comes before the step starts is not lost.
trap 'on_stop_signal USR1' USR1
trap 'on_stop_signal TERM' TERM
