#!/usr/bin/env bash
# Starts, on this host and on the loopback interface only, the services the `cluster` tests use:
#   - MUNGE, with a key of its own;
#   - a one-node SLURM cluster: slurmctld and slurmd on 127.0.0.1 (4 CPUs, one partition);
#   - a PostgreSQL server on 127.0.0.1 with a user `mlproj` whose password is drawn here.
# Everything lives in DIR (config, keys, state, logs, data, pid files), on ports found free.
# Writes DIR/env.sh, which exports what the tests read: SLURM_CONF, MLPROJ_TEST_SLURM=1 and
# MLPROJ_TEST_POSTGRES_URI. Needs root (the daemons run as root, PostgreSQL as user postgres).
# test/cluster/down.sh DIR stops all of it.
#
#     dir=$(mktemp -d) && test/cluster/up.sh "$dir" && . "$dir/env.sh"
set -euo pipefail
DIR=$(cd "${1:?usage: up.sh DIR}" && pwd)
chmod 755 "$DIR"  # PostgreSQL runs as user postgres and must reach its folder
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() {  # wait_for SECONDS WHAT COMMAND...: run COMMAND until it succeeds
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 4))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    echo "test/cluster/up.sh: $what did not start within ${seconds}s; its log is in $DIR" >&2
    return 1
}

# ---------------------------------------------------------------------------------------- MUNGE
mkdir -p "$DIR/munge"
chmod 700 "$DIR/munge"
mungekey --create --keyfile="$DIR/munge/munge.key"
munged --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" --force
wait_for 10 munged test -S "$DIR/munge/munge.socket"

# ---------------------------------------------------------------------------------------- SLURM
S=$DIR/slurm
mkdir -p "$S/state" "$S/spool"
# 4 CPUs whatever the host has (config_overrides): the array's %J limit, not the CPUs, bounds
# how many tasks run at once, so a test can tell that the limit holds.
cat >"$S/slurm.conf" <<CONF
ClusterName=mlproj-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=5
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=4 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$S/slurm.conf
slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF" -N localhost
wait_for 30 "SLURM (node localhost idle)" bash -c 'sinfo -h -n localhost -o %T | grep -qx idle'

# ----------------------------------------------------------------------------------- PostgreSQL
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
P=$DIR/postgres
PG_PORT=$(free_port)
PASSWORD="mlproj-secret-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
mkdir -p "$P"
printf '%s\n' "$PASSWORD" >"$P/password"
chown -R postgres "$P"
chmod 700 "$P"
as_postgres() { runuser -u postgres -- "$@"; }
as_postgres "$PG_BIN/initdb" -D "$P/data" -U mlproj --pwfile="$P/password" --auth=scram-sha-256 >"$P/initdb.log"
as_postgres "$PG_BIN/pg_ctl" -D "$P/data" -l "$P/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$P" start >/dev/null
PGPASSWORD=$PASSWORD as_postgres "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U mlproj mlproj

cat >"$DIR/env.sh" <<ENV
export SLURM_CONF=$SLURM_CONF
export MLPROJ_TEST_SLURM=1
export MLPROJ_TEST_POSTGRES_URI=postgresql://mlproj:$PASSWORD@127.0.0.1:$PG_PORT/mlproj
ENV
echo "test/cluster/up.sh: MUNGE, SLURM (slurmctld, slurmd) and PostgreSQL (127.0.0.1:$PG_PORT) run from $DIR"
