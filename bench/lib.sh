# Shared helpers of the bench scripts (sourced). Callers set $tmp, $TF and $CMD_TIMEOUT.

# Provider stat cache (os.UserCacheDir) goes to the scratch dir, for terraform only: go's build
# cache also lives under XDG_CACHE_HOME and must stay where it is.
tf() { XDG_CACHE_HOME="$tmp/xdg-cache" timeout "$CMD_TIMEOUT" "$TF" "$@"; }

started=$(date +%s)
elapsed() { echo $(($(date +%s) - started)); }
say() { printf '==> [%3ss] %s\n' "$(elapsed)" "$*" >&2; }

# timed FILE CMD...: run CMD, append its wall time in seconds to FILE, return CMD's status.
timed() {
  local f=$1 t0 t1 rc=0
  shift
  t0=$(date +%s.%N)
  "$@" || rc=$?
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }' >>"$f"
  return $rc
}

# stats FILE: "median min max" of the numbers in FILE (one per line).
stats() {
  sort -g "$1" | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.6f %.6f %.6f\n", m, v[1], v[NR] }'
}
median() { stats "$1" | awk '{ print $1 }'; }
# cell FILE: "median (min–max)" in seconds with 3 decimals.
cell() { stats "$1" | awk '{ printf "%.3f (%.3f–%.3f)", $1, $2, $3 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "n/a" }'; }
