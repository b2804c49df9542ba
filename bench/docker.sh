#!/usr/bin/env bash
# Docker benchmark: a cache-hit run of one system-managed environment (six) on the local
# target, in Docker (its image built once per environment key) beside the same run on the
# host (its virtual environment built once per key), through the local driver: stage, detached
# supervisor, wait. A bare `docker run --rm <image> python3 -c pass` is the floor of a container
# start. Needs root and Debian's docker.io (scripts/install-docker.sh): it starts a private
# dockerd of its own (internal/testutil/docker) and stops it. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_N:-5}
PKG=${BENCH_DOCKER_PKG:-six==1.16.0}
tmp=$(mktemp -d -t aml-dockerbench-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

if [ "$(id -u)" != 0 ] || { ! command -v dockerd >/dev/null 2>&1 && [ ! -x /usr/sbin/dockerd ]; }; then
  echo "### Docker: cache-hit run in a container vs on the host"
  echo
  echo "(skipped: needs root and Docker's engine, scripts/install-docker.sh)"
  exit 0
fi
go build -o "$tmp/dockerbench" ./bench/dockerbench
"$tmp/dockerbench" -n "$N" -pkg "$PKG" >"$tmp/out.json"
python3 - "$tmp/out.json" "$N" "$PKG" <<'PY'
import json, statistics, sys
o = json.load(open(sys.argv[1])); n = sys.argv[2]; pkg = sys.argv[3]
med = lambda xs: statistics.median(xs)
rng = lambda xs: f"{med(xs):.3f} ({min(xs):.3f}–{max(xs):.3f})"
h, d, b = o["host"], o["docker"], o["bare_docker_run"]
print(f"### Docker: cache-hit run in a container vs on the host (`{pkg}`, median of {n}, interleaved)")
print()
print("| run (local target, environment already built) | seconds | vs host |")
print("|---|---:|---:|")
print(f"| host: virtual environment from the cache | {rng(h)} | 1.00x |")
print(f"| Docker: image `aml-env:<key>` from the cache | {rng(d)} | {med(d)/med(h):.2f}x |")
print(f"| floor: bare `docker run --rm <base> python3 -c pass` | {rng(b)} | {med(b)/med(h):.2f}x |")
print()
print(f"First runs (build included, one sample): host {o['host_first']:.1f} s, Docker {o['docker_first']:.1f} s. "
      "A run is Start (stage the snapshot, launch the detached supervisor) to Wait seeing Completed "
      "(status polled with a 20–500 ms back-off); in Docker the supervisor's keeper runs `docker run`, "
      "then `docker inspect` and `docker rm`.")
PY
