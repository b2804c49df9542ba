#!/usr/bin/env bash
# Environment benchmark: first build of the quickstart's packages with uv and with
# venv + pip, and a cache hit, against a bare `python3 -c pass`. Prints a table.
# Package downloads come from the builders' own caches after a warm-up build, so the
# table compares resolving + installing, not network speed (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_N:-3}
PKGS=${BENCH_ENV_PKGS:-scikit-learn==1.5.*}
tmp=$(mktemp -d -t aml-envbench-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

go build -o "$tmp/envbuild" ./bench/envbuild
# ENVBUILD_BEFORE=<an envbuild binary of another build> adds its cache hit as a
# contender, interleaved with ours on a cache of its own (same packages).
BEFORE=${ENVBUILD_BEFORE:-}
real_python=$(python3 -c 'import sys; print(sys.executable)')
# A PATH without uv forces the venv + pip builder.
mkdir -p "$tmp/nouv"
ln -s "$real_python" "$tmp/nouv/python3"
PIP_PATH="$tmp/nouv:/usr/bin:/bin"
uv --version >/dev/null 2>&1 || { echo "uv is not installed (make tools)"; exit 1; }

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }
median() { python3 -c 'import sys, statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }
seconds() { python3 -c 'import json, sys; print("%.3f" % json.load(sys.stdin)["seconds"])'; }

# Warm both builders' download caches once, outside the timing.
"$tmp/envbuild" -root "$tmp/warm-uv" -pkgs "$PKGS" >/dev/null
"$tmp/envbuild" -root "$tmp/warm-pip" -pkgs "$PKGS" -path "$PIP_PATH" >/dev/null

uv_s=(); pip_s=(); hit_s=(); bare_s=(); before_s=()
for i in $(seq "$N"); do
  uv_s+=("$("$tmp/envbuild" -root "$tmp/uv-$i" -pkgs "$PKGS" | seconds)")
  pip_s+=("$("$tmp/envbuild" -root "$tmp/pip-$i" -pkgs "$PKGS" -path "$PIP_PATH" | seconds)")
done
[ -n "$BEFORE" ] && "$BEFORE" -root "$tmp/before" -pkgs "$PKGS" >/dev/null
# A cache hit as a run sees it: find the environment, then start its python.
# It also keeps Ensure's own time (envbuild's "seconds") in $tmp/ensure-<name>.
hit() {
  local t0 t1 py out
  t0=$(now); out=$("$1" -root "$2" -pkgs "$PKGS"); py=$(sed 's/.*"python":"\([^"]*\)".*/\1/' <<<"$out"); "$py" -c pass; t1=$(now)
  sed 's/.*"seconds":\([0-9.e-]*\).*/\1/' <<<"$out" >>"$tmp/ensure-$3"
  elapsed "$t0" "$t1"
}
env_py=$("$tmp/envbuild" -root "$tmp/uv-1" -pkgs "$PKGS" | sed 's/.*"python":"\([^"]*\)".*/\1/')
envpy_s=()
for i in $(seq $((N * 3))); do
  # The order rotates, so no contender always runs right after another.
  for c in $(python3 -c "import sys; c=sys.argv[2:]; k=int(sys.argv[1]) % len(c); print(*(c[k:]+c[:k]))" "$i" hit bare envpy ${BEFORE:+before}); do
    case $c in
      hit) hit_s+=("$(hit "$tmp/envbuild" "$tmp/uv-1" hit)") ;;
      before) before_s+=("$(hit "$BEFORE" "$tmp/before" before)") ;;
      bare) t0=$(now); "$real_python" -c pass; t1=$(now); bare_s+=("$(elapsed "$t0" "$t1")") ;;
      envpy) t0=$(now); "$env_py" -c pass; t1=$(now); envpy_s+=("$(elapsed "$t0" "$t1")") ;;
    esac
  done
done
uv_m=$(median "${uv_s[@]}"); pip_m=$(median "${pip_s[@]}"); hit_m=$(median "${hit_s[@]}"); bare_m=$(median "${bare_s[@]}")
ratio() { python3 -c "print(f'{$1 / $2:.2f}x')"; }
echo
echo "### Environment build and reuse: \`$PKGS\` (median of $N builds, $((N * 3)) hits)"
echo
echo "| measurement | seconds | ratio |"
echo "|---|---:|---:|"
echo "| first build, uv | $uv_m | 1.0x |"
echo "| first build, python -m venv + pip | $pip_m | $(ratio "$pip_m" "$uv_m") of uv |"
ensure_m() { python3 -c 'import sys, statistics; print(f"{statistics.median(float(x) for x in open(sys.argv[1])):.4f}")' "$tmp/ensure-$1"; }
if [ -n "$BEFORE" ]; then
  before_m=$(median "${before_s[@]}")
  echo "| cache hit, before (\`ENVBUILD_BEFORE\`) | $before_m | $(ratio "$before_m" "$bare_m") of bare python |"
  echo "| of which \`Ensure\` itself, before | $(ensure_m before) | |"
fi
echo "| cache hit (find + start the env's python) | $hit_m | $(ratio "$hit_m" "$bare_m") of bare python |"
echo "| of which \`Ensure\` itself | $(ensure_m hit) | |"
envpy_m=$(median "${envpy_s[@]}")
echo "| the environment's python alone (\`<env>/bin/python -c pass\`) | $envpy_m | $(ratio "$envpy_m" "$bare_m") of bare python |"
echo "| bare \`python3 -c pass\` | $bare_m | 1.0x |"
echo
echo "Package downloads were cached by a warm-up build of each builder; each timed build starts from an empty environment cache."
echo "A cache hit is timed as a run sees it: envbuild (one Ensure in a new process) and then the environment's python; \`Ensure\` itself is envbuild's in-process time. The environment's python can start faster than the bare base interpreter, whose own site-packages (and their .pth files) a virtual environment does not load."
