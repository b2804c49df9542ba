#!/usr/bin/env bash
# Slurm benchmark: BENCH_SLURM_RUNS (default 100) short runs through aml_batch_attachment's
# driver against the same number of plain `sbatch --wrap` jobs (the floor), on the real test
# cluster (a controller and two slurmd nodes on localhost; scripts/install-slurm.sh). Prints a
# markdown table: submit-to-start latency and throughput, with ratios. Needs root (slurmd).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-slurm.sh >&2
go test -run '^$' -bench BenchmarkSubmitThroughput -benchtime 1x -timeout 30m ./internal/engine/drivers/slurm/ | grep -E '^\|'
