#!/usr/bin/env bash
# Installs the OpenSSH server and client that internal/testutil/sshd starts for
# the SSH tests. Idempotent: when both are present it only prints their versions.
set -euo pipefail

have() { [ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null && command -v ssh >/dev/null; }

if ! have; then
  if ! command -v apt-get >/dev/null; then
    echo "install-sshd: openssh-server/openssh-client missing and apt-get is not available" >&2
    exit 1
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "install-sshd: openssh-server/openssh-client missing; run as root to install them" >&2
    exit 1
  fi
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  # Without an init system the package's attempt to start a system-wide sshd
  # fails harmlessly; policy-rc.d (present in most container images) skips it.
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends openssh-server openssh-client; } >"$log" 2>&1; then
    echo "install-sshd: apt-get failed:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  have || { echo "install-sshd: installed, but sshd/ssh-keygen are still missing" >&2; exit 1; }
fi

# sshd refuses to start without its privilege separation directory.
mkdir -p /run/sshd 2>/dev/null || true
echo "==> sshd: $(/usr/sbin/sshd -V 2>&1 | head -n1)  client: $(ssh -V 2>&1 | head -n1)"
