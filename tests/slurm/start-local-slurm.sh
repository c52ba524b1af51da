#!/usr/bin/env bash
# start-local-slurm.sh -- bring up a REAL single-node Slurm cluster on this
# machine (Debian 12, run as root), for CI runs of `snakemake --executor slurm`
# / `snakemake --profile profiles/slurm`.
#
# The MVA project's copy of shared/slurm/start-local-slurm.sh (see
# docs/cluster.md). Differences from the shared script:
#   * AccountingStoreFlags=job_comment, so that `sacct -o Comment` shows the
#     rule name the snakemake slurm plugin puts into `sbatch --comment`
#     (tests/slurm/run-slurm-smoke.sh counts Slurm jobs per rule with it);
#   * LOCAL_SLURM_STARTED_LIST=FILE appends the name of every daemon this run
#     started to FILE, so a test can later stop exactly those
#     (stop-local-slurm.sh NAME...).
#
# Idempotent: installs the Debian packages if missing, (re)writes the configs,
# starts only the daemons that are not already running, and waits until the
# node is `idle` in sinfo. Run it as often as you like. Undo with
# stop-local-slurm.sh (stops only what this script started, by PID).
#
# Daemons: munged -> [mariadbd -> slurmdbd] -> slurmctld -> slurmd
#
# Settings (environment):
#   LOCAL_SLURM_ACCOUNTING  slurmdbd (default): real job accounting, so `sacct`
#                           works -- the snakemake slurm plugin's default status
#                           command. Adds mariadb-server + slurmdbd.
#                           none: no database (faster start), but then `sacct`
#                           fails and the plugin MUST be run with
#                           `--slurm-status-command squeue` (see notes).
#   LOCAL_SLURM_STATE       state/log/pid dir   (default /var/lib/local-slurm)
#   LOCAL_SLURM_CLUSTER     ClusterName         (default localcluster)
#   LOCAL_SLURM_PARTITION   partition name      (default debug)
#   LOCAL_SLURM_ACCOUNT     account created in slurmdbd mode (default local)
#   LOCAL_SLURM_DB_PORT     TCP port of the private mariadbd (default 3307)
#   LOCAL_SLURM_MEM_MARGIN  MiB of RAM kept back from the node (default 1024)
#   LOCAL_SLURM_CPUS, LOCAL_SLURM_MEM_MB
#                           advertise more CPUs / memory than the machine has
#                           (SlurmdParameters=config_overrides; jobs then
#                           oversubscribe the real cores). Default: real size.
#   LOCAL_SLURM_TIMEOUT     seconds to wait for each daemon (default 60)
set -euo pipefail

ACCOUNTING=${LOCAL_SLURM_ACCOUNTING:-slurmdbd}
STATE=${LOCAL_SLURM_STATE:-/var/lib/local-slurm}
CLUSTER=${LOCAL_SLURM_CLUSTER:-localcluster}
PARTITION=${LOCAL_SLURM_PARTITION:-debug}
ACCOUNT=${LOCAL_SLURM_ACCOUNT:-local}
DB_PORT=${LOCAL_SLURM_DB_PORT:-3307}
MEM_MARGIN=${LOCAL_SLURM_MEM_MARGIN:-1024}
TIMEOUT=${LOCAL_SLURM_TIMEOUT:-60}

SLURM_ETC=/etc/slurm
MUNGE_PIDFILE=/run/munge/munged.pid
RUN=$STATE/run          # slurm pid files
LOG=$STATE/log
STARTED=$STATE/started  # one file per daemon that THIS script started

log() { echo "[local-slurm +${SECONDS}s] $*" >&2; }
die() {
    log "ERROR: $*"
    for f in "$LOG"/*.log /var/log/munge/munged.log; do
        [ -s "$f" ] && { echo "----- tail $f" >&2; tail -n 20 "$f" >&2; }
    done
    exit 1
}

case "$ACCOUNTING" in slurmdbd|none) ;; *) die "LOCAL_SLURM_ACCOUNTING must be slurmdbd or none";; esac
[ "$(id -u)" = 0 ] || die "must run as root (apt-get, munge user, daemons)"
mkdir -p "$STATE"
exec 9>"$STATE/.lock"   # one start/stop at a time; daemons get 9>&- (else they'd hold it)
flock -w 300 9 || die "could not lock $STATE/.lock"

# ---------------------------------------------------------------- packages --
need_pkgs=()
command -v munged    >/dev/null || need_pkgs+=(munge)
command -v slurmctld >/dev/null || need_pkgs+=(slurmctld)
command -v slurmd    >/dev/null || need_pkgs+=(slurmd)
command -v sbatch    >/dev/null || need_pkgs+=(slurm-client)
if [ "$ACCOUNTING" = slurmdbd ]; then
    command -v slurmdbd >/dev/null || need_pkgs+=(slurmdbd)
    command -v mariadbd >/dev/null || need_pkgs+=(mariadb-server)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

mkdir -p "$RUN" "$LOG" "$STARTED" "$STATE/ctld" "$STATE/d" "$SLURM_ETC"

# ------------------------------------------------------------- helpers ------
# pid_alive PIDFILE COMM: true if PIDFILE names a live process called COMM
pid_alive() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(tr -dc 0-9 <"$1")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}
# wait_for DESCRIPTION COMMAND...: retry COMMAND for up to $TIMEOUT seconds
wait_for() {
    local what=$1 i
    shift
    for ((i = 0; i < TIMEOUT * 4; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    die "timed out after ${TIMEOUT}s waiting for $what"
}
# write_file PATH MODE CONTENT: write only if the content differs
CONFIG_CHANGED=0
CHANGED_FILES=()
write_file() {
    if [ ! -f "$1" ] || [ "$(cat "$1")" != "$3" ]; then
        printf '%s\n' "$3" >"$1.tmp.$$"
        chmod "$2" "$1.tmp.$$"
        mv -f "$1.tmp.$$" "$1"
        CONFIG_CHANGED=1
        CHANGED_FILES+=("$1")
        log "wrote $1"
    fi
}
# NAME PIDFILE
mark_started() {
    echo "$2" >"$STARTED/$1"
    if [ -n "${LOCAL_SLURM_STARTED_LIST:-}" ]; then echo "$1" >>"$LOCAL_SLURM_STARTED_LIST"; fi
}
# stop_daemon COMM PIDFILE: SIGTERM the daemon named in PIDFILE, wait for exit
stop_daemon() {
    local pid i
    pid_alive "$2" "$1" || return 0
    pid=$(tr -dc 0-9 <"$2")
    kill -TERM "$pid"
    for ((i = 0; i < 120; i++)); do [ -d "/proc/$pid" ] || break; sleep 0.25; done
    [ -d "/proc/$pid" ] && kill -KILL "$pid"
    rm -f "$STARTED/$1"
}

# ------------------------------------------------------------------ munge ---
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    install -d -o munge -g munge -m 0700 /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge

if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running"
else
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PIDFILE" 9>&-
    wait_for munged sh -c 'munge -n | unmunge'
    mark_started munged "$MUNGE_PIDFILE"
fi

# ---------------------------------------------------------------- configs ---
NODE=$(hostname -s)
# slurmd -C: "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
HW=$(slurmd -C | head -n 1)
hwval() { sed -n "s/.*[[:space:]]$1=\([0-9]*\).*/\1/p" <<<"$HW"; }
CPUS=$(hwval CPUs)
MEM=$(($(hwval RealMemory) - MEM_MARGIN))
if [ -z "$CPUS" ] || [ "$MEM" -le 0 ]; then die "could not parse 'slurmd -C': $HW"; fi
# Optionally pretend the node is bigger than it is (oversubscription), so that
# rules tuned for a real cluster (threads: 8, mem_mb: 32000) still get scheduled.
OVERRIDES=""
if [ -n "${LOCAL_SLURM_CPUS:-}" ] || [ -n "${LOCAL_SLURM_MEM_MB:-}" ]; then
    CPUS=${LOCAL_SLURM_CPUS:-$CPUS}
    MEM=${LOCAL_SLURM_MEM_MB:-$MEM}
    OVERRIDES="SlurmdParameters=config_overrides"
fi

if [ "$ACCOUNTING" = slurmdbd ]; then
    ACCT_CONF="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
else
    ACCT_CONF="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

write_file "$SLURM_ETC/slurm.conf" 0644 "# written by start-local-slurm.sh -- single-node CI cluster
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
# no cgroups: works in containers/VMs without a delegated cgroup tree
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
# reject jobs that can never run here (e.g. more CPUs than the node has) at
# sbatch time, instead of leaving them PENDING (Reason=PartitionConfig) forever
EnforcePartLimits=ALL
# keep finished jobs visible to squeue/scontrol for 5 min (slurm default)
MinJobAge=300
InactiveLimit=0
KillWait=5
Waittime=0
$ACCT_CONF
JobCompType=jobcomp/none
# store the sbatch --comment (the plugin writes rule name + wildcards there)
AccountingStoreFlags=job_comment
$OVERRIDES
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP"

# ------------------------------------------------- mariadb + slurmdbd -------
if [ "$ACCOUNTING" = slurmdbd ]; then
    DATADIR=$STATE/mysql
    MYRUN=$STATE/mysqld   # owned by mysql: pid file + socket
    SOCK=$MYRUN/mysqld.sock
    sql() { mariadb --no-defaults --socket="$SOCK" -u root "$@"; }
    if pid_alive "$MYRUN/mysqld.pid" mariadbd; then
        log "mariadbd already running"
    else
        if [ ! -d "$DATADIR/mysql" ]; then
            log "initialising private mariadb datadir $DATADIR"
            install -d -o mysql -g mysql -m 0750 "$DATADIR"
            mariadb-install-db --no-defaults --user=mysql --datadir="$DATADIR" \
                --skip-test-db >"$LOG/mariadb-install.log" 2>&1 ||
                die "mariadb-install-db failed (see $LOG/mariadb-install.log)"
        fi
        install -d -o mysql -g mysql -m 0755 "$MYRUN"
        touch "$LOG/mariadb.log" && chown mysql:mysql "$LOG/mariadb.log"
        log "starting mariadbd (127.0.0.1:$DB_PORT)"
        setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DATADIR" \
            --socket="$SOCK" --pid-file="$MYRUN/mysqld.pid" \
            --bind-address=127.0.0.1 --port="$DB_PORT" \
            --log-error="$LOG/mariadb.log" \
            --innodb-buffer-pool-size=512M --innodb-log-file-size=64M \
            --innodb-lock-wait-timeout=900 \
            </dev/null >/dev/null 2>&1 9>&- &
        wait_for mariadbd sql -e 'SELECT 1'
        wait_for "mariadbd pid file" test -s "$MYRUN/mysqld.pid"
        mark_started mariadbd "$MYRUN/mysqld.pid"
    fi
    sql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
            CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

    write_file "$SLURM_ETC/slurmdbd.conf" 0600 "# written by start-local-slurm.sh
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db"
    chown root:root "$SLURM_ETC/slurmdbd.conf"

    if [[ " ${CHANGED_FILES[*]} " == *" $SLURM_ETC/slurmdbd.conf "* ]] &&
        [ -f "$STARTED/slurmdbd" ]; then
        log "slurmdbd.conf changed: restarting slurmdbd"
        stop_daemon slurmdbd "$RUN/slurmdbd.pid"
    fi
    if pid_alive "$RUN/slurmdbd.pid" slurmdbd; then
        log "slurmdbd already running"
    else
        log "starting slurmdbd"
        slurmdbd 9>&-
        wait_for "slurmdbd pid file" test -s "$RUN/slurmdbd.pid"
        mark_started slurmdbd "$RUN/slurmdbd.pid"
    fi
    wait_for slurmdbd sacctmgr -n list cluster
    if ! grep -qx "$CLUSTER" <<<"$(sacctmgr -n -P list cluster format=cluster)"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
fi

# ------------------------------------------------------ slurmctld/slurmd ---
if [ "$CONFIG_CHANGED" = 1 ] && pid_alive "$RUN/slurmctld.pid" slurmctld; then
    if [ -f "$STARTED/slurmctld" ]; then
        # ours: restart so that every setting (e.g. accounting) takes effect
        log "config changed: restarting slurmd + slurmctld"
        stop_daemon slurmd "$RUN/slurmd.pid"
        stop_daemon slurmctld "$RUN/slurmctld.pid"
    else
        log "WARNING: config changed but slurmctld was not started by this script: scontrol reconfigure"
        scontrol reconfigure || true
    fi
fi
if pid_alive "$RUN/slurmctld.pid" slurmctld; then
    log "slurmctld already running"
else
    log "starting slurmctld"
    # -c: forget job/node state of an older cluster if the config changed
    if [ "$CONFIG_CHANGED" = 1 ]; then slurmctld -c 9>&-; else slurmctld 9>&-; fi
    wait_for "slurmctld pid file" test -s "$RUN/slurmctld.pid"
    mark_started slurmctld "$RUN/slurmctld.pid"
fi
wait_for slurmctld scontrol ping

if pid_alive "$RUN/slurmd.pid" slurmd; then
    log "slurmd already running"
else
    log "starting slurmd"
    slurmd 9>&-
    wait_for "slurmd pid file" test -s "$RUN/slurmd.pid"
    mark_started slurmd "$RUN/slurmd.pid"
fi

node_ready() {
    local st
    st=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1)
    case "$st" in
        idle | mixed | allocated | completing) return 0 ;;
        drained | draining | down | fail | failing | *drain*)
            scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    return 1
}
wait_for "node $NODE to become idle" node_ready

if [ "$ACCOUNTING" = slurmdbd ]; then
    # an account + association for root (and $SUDO_USER) so that the plugin's
    # account guessing/validation via sacct/sacctmgr finds something real
    if ! grep -qx "$ACCOUNT" <<<"$(sacctmgr -n -P list account format=account)"; then
        sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" \
            Description="local CI" Organization=ci >/dev/null
    fi
    for u in root ${SUDO_USER:-}; do
        if ! grep -qx "$u" <<<"$(sacctmgr -n -P list assoc user="$u" account="$ACCOUNT" format=user)"; then
            sacctmgr -i add user "$u" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" \
                Cluster="$CLUSTER" >/dev/null
        fi
    done
fi

log "ready: cluster=$CLUSTER node=$NODE cpus=$CPUS mem=${MEM}M partition=$PARTITION accounting=$ACCOUNTING"
[ "$ACCOUNTING" = none ] &&
    log "NOTE: sacct is disabled; run snakemake with --slurm-status-command squeue (else it waits forever)"
sinfo
