#!/usr/bin/env bash
# stop-local-slurm.sh -- stop the daemons that start-local-slurm.sh started.
#
# Only daemons recorded in $LOCAL_SLURM_STATE/started/ are touched; each is
# stopped by the PID in its own pid file, and only if that PID is still a
# process of the expected name. Daemons that were already running before
# start-local-slurm.sh (e.g. a system munged) are left alone.
# Safe to run repeatedly / when nothing is running. Leaves packages, configs,
# the database and the state dir in place (the next start is fast).
#
# The MVA project's copy of shared/slurm/stop-local-slurm.sh. Difference:
#   stop-local-slurm.sh [NAME...]   stop only the named daemons (munged,
#   mariadbd, slurmdbd, slurmctld, slurmd), e.g. those that one run of
#   start-local-slurm.sh listed in LOCAL_SLURM_STARTED_LIST; no NAME = all
#   daemons recorded as started by start-local-slurm.sh.
#
#   LOCAL_SLURM_STATE   (default /var/lib/local-slurm), as for the start script
#   LOCAL_SLURM_CANCEL  1 (default): scancel this cluster's jobs before
#                       stopping slurmctld, so no job steps are left behind
set -uo pipefail

STATE=${LOCAL_SLURM_STATE:-/var/lib/local-slurm}
STARTED=$STATE/started
CANCEL=${LOCAL_SLURM_CANCEL:-1}

log() { echo "[local-slurm] $*" >&2; }

[ -d "$STARTED" ] || { log "nothing to stop ($STARTED does not exist)"; exit 0; }
exec 9>"$STATE/.lock"   # wait for a running start-local-slurm.sh
flock -w 300 9 || log "WARNING: could not lock $STATE/.lock; going on"

# wanted NAME: true if NAME was asked for on the command line (or none was)
ONLY=" $* "
wanted() { [ "$ONLY" = "  " ] || [[ "$ONLY" == *" $1 "* ]]; }

# stop NAME COMM: NAME is the marker file, COMM the expected /proc/PID/comm
stop() {
    local name=$1 comm=$2 marker=$STARTED/$1 pidfile pid i
    wanted "$name" || return 0
    [ -f "$marker" ] || return 0
    pidfile=$(cat "$marker")
    pid=$( [ -s "$pidfile" ] && tr -dc 0-9 <"$pidfile" )
    if [ -z "$pid" ] || [ ! -r "/proc/$pid/comm" ] ||
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$comm" ]; then
        log "$name: not running (stale pid file $pidfile)"
        rm -f "$marker"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 120; i++)); do            # up to 30 s
        [ -d "/proc/$pid" ] || break
        sleep 0.25
    done
    if [ -d "/proc/$pid" ]; then
        log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        sleep 0.5
    fi
    rm -f "$marker"
    # daemons remove their pid file on clean exit; mariadbd/munged may not
    [ -d "/proc/$pid" ] || rm -f "$pidfile"
}

if [ "$CANCEL" = 1 ] && wanted slurmctld && [ -f "$STARTED/slurmctld" ] &&
    command -v squeue >/dev/null; then
    jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null
        sleep 2
    fi
fi

stop slurmd slurmd
stop slurmctld slurmctld
stop slurmdbd slurmdbd
stop mariadbd mariadbd
stop munged munged
log "stopped"
