#!/usr/bin/env bash
# Installs what `make test-cluster` needs, from Debian's packages: SLURM (slurmctld, slurmd and its
# client commands), MUNGE (SLURM's authentication) and PostgreSQL. Nothing is installed when all
# of it is there already; apt-get needs root.
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1; }
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
if have sbatch && have slurmctld && have slurmd && have munged && have mungekey && [ -n "$(pg_bin)" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "make test-cluster: installing slurm-wlm, munge and postgresql needs root (apt-get): run it as root" >&2
    exit 1
fi
echo "make test-cluster: installing slurm-wlm, munge and postgresql (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# No service starts here (policy-rc.d says no to the packages' own start scripts): up.sh starts
# its own daemons, in a folder of its own, and down.sh stops them.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -q --no-install-recommends slurm-wlm munge postgresql >/dev/null
