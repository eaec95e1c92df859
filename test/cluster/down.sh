#!/usr/bin/env bash
# Stops what test/cluster/up.sh DIR started: the SLURM jobs still queued or running, slurmd,
# slurmctld, MUNGE and PostgreSQL; then every process left that was started under DIR's SLURM
# (a job's processes outlive a killed slurmd). Safe to run twice, or after a partial start.
set -uo pipefail
DIR=$(cd "${1:?usage: down.sh DIR}" && pwd)
S=$DIR/slurm
export SLURM_CONF=$S/slurm.conf  # for scancel and squeue

stop_pid_file() {  # stop_pid_file FILE: SIGTERM the process it names, SIGKILL after 10 s
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null
}

if [ -f "$S/slurmctld.pid" ]; then
    scancel --full --quiet --user="$(id -un)" 2>/dev/null
    for _ in $(seq 40); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.25; done
fi
stop_pid_file "$S/slurmd.pid"
stop_pid_file "$S/slurmctld.pid"
# A job's processes and its slurmstepd carry this cluster's SLURM_CONF and a SLURM_JOB_ID (the
# submitter's environment, which holds SLURM_CONF too, has no job id): they are this cluster's.
for environ in /proc/[0-9]*/environ; do
    vars=$(tr '\0' '\n' 2>/dev/null <"$environ") || continue
    if grep -qx "SLURM_CONF=$S/slurm.conf" <<<"$vars" && grep -q "^SLURM_JOB_ID=" <<<"$vars"; then
        pid=${environ#/proc/}
        kill -9 "${pid%/environ}" 2>/dev/null
    fi
done
stop_pid_file "$DIR/munge/munged.pid"
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -f "$DIR/postgres/data/postmaster.pid" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/postgres/data" -m fast -w stop >/dev/null
fi
exit 0
