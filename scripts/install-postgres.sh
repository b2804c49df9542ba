#!/usr/bin/env bash
# Installs a real PostgreSQL server for the shared-backend tests: Debian's
# postgresql (initdb, pg_ctl, postgres; and the postgres user the server runs
# as when the tests run as root). The test harness (internal/testutil/postgres)
# makes its own cluster in a temporary directory on a loopback port; nothing is
# started here. Idempotent.
set -euo pipefail
have() {
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && return 0
  done
  return 1
}
if ! have || { [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; }; then
  if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "install-postgres: PostgreSQL is missing; install it as root (apt-get install postgresql)" >&2
    exit 1
  fi
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  # The package tries to start a system-wide cluster; without an init system
  # that fails harmlessly, and the tests start their own.
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql; } >"$log" 2>&1; then
    echo "install-postgres: apt-get failed:" >&2; tail -n 30 "$log" >&2; exit 1
  fi
  have || { echo "install-postgres: installed, but initdb/pg_ctl/postgres are still missing" >&2; exit 1; }
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
echo "==> postgresql: $("$bin/postgres" --version)"
