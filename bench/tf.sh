#!/usr/bin/env bash
# bench/tf.sh — terraform-level overhead of this provider next to the plugin-provider floor.
#
# Four contenders run the same trivial script (`python3 noop.py`, an empty script) during apply:
#   aml   — this provider: aml_experiment_run on compute_target "local"
#   floor — bench/floorprovider's floor_null (a do-nothing plugin provider built with the same
#           framework: null_resource's equivalent) + a local-exec provisioner
#   data  — terraform_data (built into terraform, no plugin) + a local-exec provisioner
#   wide  — bench/floorprovider's floor_wide (the same do-nothing resource with
#           aml_experiment_run's schema) + a local-exec provisioner: Terraform's cost of the schema
# Rows: `apply -replace` of one run; unchanged `plan` of one run; first `apply` of a
# BENCH_SWEEP-run for_each sweep (default 100); unchanged `plan` of that sweep; and the unchanged
# plan of a BENCH_BIG-run sweep (default 1000, one sample; 0 skips it) to show whether the cost per
# run stays flat. Medians of BENCH_N interleaved repetitions with the order rotating; ratios
# against the floor. Never pass/fail. Called by bench/run.sh; runs on its own too.
#
# The providers come from a private filesystem mirror in the scratch dir (TF_CLI_CONFIG_FILE):
# floorprovider is built there, and the aml provider is copied there from AML_PROVIDER_BIN or,
# by default, from `make install`'s ~/.terraform.d/plugins. AML_BEFORE_BIN=<another build of the
# provider> adds a fourth contender, "before" (its own mirror), to compare two builds under the
# same load.
set -euo pipefail

N=${BENCH_N:-5}
SWEEP=${BENCH_SWEEP:-100}
BIG=${BENCH_BIG:-1000}
CMD_TIMEOUT=${BENCH_CMD_TIMEOUT:-600}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
case $N in '' | *[!0-9]* | 0) die "BENCH_N must be a positive integer, got '$N'" ;; esac

TF=${TF_ACC_TERRAFORM_PATH:-}
[ -n "$TF" ] && [ -x "$TF" ] || TF=$(command -v terraform 2>/dev/null || command -v tofu 2>/dev/null || true)
[ -n "$TF" ] || die "terraform (or tofu) is required on PATH"
export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1

os_arch="$(go env GOOS)_$(go env GOARCH)"
aml_bin=${AML_PROVIDER_BIN:-}
if [ -z "$aml_bin" ]; then
  aml_bin=$(compgen -G "$HOME/.terraform.d/plugins/registry.terraform.io/openaml/aml/*/$os_arch/terraform-provider-aml_v*" | sort | tail -1 || true)
fi
[ -n "$aml_bin" ] && [ -x "$aml_bin" ] || die "no aml provider binary: run 'make install' or set AML_PROVIDER_BIN"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/aml-bench-tf.XXXXXX")
cleanup() {
  local pids
  pids=$(pgrep -f -- "$tmp/" 2>/dev/null | grep -vx "$$" || true)
  [ -z "$pids" ] || kill $pids 2>/dev/null || true
  if [ "${BENCH_KEEP:-}" = 1 ]; then echo "bench: kept scratch dir $tmp (BENCH_KEEP=1)" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$tmp/times" "$tmp/logs"
T=$tmp/times
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

say "tf bench: scratch dir $tmp, N=$N, sweep=$SWEEP, big=$BIG, aml provider $aml_bin"
mirror=$tmp/mirror/registry.terraform.io/openaml
mkdir -p "$mirror/floor/0.0.1/$os_arch" "$mirror/aml/0.1.0/$os_arch"
TMPDIR=$tmp go build -o "$mirror/floor/0.0.1/$os_arch/terraform-provider-floor_v0.0.1" ./bench/floorprovider
cp "$aml_bin" "$mirror/aml/0.1.0/$os_arch/terraform-provider-aml_v0.1.0"
# The run supervisor shipped beside the provider (aml-supervisor<suffix>, as `make install` and a
# release archive place it); without it the provider supervises its runs itself.
aml_sup=$(dirname "$aml_bin")/aml-supervisor$(basename "$aml_bin" | sed 's/^terraform-provider-aml//')
[ ! -x "$aml_sup" ] || cp "$aml_sup" "$mirror/aml/0.1.0/$os_arch/aml-supervisor_v0.1.0"
cat >"$tmp/tf.rc" <<RC
provider_installation {
  filesystem_mirror {
    path = "$tmp/mirror"
  }
}
RC
export TF_CLI_CONFIG_FILE=$tmp/tf.rc
contenders="aml floor data wide"
if [ -n "${AML_BEFORE_BIN:-}" ]; then
  [ -x "$AML_BEFORE_BIN" ] || die "AML_BEFORE_BIN=$AML_BEFORE_BIN is not an executable"
  mkdir -p "$tmp/mirror-before/registry.terraform.io/openaml/aml/0.1.0/$os_arch"
  cp "$AML_BEFORE_BIN" "$tmp/mirror-before/registry.terraform.io/openaml/aml/0.1.0/$os_arch/terraform-provider-aml_v0.1.0"
  # Its supervisor too, when that build has one beside it (as for the aml contender).
  before_sup=$(dirname "$AML_BEFORE_BIN")/aml-supervisor$(basename "$AML_BEFORE_BIN" | sed 's/^terraform-provider-aml//')
  [ ! -x "$before_sup" ] || cp "$before_sup" "$tmp/mirror-before/registry.terraform.io/openaml/aml/0.1.0/$os_arch/aml-supervisor_v0.1.0"
  sed "s|$tmp/mirror|$tmp/mirror-before|" "$tmp/tf.rc" >"$tmp/tf-before.rc"
  contenders="before aml floor data wide"
fi
# BENCH_CONTENDERS="aml floor" runs a subset (e.g. for a quick 1,000-run sample).
[ -z "${BENCH_CONTENDERS:-}" ] || contenders=$BENCH_CONTENDERS

src=$tmp/src
mkdir -p "$src"
printf 'pass\n' >"$src/noop.py"

# config CONTENDER SHAPE: the main.tf of one contender; SHAPE one (a single resource) or sweep
# (for_each over range(var.n)).
config() {
  local c=$1 shape=$2 each='' key='"one"'
  if [ "$shape" = sweep ]; then
    each='for_each = toset([for i in range(var.n) : tostring(i)])'
    key='each.key'
    printf 'variable "n" {\n  type    = number\n  default = 0\n}\n\n'
  fi
  case $c in
    aml | before)
      cat <<TF
terraform {
  required_providers {
    aml = { source = "openaml/aml" }
  }
}

resource "aml_workspace" "ws" {
  name         = "bench"
  storage_path = "$tmp/ws-$c-$shape"
}

resource "aml_run_configuration" "py" {
  workspace_id = aml_workspace.ws.id
  name         = "py"
  framework    = "Python"
  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = "python3"
    }
  }
}

resource "aml_experiment_run" "r" {
  $each
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "$shape"
  source_directory     = "$src"
  script               = "noop.py"
  arguments            = ["--i", $key]
  compute_target       = "local"
  run_configuration_id = aml_run_configuration.py.id
}
TF
      ;;
    floor)
      cat <<TF
terraform {
  required_providers {
    floor = { source = "openaml/floor" }
  }
}

resource "floor_null" "r" {
  $each
  triggers = { i = $key }
  provisioner "local-exec" {
    command     = "python3 noop.py --i \${self.triggers.i}"
    working_dir = "$src"
  }
}
TF
      ;;
    wide)
      cat <<TF
terraform {
  required_providers {
    floor = { source = "openaml/floor" }
  }
}

resource "floor_wide" "r" {
  $each
  workspace_id         = "0f8fad5b-d9cb-469f-a165-70867728950e"
  experiment_name      = "$shape"
  source_directory     = "$src"
  script               = "noop.py"
  arguments            = ["--i", $key]
  compute_target       = "local"
  run_configuration_id = "0f8fad5b-d9cb-469f-a165-70867728950e/runconfigs/py"
  provisioner "local-exec" {
    command     = "python3 noop.py --i \${self.arguments[1]}"
    working_dir = "$src"
  }
}
TF
      ;;
    data)
      cat <<TF
resource "terraform_data" "r" {
  $each
  input = $key
  provisioner "local-exec" {
    command     = "python3 noop.py --i \${self.input}"
    working_dir = "$src"
  }
}
TF
      ;;
  esac
}

addr() { case $1 in aml | before) echo aml_experiment_run.r ;; floor) echo floor_null.r ;; wide) echo floor_wide.r ;; data) echo terraform_data.r ;; esac; }

fail() { # log what
  echo "---- last lines of $1" >&2
  tail -30 "$1" >&2
  die "$2"
}
# order REP: the contenders rotated by repetition.
order() {
  local list=($contenders) i n out=""
  n=${#list[@]}
  for i in $(seq 0 $((n - 1))); do out="$out ${list[$(((i + $1) % n))]}"; done
  echo $out
}
# run_tf TIMES-FILE-OR-- DIR LOG ARGS...: a terraform command in DIR, timed unless TIMES is "-".
run_tf() {
  local f=$1 d=$2 log=$3
  shift 3
  local rc=$TF_CLI_CONFIG_FILE
  case $d in "$tmp"/before-*) rc=$tmp/tf-before.rc ;; esac
  if [ "$f" = - ]; then
    (cd "$d" && TF_CLI_CONFIG_FILE=$rc tf "$@" >"$log" 2>&1)
  else
    (cd "$d" && TF_CLI_CONFIG_FILE=$rc timed "$f" tf "$@" >"$log" 2>&1)
  fi
}
plan_check() { # contender shape rep log-rc
  if [ "$4" != 0 ]; then
    echo "$3:$4" >>"$T/$1-$2-plan-bad"
    say "WARNING: $1 unchanged $2 plan $3 exited $4 (expected 0)"
  fi
}

for c in $contenders; do
  for shape in one sweep; do
    d=$tmp/$c-$shape
    mkdir -p "$d"
    config "$c" "$shape" >"$d/main.tf"
    run_tf - "$d" "$tmp/logs/$c-$shape-init.log" init -input=false -no-color ||
      fail "$tmp/logs/$c-$shape-init.log" "terraform init failed for $c $shape"
  done
  run_tf - "$tmp/$c-one" "$tmp/logs/$c-one-first.log" apply -auto-approve -input=false -no-color ||
    fail "$tmp/logs/$c-one-first.log" "first apply failed for $c"
  run_tf - "$tmp/$c-sweep" "$tmp/logs/$c-sweep-first.log" apply -auto-approve -input=false -no-color ||
    fail "$tmp/logs/$c-sweep-first.log" "first apply (n=0) failed for $c"
done

for rep in $(seq 1 "$N"); do
  say "one run: apply -replace, repetition $rep/$N"
  for c in $(order "$rep"); do
    log=$tmp/logs/$c-one-apply-$rep.log
    run_tf "$T/$c-one-apply" "$tmp/$c-one" "$log" apply -auto-approve -input=false -no-color "-replace=$(addr "$c")" ||
      fail "$log" "$c apply -replace failed"
    grep -q 'Resources: 1 added, 0 changed, 1 destroyed' "$log" || fail "$log" "$c apply $rep did not replace one resource"
  done
done
for rep in $(seq 1 "$N"); do
  say "one run: unchanged plan, repetition $rep/$N"
  for c in $(order "$rep"); do
    rc=0
    run_tf "$T/$c-one-plan" "$tmp/$c-one" "$tmp/logs/$c-one-plan-$rep.log" plan -detailed-exitcode -input=false -no-color || rc=$?
    plan_check "$c" one "$rep" "$rc"
  done
done
for rep in $(seq 1 "$N"); do
  say "$SWEEP-run sweep: first apply, repetition $rep/$N"
  for c in $(order "$rep"); do
    run_tf - "$tmp/$c-sweep" "$tmp/logs/$c-sweep-destroy-$rep.log" apply -auto-approve -input=false -no-color -var n=0 ||
      fail "$tmp/logs/$c-sweep-destroy-$rep.log" "$c sweep n=0 failed"
    log=$tmp/logs/$c-sweep-apply-$rep.log
    run_tf "$T/$c-sweep-apply" "$tmp/$c-sweep" "$log" apply -auto-approve -input=false -no-color -var "n=$SWEEP" ||
      fail "$log" "$c sweep apply failed"
    grep -q "Resources: $SWEEP added, 0 changed, 0 destroyed" "$log" || fail "$log" "$c sweep apply $rep did not add $SWEEP"
  done
done
for rep in $(seq 1 "$N"); do
  say "$SWEEP-run sweep: unchanged plan, repetition $rep/$N"
  for c in $(order "$rep"); do
    rc=0
    run_tf "$T/$c-sweep-plan" "$tmp/$c-sweep" "$tmp/logs/$c-sweep-plan-$rep.log" plan -detailed-exitcode -input=false -no-color -var "n=$SWEEP" || rc=$?
    plan_check "$c" sweep "$rep" "$rc"
  done
done
if [ "$BIG" -gt 0 ]; then
  for c in $(order 1); do
    say "$BIG-run sweep: apply ($c, one sample)"
    log=$tmp/logs/$c-big-apply.log
    run_tf "$T/$c-big-apply" "$tmp/$c-sweep" "$log" apply -auto-approve -input=false -no-color -var "n=$BIG" ||
      fail "$log" "$c $BIG-run apply failed"
  done
  for c in $(order 2); do
    say "$BIG-run sweep: unchanged plan ($c, one sample)"
    rc=0
    run_tf "$T/$c-big-plan" "$tmp/$c-sweep" "$tmp/logs/$c-big-plan.log" plan -detailed-exitcode -input=false -no-color -var "n=$BIG" || rc=$?
    plan_check "$c" big 1 "$rc"
  done
fi

# ---------------------------------------------------------------------------------------------
say "done in $(elapsed)s"
eval "cell_() $(declare -f cell | tail -n +2)"
eval "ratio_() $(declare -f ratio | tail -n +2)"
eval "median_() $(declare -f median | tail -n +2)"
row() { # label key
  local a="$T/aml-$2" f="$T/floor-$2" d="$T/data-$2" b="$T/before-$2" x
  # A contender left out by BENCH_CONTENDERS shows as a dash.
  cell() { if [ -s "$1" ]; then cell_ "$1"; else echo "—"; fi; }
  ratio() { if [ -n "$1" ] && [ -n "$2" ]; then ratio_ "$1" "$2"; else echo "—"; fi; }
  median() { if [ -s "$1" ]; then median_ "$1"; fi; }
  [ -s "$a" ] || return 0
  for x in "$f" "$d" "$b"; do [ -s "$x" ] || : >"$x"; done
  if [ -n "${AML_BEFORE_BIN:-}" ]; then
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$(cell "$b")" "$(cell "$a")" "$(cell "$f")" "$(cell "$d")" \
      "$(ratio "$(median "$b")" "$(median "$f")")" "$(ratio "$(median "$a")" "$(median "$f")")" "$(ratio "$(median "$a")" "$(median "$d")")"
  else
    printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$(cell "$a")" "$(cell "$f")" "$(cell "$d")" \
      "$(ratio "$(median "$a")" "$(median "$f")")" "$(ratio "$(median "$a")" "$(median "$d")")"
  fi
}
per_run() { # key count: median seconds / count, in ms
  [ -s "$1" ] || { echo "—"; return; }
  awk -v m="$(median "$1")" -v n="$2" 'BEGIN { printf "%.1f ms", 1000 * m / n }'
}
echo "### Terraform overhead: this provider, the plugin floor, terraform_data"
echo
echo "Median seconds of $N repetitions (min–max), contenders interleaved, order rotating; the script is an empty \`noop.py\` (\`python3 noop.py --i <key>\`) for everyone."
echo
if [ -n "${AML_BEFORE_BIN:-}" ]; then
  echo "| measurement | aml, before | aml provider | plugin floor + local-exec | terraform_data + local-exec | before / floor | aml / floor | aml / terraform_data |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
else
  echo "| measurement | aml provider | plugin floor + local-exec | terraform_data + local-exec | aml / floor | aml / terraform_data |"
  echo "|---|---:|---:|---:|---:|---:|"
fi
row '`apply -replace` of one run' one-apply
row 'unchanged `plan`, one run' one-plan
row "first \`apply\` of a $SWEEP-run \`for_each\` sweep" sweep-apply
row "unchanged \`plan\` of the $SWEEP-run sweep" sweep-plan
if [ "$BIG" -gt 0 ]; then
  row "\`apply\` $SWEEP → $BIG runs (one sample)" big-apply
  row "unchanged \`plan\` of a $BIG-run sweep (one sample)" big-plan
  echo
  printf -- '- Unchanged plan per run (median / count): %s-run sweep: aml %s, floor %s, terraform_data %s; %s-run sweep: aml %s, floor %s, terraform_data %s.\n' \
    "$SWEEP" "$(per_run "$T/aml-sweep-plan" "$SWEEP")" "$(per_run "$T/floor-sweep-plan" "$SWEEP")" "$(per_run "$T/data-sweep-plan" "$SWEEP")" \
    "$BIG" "$(per_run "$T/aml-big-plan" "$BIG")" "$(per_run "$T/floor-big-plan" "$BIG")" "$(per_run "$T/data-big-plan" "$BIG")"
fi
if compgen -G "$T/wide-*" >/dev/null; then
  echo
  echo "The same rows with \`floor_wide\` (BENCH_CONTENDERS with \`wide\`): the floor provider's do-nothing resource with \`aml_experiment_run\`'s schema, and a local-exec: Terraform's own cost of a state that size."
  echo
  echo "| measurement | aml provider | floor_wide (aml's schema) + local-exec | plugin floor + local-exec | aml / wide | wide / floor |"
  echo "|---|---:|---:|---:|---:|---:|"
  wrow() { # label key
    local a="$T/aml-$2" w="$T/wide-$2" f="$T/floor-$2"
    [ -s "$w" ] || return 0
    printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$(cell "$a")" "$(cell "$w")" "$(cell "$f")" \
      "$(ratio "$(median "$a")" "$(median "$w")")" "$(ratio "$(median "$w")" "$(median "$f")")"
  }
  wrow '`apply -replace` of one run' one-apply
  wrow 'unchanged `plan`, one run' one-plan
  wrow "first \`apply\` of a $SWEEP-run \`for_each\` sweep" sweep-apply
  wrow "unchanged \`plan\` of the $SWEEP-run sweep" sweep-plan
  if [ "$BIG" -gt 0 ]; then
    wrow "\`apply\` $SWEEP → $BIG runs (one sample)" big-apply
    wrow "unchanged \`plan\` of a $BIG-run sweep (one sample)" big-plan
  fi
fi
echo
[ -z "${AML_BEFORE_BIN:-}" ] || echo "- aml, before: the provider build given as AML_BEFORE_BIN, run as a fourth interleaved contender with a workspace of its own."
echo "- plugin floor: \`bench/floorprovider\`, a provider built with the same terraform-plugin-framework whose one resource (\`floor_null\`: id + triggers) does no I/O — what hashicorp/null's \`null_resource\` is, built here because this machine has no registry access. Both plugins come from a filesystem mirror in the scratch dir."
echo "- aml: \`aml_workspace\` + \`aml_run_configuration\` (user-managed \`python3\`) + \`aml_experiment_run\` on \`local\`; every run snapshots the same source dir, runs under a detached supervisor and is ingested. The sweep shares one workspace, one experiment and one \`source_directory\`; its first apply is timed after an untimed apply with \`n = 0\` (the earlier runs stay in the workspace as history, as they would for a user)."
for f in "$T"/*-plan-bad; do
  [ -e "$f" ] || continue
  echo "- **$(basename "$f" -plan-bad): an unchanged plan did not exit 0** (repetition:exit code): $(tr '\n' ' ' <"$f")"
done
