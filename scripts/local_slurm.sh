#!/usr/bin/env bash
# A real single-node Slurm on this machine, for the `slurm` test tier and for trying sweeps locally.
#
#   bash scripts/local_slurm.sh start    # install what is missing, start what is not running (idempotent)
#   bash scripts/local_slurm.sh status   # what runs
#   bash scripts/local_slurm.sh stop     # cancel jobs, stop every daemon this script started
#   source "$SLURM_BASE/env.sh"          # then sbatch/squeue/sacct and submitit talk to this cluster
#
# Why this shape (measured; docs/architecture.md, "Slurm facts"): no systemd here, so every daemon is started by hand
# and tracked by its pid file; all state lives under $SLURM_BASE and nothing is written to /etc/slurm or
# /run/munge, so several clusters (ports apart) can coexist and `rm -rf $SLURM_BASE` resets everything.
# Accounting (slurmdbd + MariaDB) is on by default because without it sacct cannot tell a cancelled or
# requeued job apart and submitit waits forever.
#
# Settings (environment):
#   SLURM_BASE=/tmp/merge-study-slurm  SLURM_ACCOUNTING=1  SLURM_FAKE_GPUS=2  SLURM_CPUS=4
#   SLURM_PORT_BASE=6817 (slurmctld; slurmd +1, slurmdbd +2)  SLURM_DB_PORT=3307  SLURM_APT_OPTS=""
set -euo pipefail

SLURM_BASE=${SLURM_BASE:-/tmp/merge-study-slurm}
SLURM_ACCOUNTING=${SLURM_ACCOUNTING:-1}
SLURM_FAKE_GPUS=${SLURM_FAKE_GPUS:-2}
SLURM_CPUS=${SLURM_CPUS:-4}
SLURM_PORT_BASE=${SLURM_PORT_BASE:-6817}
SLURM_DB_PORT=${SLURM_DB_PORT:-3307}
SLURM_APT_OPTS=${SLURM_APT_OPTS:-}

B=$(realpath -m -- "$SLURM_BASE")
CONF_DIR=$B/etc
export SLURM_CONF=$CONF_DIR/slurm.conf
MUNGE_SOCKET=$B/munge-run/munge.socket
DB_SOCKET=$B/db/mysqld.sock
CTLD_PORT=$SLURM_PORT_BASE
SLURMD_PORT=$((SLURM_PORT_BASE + 1))
DBD_PORT=$((SLURM_PORT_BASE + 2))
PACKAGES_CORE=(slurmctld slurmd slurm-client munge)
PACKAGES_ACCT=(slurmdbd mariadb-server)

log() { printf '[local_slurm] %s\n' "$*" >&2; }

# die MESSAGE [LOGFILE]: one line that says what failed and what to do, then the tail of the log to read.
die() {
    log "ERROR: $1"
    if [[ -n ${2:-} ]]; then
        if [[ -s $2 ]]; then
            log "last lines of $2:"
            tail -n 25 "$2" | sed 's/^/    /' >&2
        else
            log "(log file $2 is empty or missing)"
        fi
    fi
    exit 1
}

# wait_for SECONDS DAEMON COMMAND...: poll COMMAND every 0.2 s until it succeeds (0) or the deadline passes
# (1). DAEMON is watched too ("-": nothing; NAME: its pid file; NAME:PID: that process or its pid file): once
# it has had 3 s to write its pid file and is not alive, waiting longer is pointless (2), so a daemon that
# dies at once is reported at once.
wait_for() {
    local t0=$SECONDS deadline=$((SECONDS + $1)) daemon=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        if [[ $daemon != - ]] && ((SECONDS - t0 >= 3)) && ! daemon_alive "$daemon"; then
            return 2
        fi
        sleep 0.2
    done
}

daemon_alive() {
    [[ $1 == *:* ]] && kill -0 "${1#*:}" 2>/dev/null && return 0
    live_pid "${1%%:*}" >/dev/null
}

# await_daemon SECONDS NAME HINT COMMAND...: wait_for, or die naming the daemon, what went wrong and its log.
# NAME may be NAME:PID to watch a process that has not written its pid file yet (mariadbd).
await_daemon() {
    local secs=$1 name=${2%%:*} hint=$3 watch=$2 rc=0
    shift 3
    wait_for "$secs" "$watch" "$@" || rc=$?
    case $rc in
        0) return 0 ;;
        2) die "$name exited during start-up ($hint)" "$(log_file "$name")" ;;
        *) die "$name did not become ready within $secs s ($hint)" "$(log_file "$name")" ;;
    esac
}

# --- pid files -----------------------------------------------------------------------------------------

pid_file() {
    case $1 in
        munged) echo "$B/munge-run/munged.pid" ;;
        mariadbd) echo "$B/db/mariadbd.pid" ;;
        *) echo "$B/run/$1.pid" ;;
    esac
}

log_file() {
    case $1 in
        mariadbd) echo "$B/log/mariadbd.err" ;;
        *) echo "$B/log/$1.log" ;;
    esac
}

# live_pid NAME: the pid from NAME's pid file if that process is alive and is really NAME (pids get reused).
live_pid() {
    local f pid
    f=$(pid_file "$1")
    [[ -r $f ]] || return 1
    pid=$(tr -dc '0-9' <"$f")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
    echo "$pid"
}

# stop_daemons NAME...: SIGTERM them all at once, wait until gone, SIGKILL after 20 s (slurmctld needs 2-6 s).
stop_daemons() {
    local name pid pids=() names=()
    for name in "$@"; do
        if pid=$(live_pid "$name"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
            names+=("$name")
        fi
    done
    ((${#pids[@]})) || return 0
    log "stopping ${names[*]}"
    local deadline=$((SECONDS + 20)) i alive
    while :; do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        if ((SECONDS >= deadline)); then
            for i in "${!pids[@]}"; do
                if kill -0 "${pids[$i]}" 2>/dev/null; then
                    log "${names[$i]} (pid ${pids[$i]}) ignored SIGTERM for 20 s: sending SIGKILL"
                    kill -KILL "${pids[$i]}" 2>/dev/null || true
                fi
            done
            sleep 0.5
            break
        fi
        sleep 0.2
    done
    for name in "${names[@]}"; do rm -f "$(pid_file "$name")"; done
}

# --- packages ------------------------------------------------------------------------------------------

missing_packages() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
    done
}

# Install only what is missing; a failure is usually stale package lists, so update and retry.
install_packages() {
    local wanted=("${PACKAGES_CORE[@]}") missing attempt
    [[ $SLURM_ACCOUNTING == 1 ]] && wanted+=("${PACKAGES_ACCT[@]}")
    mapfile -t missing < <(missing_packages "${wanted[@]}")
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "packages ${missing[*]} are missing and apt-get is not available: install them by hand"
    log "installing ${missing[*]} (apt-get, --no-install-recommends)"
    # Without systemd, postinst scripts may try to start the packaged daemons on default paths; a policy-rc.d
    # that answers 101 stops them. Only created (and removed) when the system has none.
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
    fi
    local apt_log=$B/log/apt.log ok=0
    for attempt in 1 2 3; do
        if ((attempt > 1)) || [[ -z $(ls /var/lib/apt/lists/ 2>/dev/null | grep -v -e '^lock$' -e '^partial$' -e '^auxfiles$') ]]; then
            apt-get update $SLURM_APT_OPTS >>"$apt_log" 2>&1 || log "apt-get update failed (attempt $attempt), see $apt_log"
        fi
        # shellcheck disable=SC2086
        if DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $SLURM_APT_OPTS \
            "${missing[@]}" >>"$apt_log" 2>&1; then
            ok=1
            break
        fi
        log "apt-get install failed (attempt $attempt of 3); updating package lists and retrying"
        sleep $((attempt * 2))
    done
    ((own_policy)) && rm -f /usr/sbin/policy-rc.d
    ((ok)) || die "could not install ${missing[*]}: read $apt_log" "$apt_log"
}

# --- configuration -------------------------------------------------------------------------------------

real_memory_mb() {
    awk '/^MemTotal:/ { printf "%d\n", $2 / 1024 * 0.9 }' /proc/meminfo
}

render_slurm_conf() {
    local gres_node=""
    ((SLURM_FAKE_GPUS > 0)) && gres_node=" Gres=gpu:$SLURM_FAKE_GPUS"
    cat <<EOF
# single-node test cluster written by scripts/local_slurm.sh (regenerated on every start: edit the script)
ClusterName=localci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$B/state
SlurmdSpoolDir=$B/spool
SlurmctldPidFile=$(pid_file slurmctld)
SlurmdPidFile=$(pid_file slurmd)
SlurmctldLogFile=$(log_file slurmctld)
SlurmdLogFile=$(log_file slurmd)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
# re-run the scheduler often so that jobs made eligible by time (requeue hold, --begin) start promptly
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
# slurmd reports the node as configured below (SLURM_CPUS may exceed the real cores), not as detected
SlurmdParameters=config_overrides
# preemption: jobs in partition "high" requeue jobs in "debug"; with preempt_send_user_signal the
# job's --signal (submitit: USR2) arrives at preemption, so Checkpointable jobs checkpoint + requeue
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
EOF
    ((SLURM_FAKE_GPUS > 0)) && echo "GresTypes=gpu"
    if [[ $SLURM_ACCOUNTING == 1 ]]; then
        cat <<EOF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/linux
EOF
        ((SLURM_FAKE_GPUS > 0)) && echo "AccountingStorageTRES=gres/gpu"
    else
        echo "AccountingStorageType=accounting_storage/none"
        echo "JobAcctGatherType=jobacct_gather/none"
    fi
    cat <<EOF
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$SLURM_CPUS Sockets=1 CoresPerSocket=$SLURM_CPUS ThreadsPerCore=1 RealMemory=$(real_memory_mb)$gres_node State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=30
PartitionName=high Nodes=localhost MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
}

render_gres_conf() {
    echo "AutoDetect=off"
    ((SLURM_FAKE_GPUS > 0)) && echo "NodeName=localhost Name=gpu File=$B/fakegpu[0-$((SLURM_FAKE_GPUS - 1))]"
    return 0
}

render_slurmdbd_conf() {
    cat <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$(log_file slurmdbd)
PidFile=$(pid_file slurmdbd)
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$SLURM_DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
}

# write_if_changed FILE MODE: stdin into FILE; returns 0 when the content changed (or the file was new).
write_if_changed() {
    local file=$1 mode=$2 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        chmod "$mode" "$file"
        return 1
    fi
    mv -f "$tmp" "$file"
    return 0
}

# Sets SLURM_CONF_CHANGED / DBD_CONF_CHANGED to 1 when running daemons must restart to see a new config.
write_configs() {
    SLURM_CONF_CHANGED=0 DBD_CONF_CHANGED=0
    render_slurm_conf | write_if_changed "$CONF_DIR/slurm.conf" 644 && SLURM_CONF_CHANGED=1
    render_gres_conf | write_if_changed "$CONF_DIR/gres.conf" 644 && SLURM_CONF_CHANGED=1
    # slurmdbd has no -f: it reads slurmdbd.conf next to $SLURM_CONF and refuses it unless mode 600
    render_slurmdbd_conf | write_if_changed "$CONF_DIR/slurmdbd.conf" 600 && DBD_CONF_CHANGED=1
    return 0
}

make_fake_gpus() {
    local i dev
    for ((i = 0; i < SLURM_FAKE_GPUS; i++)); do
        dev=$B/fakegpu$i
        [[ -c $dev ]] && continue
        rm -f "$dev"
        # a character device (same numbers as /dev/null): a regular file counts as gres but never sets CUDA_VISIBLE_DEVICES
        mknod "$dev" c 1 3 || die "mknod $dev failed: fake GPUs need root and a filesystem that allows device nodes (or set SLURM_FAKE_GPUS=0)"
    done
}

# --- daemons -------------------------------------------------------------------------------------------

start_munged() {
    if [[ ! -s $B/munge/munge.key ]]; then
        if command -v mungekey >/dev/null; then
            mungekey -c -k "$B/munge/munge.key" 2>>"$B/log/munged.log" || die "mungekey could not create $B/munge/munge.key" "$B/log/munged.log"
        else
            dd if=/dev/urandom of="$B/munge/munge.key" bs=1024 count=1 status=none
        fi
        chmod 600 "$B/munge/munge.key"
    fi
    live_pid munged >/dev/null && return 0
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    munged --socket="$MUNGE_SOCKET" --key-file="$B/munge/munge.key" --log-file="$(log_file munged)" \
        --pid-file="$(pid_file munged)" --seed-file="$B/munge/munged.seed" 9>&- \
        || die "munged did not start" "$(log_file munged)"
    await_daemon 10 munged "socket $MUNGE_SOCKET" munge_roundtrip
    STARTED+=(munged)
}

munge_roundtrip() { munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET"; }

mariadb_ping() { mariadb-admin --no-defaults -S "$DB_SOCKET" -u root ping; }

start_mariadb() {
    if ! live_pid mariadbd >/dev/null; then
        if [[ ! -d $B/db/data/mysql ]]; then
            log "initialising MariaDB in $B/db/data"
            rm -rf "$B/db/data"
            mariadb-install-db --no-defaults --datadir="$B/db/data" --user=root \
                --auth-root-authentication-method=normal --skip-test-db >"$B/log/mariadb-install.log" 2>&1 \
                || die "mariadb-install-db failed" "$B/log/mariadb-install.log"
        fi
        rm -f "$DB_SOCKET"
        require_free_port "$SLURM_DB_PORT" mariadbd SLURM_DB_PORT
        setsid nohup mariadbd --no-defaults --datadir="$B/db/data" --user=root --socket="$DB_SOCKET" \
            --pid-file="$(pid_file mariadbd)" --bind-address=127.0.0.1 --port="$SLURM_DB_PORT" \
            --innodb-buffer-pool-size=64M --log-error="$(log_file mariadbd)" \
            </dev/null >"$B/log/mariadbd.out" 2>&1 9>&- &
        await_daemon 60 "mariadbd:$!" "is port $SLURM_DB_PORT free? else set SLURM_DB_PORT" mariadb_ping
        STARTED+=(mariadbd)
    fi
    mariadb --no-defaults -S "$DB_SOCKET" -u root -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" 2>>"$(log_file mariadbd)" \
        || die "could not create the MariaDB user for slurmdbd" "$(log_file mariadbd)"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A daemon whose port is taken keeps retrying the bind instead of exiting, so check before starting it.
require_free_port() {
    port_open "$1" && die "port $1 (for $2) is already in use by another program: stop it, or choose other ports with $3"
    return 0
}

start_slurmdbd() {
    live_pid slurmdbd >/dev/null && return 0
    require_free_port "$DBD_PORT" slurmdbd SLURM_PORT_BASE
    slurmdbd 9>&- || die "slurmdbd did not start" "$(log_file slurmdbd)"
    await_daemon 30 slurmdbd "is port $DBD_PORT free? else set SLURM_PORT_BASE" port_open "$DBD_PORT"
    STARTED+=(slurmdbd)
}

ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

start_slurmctld() {
    live_pid slurmctld >/dev/null && return 0
    require_free_port "$CTLD_PORT" slurmctld SLURM_PORT_BASE
    slurmctld 9>&- || die "slurmctld did not start" "$(log_file slurmctld)"
    await_daemon 30 slurmctld "is port $CTLD_PORT free? else set SLURM_PORT_BASE" ctld_up
    STARTED+=(slurmctld)
}

node_state() { sinfo -h -N -n localhost -o %T 2>/dev/null | head -n 1; }

node_ready() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }

start_slurmd() {
    if ! live_pid slurmd >/dev/null; then
        require_free_port "$SLURMD_PORT" slurmd SLURM_PORT_BASE
        slurmd -N localhost 9>&- || die "slurmd did not start" "$(log_file slurmd)"
        STARTED+=(slurmd)
    fi
    local rc=0
    wait_for 15 slurmd node_ready || rc=$?
    ((rc == 2)) && die "slurmd exited during start-up (is port $SLURMD_PORT free? else set SLURM_PORT_BASE)" "$(log_file slurmd)"
    if ((rc)); then
        # a node left down/drained by an earlier crash or kill does not come back by itself
        scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
        await_daemon 15 slurmd "node localhost is '$(node_state)', expected idle; see also $(log_file slurmctld)" node_ready
    fi
}

smoke() {
    local out=$B/log/smoke.log
    timeout 60 srun -N1 -t 1 true >"$out" 2>&1 \
        || die "smoke job 'srun -N1 true' failed or hung for 60 s (see also $(log_file slurmctld))" "$out"
}

# --- commands ------------------------------------------------------------------------------------------

require_root() {
    [[ $(id -u) == 0 ]] || die "run as root: the daemons run as root and fake GPUs need mknod (try: sudo bash $0 ${1:-start})"
}

cmd_start() {
    require_root start
    local t0=$SECONDS
    mkdir -p "$B"/{etc,state,spool,log,run,munge,munge-run,db}
    # munged refuses a socket dir not traversable by all, and a key dir readable by others
    chmod 755 "$B" "$B/munge-run"
    chmod 700 "$B/munge"
    # fd 9 holds the lock; every daemon is started with 9>&- so that none inherits (and keeps) it
    exec 9>"$B/run/start.lock"
    flock -w 300 9 || die "another 'local_slurm.sh start' holds $B/run/start.lock for 5 minutes"

    install_packages
    STARTED=()
    write_configs
    ((SLURM_FAKE_GPUS > 0)) && make_fake_gpus
    if ((SLURM_CONF_CHANGED || DBD_CONF_CHANGED)) && { live_pid slurmctld || live_pid slurmd || live_pid slurmdbd; } >/dev/null; then
        log "configuration changed: restarting the Slurm daemons"
        stop_daemons slurmd slurmctld
        ((DBD_CONF_CHANGED)) && stop_daemons slurmdbd
    fi

    start_munged
    if [[ $SLURM_ACCOUNTING == 1 ]]; then
        start_mariadb
        start_slurmdbd
    else
        stop_daemons slurmdbd
        stop_daemons mariadbd
    fi
    start_slurmctld
    start_slurmd
    ((${#STARTED[@]})) && smoke

    printf '# written by scripts/local_slurm.sh: point Slurm clients (sbatch, sacct, submitit) at this cluster\nexport SLURM_CONF=%q\n' \
        "$SLURM_CONF" >"$B/env.sh"
    if ((${#STARTED[@]})); then
        log "started ${STARTED[*]} in $((SECONDS - t0)) s"
    else
        log "already running"
    fi
    log "ready: source $B/env.sh"
}

# Jobs' slurmstepd processes outlive slurmd, so cancel the jobs first while slurmctld still answers.
cancel_jobs() {
    live_pid slurmctld >/dev/null || return 0
    local jobs
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    [[ -n ${jobs// /} ]] || return 0
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    wait_for 20 - no_jobs || log "jobs still listed after 20 s; stopping anyway"
}

no_jobs() { [[ -z $(squeue -h -o %A 2>/dev/null) ]]; }

# Steps left behind (e.g. slurmd killed first): slurmstepd processes holding files under $B.
kill_stray_steps() {
    local pid fd
    for pid in $(pgrep -x slurmstepd 2>/dev/null || true); do
        for fd in /proc/"$pid"/fd/*; do
            if [[ $(readlink "$fd" 2>/dev/null) == "$B/"* ]]; then
                log "killing leftover slurmstepd $pid"
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
        done
    done
}

cmd_stop() {
    if [[ ! -d $B ]]; then
        log "nothing to stop: $B does not exist"
        return 0
    fi
    local t0=$SECONDS
    cancel_jobs
    stop_daemons slurmd slurmctld
    stop_daemons slurmdbd
    stop_daemons mariadbd munged
    kill_stray_steps
    log "stopped in $((SECONDS - t0)) s (state kept in $B; remove it for a fresh cluster)"
}

# Exit status 0 when every expected daemon runs, 3 otherwise (like `systemctl status`).
cmd_status() {
    local name pid rc=0
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        if pid=$(live_pid "$name"); then
            printf '%-10s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-10s not running\n' "$name"
            # the accounting daemons are only expected when the running config uses them
            if [[ $name != mariadbd && $name != slurmdbd ]] || grep -qs 'accounting_storage/slurmdbd' "$SLURM_CONF"; then
                rc=3
            fi
        fi
    done
    echo "SLURM_CONF=$SLURM_CONF"
    if live_pid slurmctld >/dev/null && [[ -f $SLURM_CONF ]]; then
        sinfo -o '%P %a %D %T %c %G' 2>/dev/null || true
        squeue 2>/dev/null || true
    fi
    return $rc
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: [SLURM_BASE=DIR] $0 start|stop|status" >&2
        exit 2
        ;;
esac
