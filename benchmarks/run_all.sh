#!/usr/bin/env bash
# Run every benchmark, one after the other, and print their tables (markdown).
# Each script makes its own temporary data dir and databases, stops every
# process it started, and sends traffic only to 127.0.0.1.
#
#   bash benchmarks/run_all.sh                 # SQLite and PostgreSQL
#   bash benchmarks/run_all.sh --db sqlite     # extra arguments go to every script
#
# PostgreSQL: PROVISIOND_BENCH_PG_URL (else PROVISIOND_TEST_DATABASE_URL, else
# postgresql://postgres@127.0.0.1:5432/test) names a server where a scratch
# database may be created and dropped; if it does not answer, only SQLite runs.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  echo "wrk is missing (http_kickstart.py needs it): apt-get install -y wrk" >&2
  exit 1
fi
echo "# provisiond benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(python --version 2>&1)"
for script in import_hosts cold_start render http_kickstart; do
  timeout 900 python "benchmarks/${script}.py" "$@"
done
command -v ipmi_sim >/dev/null && command -v ipmitool >/dev/null && timeout 900 python benchmarks/power.py "$@" || echo "# power.py skipped or failed (needs ipmi_sim and ipmitool)" >&2
