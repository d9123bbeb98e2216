#!/usr/bin/env bash
# Stop what tests/integration/cluster/slurm-up.sh FOLDER started (by the PIDs it recorded) and remove FOLDER.
set -uo pipefail
DIR=${1:-/tmp/mdn-slurm}
[ -f "$DIR/started" ] || { echo "slurm-down: nothing recorded in $DIR/started" >&2; exit 1; }
# the last started first: slurmd, slurmctld, then munged (if slurm-up started it)
tac "$DIR/started" | while read -r name pidfile; do
  pid=$(cat "$pidfile" 2>/dev/null || true)
  [ -n "$pid" ] || continue
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  echo "slurm-down: stopped $name ($pid)"
done
rm -rf "$DIR"
