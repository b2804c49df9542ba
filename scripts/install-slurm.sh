#!/usr/bin/env bash
# Installs a real Slurm for the aml_batch_attachment tests: Debian's slurm-wlm
# (slurmctld, slurmd, the clients) and munge. The test harness
# (internal/testutil/slurm) starts its own private munged, controller and two
# nodes on loopback ports; nothing is started here. Idempotent.
set -euo pipefail
have() { command -v sbatch >/dev/null && [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] && [ -x /usr/sbin/munged ]; }
if ! have; then
  if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "install-slurm: slurm-wlm and munge are missing; install them as root (apt-get install slurm-wlm munge)" >&2
    exit 1
  fi
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  # The packages try to start system-wide daemons; without an init system that
  # fails harmlessly, and the tests start their own.
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm slurm-client munge; } >"$log" 2>&1; then
    echo "install-slurm: apt-get failed:" >&2; tail -n 30 "$log" >&2; exit 1
  fi
  have || { echo "install-slurm: installed, but the daemons are still missing" >&2; exit 1; }
fi
echo "==> slurm: slurm-wlm $(dpkg-query -W -f='${Version}' slurm-wlm 2>/dev/null)  munge: $(munged --version 2>&1 | head -n1)"
