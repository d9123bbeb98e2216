#!/usr/bin/env bash
# Bring up a throwaway one-node SLURM on this machine (Debian/Ubuntu, as root) for the cluster tests.
#   tests/integration/cluster/slurm-up.sh [FOLDER]     (default /tmp/mdn-slurm)
# Installs slurmctld, slurmd, slurm-client and munge with apt when they are missing, writes
# FOLDER/slurm.conf, starts munged (unless one runs already), slurmctld and slurmd, waits until the
# node is idle and records what it started in FOLDER/started. Clients find the cluster through
#   export SLURM_CONF=FOLDER/slurm.conf
# tests/integration/cluster/slurm-down.sh FOLDER stops exactly what was started, by PID. Exits non-zero, with
# one line, when it cannot bring the cluster up.
set -euo pipefail
DIR=${1:-/tmp/mdn-slurm}
fail() { echo "slurm-up: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (it starts munged and slurmd); run it as root or skip the cluster tests"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || fail "slurm and munge are not installed and there is no apt-get to install them"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
     slurmctld slurmd slurm-client munge) >/dev/null 2>&1 \
    || fail "apt-get could not install slurmctld slurmd slurm-client munge (no network to the package registry?)"
fi
if [ -f "$DIR/started" ]; then fail "$DIR/started exists: a cluster from an earlier call may still run; tests/integration/cluster/slurm-down.sh $DIR first"; fi
mkdir -p "$DIR"/{state,spool,log}
: > "$DIR/started"

# munge: one daemon per machine; start it only when none runs, and then remember it
if ! pgrep -x munged >/dev/null; then
  mkdir -p /run/munge && chown munge:munge /run/munge
  [ -f /etc/munge/munge.key ] || fail "/etc/munge/munge.key is missing (reinstall munge)"
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  echo "munged /run/munge/munged.pid" >> "$DIR/started"
fi
munge -n | unmunge >/dev/null 2>&1 || fail "munge does not work (munge -n | unmunge failed)"

HOST=$(hostname -s)
NODE=$(slurmd -C | head -1)
cat > "$DIR/slurm.conf" <<CONF
ClusterName=mdn-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
$NODE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$DIR/slurm.conf
slurmctld -f "$SLURM_CONF" && echo "slurmctld $DIR/slurmctld.pid" >> "$DIR/started"
slurmd -f "$SLURM_CONF" && echo "slurmd $DIR/slurmd.pid" >> "$DIR/started"
for _ in $(seq 100); do
  if scontrol ping >/dev/null 2>&1 && [ "$(sinfo -h -N -o %T 2>/dev/null | head -1)" = idle ]; then
    echo "slurm-up: one-node cluster ready; export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  state=$(sinfo -h -N -o %T 2>/dev/null | head -1 || true)
  case "$state" in down*|drain*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;; esac
  sleep 0.2
done
fail "the node did not become idle in 20 s (see $DIR/log/); stop it with tests/integration/cluster/slurm-down.sh $DIR"
