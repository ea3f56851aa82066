#!/usr/bin/env bash
# When to use: on a single Debian machine where you are root and want a real SLURM to try the
# bertforge SLURM scripts (or datatrove's SLURM executor) on, e.g. in CI or on a workstation.
# It brings up a one-node cluster: munged, slurmctld and slurmd, with a small slurm.conf naming
# this host and its CPUs. It is idempotent: when `sinfo` already shows a usable node it does nothing.
# It never overwrites a slurm.conf it did not write (a real cluster's configuration is left alone).
#
#   sudo launch/slurm/start_local_cluster.sh          # install if needed, start, wait until idle
#   BERTFORGE_SLURM_NO_INSTALL=1 launch/slurm/start_local_cluster.sh   # fail instead of apt-get
#
# Exit status: 0 cluster usable; 3 SLURM cannot be installed or started here (not root, no apt,
# a foreign slurm.conf); anything else is a bug worth reporting. Daemon logs: /var/log/slurm/.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARKER="# written by bertforge launch/slurm/start_local_cluster.sh"
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm
HOST=$(hostname -s)

say() { echo "start_local_cluster: $*" >&2; }
give_up() { say "cannot start SLURM here: $*"; exit 3; }

node_usable() {
  # idle, mixed or allocated all mean slurmd registered and slurmctld schedules on it.
  command -v sinfo >/dev/null 2>&1 || return 1
  local state
  state=$(timeout 5 sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n1) || return 1
  [[ "$state" =~ ^(idle|mixed|allocated|completing)$ ]]
}

# A working cluster is left alone, unless it is ours and we are root: then slurm.conf is refreshed below
# (a no-op when unchanged).
if node_usable && { [ "$(id -u)" != 0 ] || ! grep -qsF "$MARKER" "$CONF"; }; then
  say "SLURM already up on $HOST ($(sinfo -h -N -n "$HOST" -o %T | head -n1))"
  exit 0
fi

[ "$(id -u)" = 0 ] || give_up "not root (the daemons and the Debian packages need root)"

missing=()
for tool in munged slurmctld slurmd sbatch; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ -z "${BERTFORGE_SLURM_NO_INSTALL:-}" ] || give_up "missing ${missing[*]} and BERTFORGE_SLURM_NO_INSTALL is set"
  command -v apt-get >/dev/null 2>&1 || give_up "missing ${missing[*]} and no apt-get to install them"
  say "installing slurmctld slurmd slurm-client munge from Debian (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurmctld slurmd slurm-client munge >/tmp/bertforge-slurm-apt.log 2>&1 \
    || { apt-get update -q >>/tmp/bertforge-slurm-apt.log 2>&1 \
         && apt-get install -y -q slurmctld slurmd slurm-client munge >>/tmp/bertforge-slurm-apt.log 2>&1; } \
    || give_up "apt-get install failed; see /tmp/bertforge-slurm-apt.log"
fi
export PATH="$PATH:/usr/sbin:/sbin"

if [ -e "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
  give_up "$CONF exists and was not written by this script; start that cluster's own daemons instead"
fi

# slurmd -C reports this machine's real sockets/cores/threads/memory, so the node is never
# drained for a hardware mismatch.
NODE_LINE=$(slurmd -C | head -n1)
mkdir -p /etc/slurm "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
cat >"$CONF.new" <<EOF
$MARKER
# A one-node cluster for tests: everything runs as root, no cgroups, no accounting database.
ClusterName=bertforge
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
# Requeued jobs (preemption tests) restart quickly: a requeued job waits cred_expire seconds (default
# 120) before it may start again. Finished jobs stay visible to scontrol for 10 minutes.
AuthInfo=cred_expire=10
JobRequeue=1
KillWait=5
MinJobAge=600
SchedulerParameters=sched_interval=2
$NODE_LINE State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
changed=1
if [ -e "$CONF" ] && cmp -s "$CONF.new" "$CONF"; then changed=0; fi
mv "$CONF.new" "$CONF"

# munged: its key comes with the Debian package; it must run as the munge user.
if ! pgrep -x munged >/dev/null; then
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key && chown munge:munge /etc/munge/munge.key; }
  mkdir -p /run/munge && chown munge:munge /run/munge
  runuser -u munge -- /usr/sbin/munged || give_up "munged failed to start"
fi
if pgrep -x slurmctld >/dev/null && [ "$changed" = 1 ]; then
  # Some settings (cred_expire) are read only at start-up: restart the controller on a changed slurm.conf.
  scontrol shutdown slurmctld >/dev/null 2>&1 || true
  for _ in $(seq 1 20); do pgrep -x slurmctld >/dev/null || break; sleep 0.5; done
fi
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld || give_up "slurmctld failed; see $LOG_DIR/slurmctld.log"
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd || give_up "slurmd failed; see $LOG_DIR/slurmd.log"

for _ in $(seq 1 60); do
  if node_usable; then
    say "SLURM up: $(sinfo -h -N -n "$HOST" -o '%N %T cpus=%c')"
    exit 0
  fi
  state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n1 || true)
  if [[ "$state" =~ (down|drain) ]]; then
    scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
  fi
  sleep 1
done
give_up "node $HOST not idle after 60 s (state: ${state:-unknown}); see $LOG_DIR/slurmctld.log and slurmd.log"
