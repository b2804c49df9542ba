#!/usr/bin/env bash
# Managed pool benchmark: 1-second runs through a 4-node aml_compute pool, makespan against the
# ideal (runs × 1 s / 4) and submit-to-start latency; a cold pool (min_nodes 0) for scale-up cost
# and runs one at a time on a warm pool for the pool's own dispatch latency. Prints markdown
# tables (stdout); progress goes to stderr. See bench/README.md, section 5.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${BENCH_N:-1}                                # repetitions (one pass of 200 runs is about a minute)
RUNS=${BENCH_POOL_RUNS:-200}                   # runs through the warm pool
COLD_RUNS=${BENCH_POOL_COLD_RUNS:-40}          # runs through the cold pool
SERIAL_RUNS=${BENCH_POOL_SERIAL_RUNS:-10}      # runs one at a time on a warm pool (0: skip)
NODES=${BENCH_POOL_NODES:-4}                   # max_nodes (and min_nodes of the warm pool)
VM=${BENCH_POOL_VM_SIZE:-STANDARD_D1_V2}
SUBMITTERS=${BENCH_POOL_SUBMITTERS:-4}         # goroutines calling SubmitRun
WAITERS=${BENCH_POOL_WAITERS:-10}              # goroutines calling WaitRun (terraform's default parallelism)
TIMEOUT=${BENCH_POOL_TIMEOUT:-600}             # seconds per pass; the drain has 2 more minutes

die() { echo "pool bench: $*" >&2; exit 1; }
command -v go >/dev/null || die "go is not on PATH"
command -v python3 >/dev/null || die "python3 is not on PATH"
real_python=$(python3 -c 'import sys; print(sys.executable)') || die "python3 does not run"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/aml-poolbench.XXXXXX")
BIN=$tmp/bin/terraform-provider-aml
child=""

# agents: "pid args" of every agent process of this bench's binary (node agents, supervisors).
# (The pattern goes through the environment: in awk's own arguments it would match awk itself.)
agents() { ps -eo pid=,args= | BIN_AGENT="$BIN agent " awk 'index($0, ENVIRON["BIN_AGENT"]) { print }'; }

# stop_leftovers: stop (by PID) whatever agent of our binary is still running; prints their count.
stop_leftovers() {
  local pids
  pids=$(agents | awk '{ print $1 }')
  [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
  printf '%s\n' "$pids" | grep -c . || true
}

cleanup() {
  local rc=$?
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  local left
  left=$(stop_leftovers)
  [ "$left" = 0 ] || echo "pool bench: WARNING: stopped $left leftover agent process(es) by PID at exit" >&2
  if [ "${BENCH_KEEP:-}" = 1 ]; then
    echo "pool bench: kept scratch dir $tmp (BENCH_KEEP=1)" >&2
  else
    rm -rf "$tmp"
  fi
  exit $rc
}
trap cleanup EXIT
# The pass runs in the background so a signal reaches this trap at once; poolbench drains the pool
# on SIGTERM before it exits.
on_signal() {
  echo "pool bench: signalled; draining the pool" >&2
  if [ -n "$child" ]; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
    child=""
  fi
  exit 130
}
trap on_signal INT TERM

started=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
say() { printf '==> [%3ss] %s\n' "$(($(date +%s) - started))" "$*" >&2; }

say "pool benchmark: scratch dir $tmp, N=$N, $RUNS warm runs, $COLD_RUNS cold, $SERIAL_RUNS one at a time"
say "building the provider (its agent subcommand runs the node agents), aml-supervisor and bench/poolbench"
mkdir -p "$tmp/bin"
TMPDIR=$tmp go build -o "$BIN" .
# The run supervisor beside it, as `make install` and a release archive place it (the node
# agents start it for each run; without it they would start the provider binary).
TMPDIR=$tmp CGO_ENABLED=0 go build -o "$tmp/bin/aml-supervisor" ./cmd/aml-supervisor
TMPDIR=$tmp go build -o "$tmp/bin/poolbench" ./bench/poolbench

# Reference for the per-run overhead: the interpreter's own start-up and exit.
py_startup=$("$real_python" - "$real_python" <<'EOF'
import statistics, subprocess, sys, time
ts = []
for _ in range(10):
    t = time.perf_counter()
    subprocess.run([sys.argv[1], "-c", "import time"], check=True)
    ts.append(time.perf_counter() - t)
print(f"{statistics.median(ts):.3f}")
EOF
)

RES=$tmp/results.jsonl
: >"$RES"
LEFT=$tmp/leftovers
: >"$LEFT"

# pass NAME ARGS...: one pass in a fresh scratch dir; then check that no agent process survived it.
pass() {
  local name=$1 rep=$2 rc=0
  shift 2
  local dir=$tmp/pass-$name-$rep
  mkdir -p "$dir"
  say "$name pass $rep/$N"
  timeout -k 150 $((TIMEOUT + 180)) "$tmp/bin/poolbench" run -provider "$BIN" -python "$real_python" \
    -dir "$dir" -scenario "$name" -vm "$VM" -max "$NODES" -timeout "${TIMEOUT}s" \
    -submitters "$SUBMITTERS" -waiters "$WAITERS" "$@" >>"$RES" &
  child=$!
  wait "$child" || rc=$?
  child=""
  [ "$rc" = 0 ] || die "$name pass $rep failed (exit $rc); see above"
  # Node agents remove their row and then exit; give them a moment before looking.
  local i left
  for i in $(seq 50); do
    [ -n "$(agents)" ] || break
    sleep 0.1
  done
  if [ -n "$(agents)" ]; then
    agents >&2
    left=$(stop_leftovers)
    echo "$name $rep: $left" >>"$LEFT"
    say "WARNING: $left agent process(es) outlived the $name pass; stopped them by PID"
  fi
}

scenarios=(warm cold)
[ "$SERIAL_RUNS" -gt 0 ] && scenarios+=(serial)
for rep in $(seq 1 "$N"); do
  # Rotate the order on every repetition.
  k=$(((rep - 1) % ${#scenarios[@]}))
  order=("${scenarios[@]:k}" "${scenarios[@]:0:k}")
  for s in "${order[@]}"; do
    case $s in
      warm) pass warm "$rep" -runs "$RUNS" -min "$NODES" ;;
      cold) pass cold "$rep" -runs "$COLD_RUNS" -min 0 ;;
      serial) pass serial "$rep" -runs "$SERIAL_RUNS" -min "$NODES" -serial ;;
    esac
  done
done
final=$(agents | grep -c . || true)
say "done in $(($(date +%s) - started))s"

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
echo
echo "Machine: $(nproc) cores${cpu:+, $cpu}; $(uname -sr); $(go version | awk '{ print $3 }'); $("$real_python" --version 2>&1) ($real_python). Load average before: $load_start, at the end: $(cut -d' ' -f1-3 /proc/loadavg). Date: $(date -u '+%Y-%m-%d %H:%M UTC')."
echo
echo "### Managed pool: 1-second runs through a $NODES-node pool"
echo
"$tmp/bin/poolbench" report "$RES"
echo "- makespan = first SubmitRun call → the last run's EndTime (as the node's supervisor recorded it); ideal = runs × 1 s / max_nodes (one at a time: runs × 1 s). submit→start = the run's StartTime (the script's process started on a node) − the moment SubmitRun was called, so in a burst it includes waiting behind earlier runs. Per-run overhead = EndTime − StartTime − 1 s (python start-up and exit). \"Most running at once\" sweeps the runs' [StartTime, EndTime) intervals."
echo "- Nodes are \`terraform-provider-aml agent node ...\` processes of the provider built into the scratch dir (one per node, detached); every pass ends with \`DeleteCompute(force)\`, also on error, timeout or SIGINT/SIGTERM. Afterwards \`ps\` showed $final agent process(es) of the bench's binary$( [ -s "$LEFT" ] && printf '; **agents outlived a pass** (stopped by PID): %s' "$(tr '\n' ' ' <"$LEFT")" || printf ', and none after any pass')."
echo "- For reference, \`$real_python -c 'import time'\` (start-up and exit, no sleep) takes $py_startup s on this machine (median of 10, measured before the passes)."
echo "- This machine has $(nproc) cores and is shared with other sessions: $NODES nodes, their supervisors and python, the engine and its pollers all share them. Trust the ratios and the breakdown more than the absolute seconds."
