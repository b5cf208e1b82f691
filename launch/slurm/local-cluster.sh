#!/bin/bash
# launch/slurm/local-cluster.sh up|down|status|env
#
# A one-node SLURM cluster on this machine, for trying the launch/slurm scripts and for the tests
# (`make test-slurm`). `up` installs slurm-wlm and munge with apt when they are missing (root),
# writes a munge key and a slurm.conf naming this host with its real CPUs and memory
# (`slurmd -C`), and starts munged, slurmctld and slurmd with every file under one state dir:
# ${CALIBTUNE_SLURM_HOME:-/tmp/calibtune-slurm}. The daemons write their pids there, and `down`
# cancels the cluster's jobs and stops exactly those pids, then deletes the state dir.
#
#   launch/slurm/local-cluster.sh up
#   eval "$(launch/slurm/local-cluster.sh env)"     # SLURM_CONF for sbatch, squeue, scontrol ...
#   sbatch --wrap hostname && squeue
#   launch/slurm/local-cluster.sh down
#
# Partitions: `batch` (default; its jobs can be preempted and requeued, with GraceTime seconds
# between SIGTERM and SIGKILL) and `urgent` (a job there preempts `batch` jobs when it needs their
# CPUs). Ports: CALIBTUNE_SLURMCTLD_PORT (6817), CALIBTUNE_SLURMD_PORT (6818).
set -euo pipefail

HOME_DIR="${CALIBTUNE_SLURM_HOME:-${TMPDIR:-/tmp}/calibtune-slurm}"
CONF="${HOME_DIR}/slurm.conf"
CTLD_PORT="${CALIBTUNE_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${CALIBTUNE_SLURMD_PORT:-6818}"
GRACE_TIME="${CALIBTUNE_SLURM_GRACE_TIME:-60}"
# daemon name -> its pid file (written by the daemon itself)
declare -A PID_FILES=(
  [munged]="${HOME_DIR}/munge/munged.pid"
  [slurmctld]="${HOME_DIR}/run/slurmctld.pid"
  [slurmd]="${HOME_DIR}/run/slurmd.pid"
)
STOP_ORDER=(slurmd slurmctld munged)

say() { echo "local-cluster: $*" >&2; }
die() { say "error: $*"; exit 1; }

install_if_missing() {
  # slurm-wlm (slurmctld, slurmd, sbatch ...) and munge from the distribution, once.
  local missing=()
  for program in munged slurmctld slurmd sbatch; do
    command -v "${program}" >/dev/null || missing+=("${program}")
  done
  [[ ${#missing[@]} -eq 0 ]] && return
  [[ "$(id -u)" == "0" ]] || die "missing ${missing[*]}: run as root, or install slurm-wlm and munge first"
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install slurm-wlm and munge"
  say "installing slurm-wlm and munge (missing: ${missing[*]})"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

pid_of() {
  # The pid recorded for a daemon, if that process is still alive and is that daemon.
  local name="$1" pid
  [[ -f "${PID_FILES[${name}]}" ]] || return 1
  pid="$(tr -dc '0-9' <"${PID_FILES[${name}]}")"
  [[ -n "${pid}" && "$(cat "/proc/${pid}/comm" 2>/dev/null)" == "${name}" ]] || return 1
  echo "${pid}"
}

write_conf() {
  # slurm.conf for this host: its NodeName line comes from `slurmd -C` (real CPUs, RealMemory).
  local host node_line user
  host="$(hostname -s)"
  node_line="$(slurmd -C | head -n 1)"
  [[ "${node_line}" == NodeName=${host}\ * ]] || die "slurmd -C names '${node_line%% *}', not ${host}"
  user="$(id -un)"
  cat >"${CONF}" <<EOF
# written by launch/slurm/local-cluster.sh: a one-node cluster on ${host}
ClusterName=calibtune-local
SlurmctldHost=${host}
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=${user}
SlurmdUser=${user}
AuthType=auth/munge
# cred_expire: a requeued job may start again this many seconds later (default 120)
AuthInfo=socket=${HOME_DIR}/munge/munge.socket.2,cred_expire=10
CredType=cred/munge
StateSaveLocation=${HOME_DIR}/state
SlurmdSpoolDir=${HOME_DIR}/spool
SlurmctldPidFile=${PID_FILES[slurmctld]}
SlurmdPidFile=${PID_FILES[slurmd]}
SlurmctldLogFile=${HOME_DIR}/log/slurmctld.log
SlurmdLogFile=${HOME_DIR}/log/slurmd.log
JobCompType=jobcomp/filetxt
JobCompLoc=${HOME_DIR}/log/jobcomp.log
AccountingStorageType=accounting_storage/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=3600
# schedule every few seconds (the default 60 s would leave requeued and dependent jobs waiting)
SchedulerParameters=sched_interval=2,bf_interval=2
KillWait=30
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
${node_line} State=UNKNOWN
PartitionName=batch Nodes=${host} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=${GRACE_TIME}
PartitionName=urgent Nodes=${host} MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
}

port_in_use() {
  # True when something on this host accepts connections on TCP port $1.
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_for_node() {
  # Until the node is idle (slurmd registered), at most 60 s.
  local state=""
  for _ in $(seq 120); do
    state="$(SLURM_CONF="${CONF}" sinfo -h -N -o %t 2>/dev/null | head -n 1 || true)"
    [[ "${state}" == idle* || "${state}" == mix* || "${state}" == alloc* ]] && return 0
    sleep 0.5
  done
  die "the node did not come up (state '${state}'); logs in ${HOME_DIR}/log"
}

up() {
  install_if_missing
  if pid_of slurmctld >/dev/null; then
    say "already up (${HOME_DIR})"
    return
  fi
  for port in "${CTLD_PORT}" "${SLURMD_PORT}"; do
    ! port_in_use "${port}" || die "port ${port} is in use (another SLURM?); set CALIBTUNE_SLURMCTLD_PORT / CALIBTUNE_SLURMD_PORT"
  done
  trap 'say "up failed: stopping what was started"; down' EXIT
  mkdir -p "${HOME_DIR}"/{munge,state,spool,log,run}
  chmod 700 "${HOME_DIR}/munge"
  if [[ ! -s "${HOME_DIR}/munge/munge.key" ]]; then
    dd if=/dev/urandom of="${HOME_DIR}/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "${HOME_DIR}/munge/munge.key"
  fi
  write_conf
  munged --socket="${HOME_DIR}/munge/munge.socket.2" --key-file="${HOME_DIR}/munge/munge.key" \
    --pid-file="${PID_FILES[munged]}" --log-file="${HOME_DIR}/log/munged.log" \
    --seed-file="${HOME_DIR}/munge/munged.seed" --force
  SLURM_CONF="${CONF}" slurmctld -c -f "${CONF}"
  SLURM_CONF="${CONF}" slurmd -f "${CONF}"
  wait_for_node
  trap - EXIT
  say "up: $(SLURM_CONF="${CONF}" sinfo -h -N -o '%N %c CPUs %m MB %P' | head -n 1)"
  say "use it with: export SLURM_CONF=${CONF}"
}

cancel_jobs() {
  # Cancel every job of the cluster and wait (at most KillWait + 30 s) until none is left.
  SLURM_CONF="${CONF}" scancel --full --user="$(id -un)" 2>/dev/null || true
  for _ in $(seq 120); do
    [[ -z "$(SLURM_CONF="${CONF}" squeue -h -o %i 2>/dev/null)" ]] && return 0
    sleep 0.5
  done
  say "jobs still listed after 60 s: $(SLURM_CONF="${CONF}" squeue -h -o '%i %T' | tr '\n' ' ')"
}

stop_daemon() {
  # TERM the recorded pid, wait up to 15 s, then KILL it.
  local name="$1" pid
  pid="$(pid_of "${name}")" || return 0
  kill -TERM "${pid}" 2>/dev/null || return 0
  for _ in $(seq 30); do
    kill -0 "${pid}" 2>/dev/null || return 0
    sleep 0.5
  done
  say "${name} (pid ${pid}) did not stop on SIGTERM: SIGKILL"
  kill -KILL "${pid}" 2>/dev/null || true
}

down() {
  [[ -d "${HOME_DIR}" ]] || { say "not up (no ${HOME_DIR})"; return; }
  if pid_of slurmctld >/dev/null; then
    cancel_jobs
  fi
  for name in "${STOP_ORDER[@]}"; do
    stop_daemon "${name}"
  done
  rm -rf "${HOME_DIR}"
  say "down"
}

status() {
  local name pid code=0
  for name in munged slurmctld slurmd; do
    if pid="$(pid_of "${name}")"; then
      echo "${name}: running (pid ${pid})"
    else
      echo "${name}: not running"
      code=1
    fi
  done
  if [[ ${code} -eq 0 ]]; then
    SLURM_CONF="${CONF}" sinfo
    SLURM_CONF="${CONF}" squeue
  fi
  return "${code}"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) echo "export SLURM_CONF=${CONF}" ;;
  *) die "usage: $0 up|down|status|env   (state dir: ${HOME_DIR})" ;;
esac
