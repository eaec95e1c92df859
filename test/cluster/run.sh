#!/usr/bin/env bash
# `make test-cluster`: install SLURM, MUNGE and PostgreSQL when missing (install.sh), start them on
# this host, loopback only, in a temporary folder (up.sh), run the tests marked `cluster` against
# them, and stop everything started here on the way out, whatever happened (down.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash test/cluster/install.sh
dir=$(mktemp -d "${TMPDIR:-/tmp}/mlproj-cluster.XXXXXX")
trap 'bash test/cluster/down.sh "$dir"; rm -rf "$dir"' EXIT
bash test/cluster/up.sh "$dir"
. "$dir/env.sh"
.venv/bin/python -m pytest -q -m cluster "$@"
