#!/usr/bin/env bash
# Installs a real Docker engine for the Docker tests: Debian's docker.io (dockerd,
# the docker CLI), containerd and runc, and debootstrap, which the test harness
# (internal/testutil/docker) uses to make its own base image (no registry is
# reachable from our machines, so nothing is ever pulled). The harness starts a
# private dockerd (its own data root, exec root, socket and pidfile; --bridge=none
# --iptables=false); nothing is started here and the system's Docker, if any, is
# left alone. Idempotent.
set -euo pipefail
have() { [ -x /usr/sbin/dockerd ] || command -v dockerd >/dev/null; }
have_all() { have && command -v containerd >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null && command -v docker >/dev/null; }
if ! have_all; then
  if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "install-docker: docker.io, containerd, runc and debootstrap are missing; install them as root (apt-get install docker.io containerd runc debootstrap)" >&2
    exit 1
  fi
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  # The packages try to start the system-wide dockerd and containerd; without an
  # init system that fails harmlessly, and the tests start their own.
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends docker.io containerd runc debootstrap; } >"$log" 2>&1; then
    echo "install-docker: apt-get failed:" >&2; tail -n 30 "$log" >&2; exit 1
  fi
  have_all || { echo "install-docker: installed, but dockerd/containerd/runc/debootstrap are still missing" >&2; exit 1; }
fi
echo "==> docker: $(dockerd --version 2>/dev/null | head -n1)  containerd: $(containerd --version 2>/dev/null | awk '{print $3}')  runc: $(runc --version 2>/dev/null | head -n1 | awk '{print $3}')"
