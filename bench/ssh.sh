#!/usr/bin/env bash
# bench/ssh.sh — training on an SSH host: re-running after a one-file change in a 2,000-file
# source tree, this provider (aml_remote_compute + aml_experiment_run) vs. terraform_data with
# `file` + `remote-exec` provisioners. Prints a markdown table: seconds of `terraform apply` and
# bytes sent to the host, for the re-run (median of N) and for the first (cold) apply.
#
# Both contenders talk to the same real OpenSSH sshd on 127.0.0.1 (started by
# bench/sshbench/sshd with a throwaway user, key login, pinned host key) through the same
# byte-counting TCP proxy (bench/sshbench/proxy), so "bytes sent" is measured the same way for
# both: client->server bytes on the wire, SSH key exchange and framing included.
#
# Needs root (useradd, sshd), /usr/sbin/sshd and ssh-keygen (scripts/install-sshd.sh), scp on the
# host side (openssh-client), `make install` done, terraform (or tofu), go, python3. Without
# root or sshd it prints why and exits 0. Knobs: BENCH_N (repetitions, default 3),
# BENCH_CMD_TIMEOUT (seconds per terraform command, default 120), BENCH_KEEP=1 (keep the
# scratch dir's configs and logs: they are copied to a new mktemp dir that is printed), AML_BIN (a
# provider build to use instead of the installed one, served from a private filesystem mirror),
# AML_BEFORE_BIN (another build, timed as a third contender of the shaped first-apply row).
set -euo pipefail

N=${BENCH_N:-3}
# The shaped link (section 4b): BENCH_SHAPED=0 leaves it out; BENCH_SHAPED_N repetitions.
SHAPED=${BENCH_SHAPED:-1}
SN=${BENCH_SHAPED_N:-3}
RATE_MBIT=${BENCH_SHAPED_MBIT:-20}
DELAY=${BENCH_SHAPED_DELAY:-25ms}
CMD_TIMEOUT=${BENCH_CMD_TIMEOUT:-120}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

die() { printf 'bench/ssh: %s\n' "$*" >&2; exit 1; }
skip() {
  echo "### Training on an SSH host: re-run after a one-file change"
  echo
  echo "Skipped: $*"
  exit 0
}
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required on PATH"; }

case $N in '' | *[!0-9]* | 0) die "BENCH_N must be a positive integer, got '$N'" ;; esac
case $SN in '' | *[!0-9]* | 0) die "BENCH_SHAPED_N must be a positive integer, got '$SN'" ;; esac

TF=${TF_ACC_TERRAFORM_PATH:-}
[ -n "$TF" ] && [ -x "$TF" ] || TF=$(command -v terraform 2>/dev/null || command -v tofu 2>/dev/null || true)
[ -n "$TF" ] || die "terraform (or tofu) is required on PATH"
for c in go python3 timeout awk sort; do need "$c"; done
[ "$(id -u)" = 0 ] || skip "needs root (it creates a throwaway user and runs sshd)."
[ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1 || skip "sshd is not installed (scripts/install-sshd.sh)."
command -v ssh-keygen >/dev/null 2>&1 || skip "ssh-keygen is not installed (scripts/install-sshd.sh)."
command -v scp >/dev/null 2>&1 || skip "scp is not installed (the file provisioner needs it on the host)."

if [ -n "${TF_CLI_CONFIG_FILE:-}" ] && [ ! -f "$TF_CLI_CONFIG_FILE" ]; then
  unset TF_CLI_CONFIG_FILE
fi
export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1
unset SSH_AUTH_SOCK # key auth only, for both contenders

os_arch="$(go env GOOS)_$(go env GOARCH)"
if [ -n "${AML_BIN:-}" ]; then
  # A given build instead of the installed one (e.g. to compare two builds): it is served to
  # terraform from a private filesystem mirror in the scratch dir.
  [ -x "$AML_BIN" ] || die "AML_BIN=$AML_BIN is not an executable"
  provider_bin=$AML_BIN
else
  plugins="$HOME/.terraform.d/plugins"
  provider_bin=$(compgen -G "$plugins/registry.terraform.io/openaml/aml/*/$os_arch/terraform-provider-aml_v*" | head -1 || true)
  [ -n "$provider_bin" ] ||
    die "provider not installed under $plugins/registry.terraform.io/openaml/aml/<version>/$os_arch; run 'make install' first"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/aml-sshbench.XXXXXX")
if [ -n "${AML_BIN:-}" ]; then
  mkdir -p "$tmp/mirror/registry.terraform.io/openaml/aml/0.1.0/$os_arch"
  cp "$AML_BIN" "$tmp/mirror/registry.terraform.io/openaml/aml/0.1.0/$os_arch/terraform-provider-aml_v0.1.0"
  provider_bin=$tmp/mirror/registry.terraform.io/openaml/aml/0.1.0/$os_arch/terraform-provider-aml_v0.1.0
  printf 'provider_installation {\n  filesystem_mirror {\n    path = "%s"\n  }\n}\n' "$tmp/mirror" >"$tmp/tf.rc"
  export TF_CLI_CONFIG_FILE=$tmp/tf.rc
fi
if [ -n "${AML_BEFORE_BIN:-}" ]; then
  # Another build, as a third contender of the shaped first-apply row (interleaved with ours
  # and tar | ssh), from a mirror of its own.
  [ -x "$AML_BEFORE_BIN" ] || die "AML_BEFORE_BIN=$AML_BEFORE_BIN is not an executable"
  mkdir -p "$tmp/mirror-before/registry.terraform.io/openaml/aml/0.1.0/$os_arch"
  cp "$AML_BEFORE_BIN" "$tmp/mirror-before/registry.terraform.io/openaml/aml/0.1.0/$os_arch/terraform-provider-aml_v0.1.0"
  printf 'provider_installation {\n  filesystem_mirror {\n    path = "%s"\n  }\n}\n' "$tmp/mirror-before" >"$tmp/tf-before.rc"
fi
# The throwaway user's home is inside: it must be able to traverse the path.
chmod 755 "$tmp"
sshd_pid="" proxy_pid="" sproxy_pid=""
alive() { [ -r "/proc/$1/stat" ] && ! awk '{ sub(/.*\) /, ""); exit ($1 == "Z") ? 0 : 1 }' "/proc/$1/stat"; }
cleanup() {
  local rc=$? pids i
  set +e
  for i in $proxy_pid $sproxy_pid; do
    kill "$i" 2>/dev/null
    wait "$i" 2>/dev/null
  done
  if [ -n "$sshd_pid" ]; then
    # The helper stops sshd by PID, kills the throwaway user's processes (the runs), deletes the user.
    kill -TERM "$sshd_pid" 2>/dev/null
    for i in $(seq 150); do alive "$sshd_pid" || break; sleep 0.1; done
    alive "$sshd_pid" && { echo "bench/ssh: sshd helper did not stop in 15s; killing it" >&2; kill -KILL "$sshd_pid" 2>/dev/null; }
    wait "$sshd_pid" 2>/dev/null
  fi
  # Anything else still running from the scratch dir (there should be nothing), by pid.
  pids=$(pgrep -f -- "$tmp/" 2>/dev/null | grep -vx "$$" || true)
  [ -z "$pids" ] || kill $pids 2>/dev/null
  if [ "${BENCH_KEEP:-}" = 1 ]; then
    local keep
    keep=$(mktemp -d "${TMPDIR:-/tmp}/aml-sshbench-kept.XXXXXX")
    cp -R "$tmp/logs" "$tmp/times" "$tmp"/tf-* "$keep/" 2>/dev/null
    rm -rf "$keep"/tf-*/.terraform
    echo "bench/ssh: kept configs, logs and timings in $keep (BENCH_KEEP=1)" >&2
  fi
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$tmp/times" "$tmp/logs" "$tmp/bin"
T=$tmp/times

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# human BYTES: "1,234,567 B (1.18 MiB)".
human() {
  python3 -c 'import sys
n = float(sys.argv[1])
for unit, d in (("MiB", 1 << 20), ("KiB", 1 << 10)):
    if n >= d:
        print(f"{n:,.0f} B ({n / d:.2f} {unit})"); break
else:
    print(f"{n:,.0f} B")' "$1"
}
# bcell FILE: bytes, "580.3 KiB (594,208–594,272 B)": median, then the exact min–max.
bcell() {
  local m lo hi
  read -r m lo hi < <(stats "$1")
  python3 -c 'import sys
m, lo, hi = (float(x) for x in sys.argv[1:])
for unit, d in (("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)):
    if m >= d or d == 1:
        break
h = f"{m:,.0f} B" if unit == "B" else f"{m / d:.1f} {unit}"
print(f"{h} ({lo:,.0f} B)" if lo == hi else f"{h} ({lo:,.0f}–{hi:,.0f} B)")' "$m" "$lo" "$hi"
}
json() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# ---------------------------------------------------------------------------------------------
# sshd and the byte-counting proxy
# ---------------------------------------------------------------------------------------------
say "building bench/sshbench/{sshd,proxy,manifest}"
for p in sshd proxy manifest; do
  TMPDIR=$tmp go build -o "$tmp/bin/$p" "./bench/sshbench/$p"
done

# wait_line PID FILE WHAT: wait (20 s at most) until FILE has a line, or PID has exited.
wait_line() {
  local i
  for i in $(seq 200); do
    [ -s "$2" ] && return 0
    alive "$1" || break
    sleep 0.1
  done
  [ -s "$2" ] || { tail -30 "$tmp/logs/$3.err" >&2 || true; die "$3 did not start"; }
}

say "starting sshd on 127.0.0.1 (throwaway user, key login)"
"$tmp/bin/sshd" -dir "$tmp/sshd" >"$tmp/sshd.json" 2>"$tmp/logs/sshd.err" &
sshd_pid=$!
wait_line "$sshd_pid" "$tmp/sshd.json" sshd
SSHD_PORT=$(json "$tmp/sshd.json" port)
HUSER=$(json "$tmp/sshd.json" user)
HGROUP=$(json "$tmp/sshd.json" group)
HHOME=$(json "$tmp/sshd.json" home)
KEY=$(json "$tmp/sshd.json" key_path)
HOSTKEY=$(json "$tmp/sshd.json" host_key)
NOTE=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("note", ""))' "$tmp/sshd.json")

"$tmp/bin/proxy" -target "127.0.0.1:$SSHD_PORT" >"$tmp/proxy.json" 2>"$tmp/logs/proxy.err" &
proxy_pid=$!
wait_line "$proxy_pid" "$tmp/proxy.json" proxy
PORT=$(json "$tmp/proxy.json" port)
CTL=$(json "$tmp/proxy.json" control)
CUR_CTL=$CTL # the proxy that measure reads: the loopback one, later the shaped one

# counters: "up down conns" from the proxy at CUR_CTL, after every connection has closed (10 s at most).
counters() {
  python3 - "$CUR_CTL" <<'EOF'
import json, sys, urllib.request
s = json.load(urllib.request.urlopen(f"http://{sys.argv[1]}/stats?settle=10s", timeout=15))
if s["active"]:
    print(f"bench/ssh: WARNING: {s['active']} connection(s) still open after 10 s", file=sys.stderr)
print(s["up"], s["down"], s["conns"])
EOF
}

# ---------------------------------------------------------------------------------------------
# The source tree: 2,000 files of 2 KiB in nested dirs, plus train.py
# ---------------------------------------------------------------------------------------------
say "writing the source tree: 2,000 files x 2 KiB (10 x 10 dirs x 20 files) + train.py"
python3 - "$tmp/src" <<'EOF'
import base64, os, random, sys
root = sys.argv[1]
rng = random.Random(20261128)
for a in range(10):
    for b in range(10):
        d = os.path.join(root, f"pkg{a:02d}", f"mod{b:02d}")
        os.makedirs(d)
        for f in range(20):
            # Base64 text of random bytes: ~2 KiB that compresses about as badly as text can,
            # so the byte counts show what is sent, not how well it compresses.
            text = base64.encodebytes(rng.randbytes(1536)).decode()
            with open(os.path.join(d, f"f{f:02d}.txt"), "w") as fh:
                fh.write(text[:2048])
with open(os.path.join(root, "train.py"), "w") as fh:
    fh.write('''try:
    import aml_run
except ImportError:  # the terraform_data baseline has no aml_run helper
    aml_run = None

print("bench train.py ran", flush=True)
if aml_run is not None:
    aml_run.log("ran", 1.0)
''')
EOF
read -r manifest_files manifest_json < <("$tmp/bin/manifest" "$tmp/src")
tree_files=$(find "$tmp/src" -type f | wc -l)
tree_bytes=$(find "$tmp/src" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
# One copy per contender, so each apply sees exactly one changed file since its last apply.
cp -R "$tmp/src" "$tmp/src-aml"
cp -R "$tmp/src" "$tmp/src-base"
EDITED=pkg03/mod07/f11.txt

# The baseline's upload destination on the host (the file provisioner needs it to exist).
install -d -o "$HUSER" -g "$HGROUP" "$HHOME/base"

mkdir -p "$tmp/tf-aml" "$tmp/tf-base"
# aml_config DIR PORT WORKSPACE SRC [REMOTE_ROOT]: ours' configuration.
aml_config() {
  local rr=""
  [ -z "${5:-}" ] || rr="remote_root  = \"$5\""
  mkdir -p "$1"
  cat >"$1/main.tf" <<EOF
terraform {
  required_providers {
    aml = {
      source = "openaml/aml"
    }
  }
}

provider "aml" {
  # 2,001 files: above the Azure-like default of 2,000.
  snapshot_max_files = 5000
}

resource "aml_workspace" "ws" {
  name         = "sshbench"
  storage_path = "$3"
}

resource "aml_remote_compute" "host" {
  workspace_id = aml_workspace.ws.id
  name         = "bench-host"
  address      = "127.0.0.1"
  ssh_port     = $2
  username     = "$HUSER"
  private_key  = file("$KEY")
  host_key     = "$HOSTKEY"
  $rr
}

resource "aml_run_configuration" "py" {
  workspace_id = aml_workspace.ws.id
  name         = "host-python"
  framework    = "Python"

  environment {
    python {
      user_managed_dependencies = true
      interpreter_path          = "python3"
    }
  }
}

resource "aml_experiment_run" "train" {
  workspace_id         = aml_workspace.ws.id
  experiment_name      = "sshbench"
  source_directory     = "$4"
  script               = "train.py"
  compute_target       = aml_remote_compute.host.name
  run_configuration_id = aml_run_configuration.py.id
}

output "run_id" {
  value = aml_experiment_run.train.run_id
}

output "status" {
  value = aml_experiment_run.train.status
}

output "ran" {
  value = aml_experiment_run.train.metrics["ran"]
}

output "duration_seconds" {
  value = aml_experiment_run.train.duration_seconds
}
EOF
}
aml_config "$tmp/tf-aml" "$PORT" "$tmp/ws" "$tmp/src-aml"
cat >"$tmp/tf-base/main.tf" <<EOF
locals {
  src = "$tmp/src-base"
}

resource "terraform_data" "train" {
  # Re-run when any file changes: sha1 over every file's path and sha1.
  triggers_replace = sha1(join("\n", [for f in fileset(local.src, "**") : "\${f} \${filesha1("\${local.src}/\${f}")}"]))

  connection {
    type        = "ssh"
    host        = "127.0.0.1"
    port        = $PORT
    user        = "$HUSER"
    private_key = file("$KEY")
    host_key    = "$HOSTKEY"
    agent       = false
    # remote-exec's script goes here instead of the host's /tmp.
    script_path = "$HHOME/terraform_%RAND%.sh"
  }

  provisioner "file" {
    source      = local.src
    destination = "$HHOME/base"
  }

  provisioner "remote-exec" {
    inline = ["cd $HHOME/base/src-base && python3 train.py"]
  }
}
EOF
for c in aml base; do
  say "terraform init ($c, not timed)"
  (cd "$tmp/tf-$c" && tf init -input=false -no-color >"$tmp/logs/$c-init.log" 2>&1) ||
    { tail -20 "$tmp/logs/$c-init.log" >&2; die "terraform init failed for the $c config"; }
done

apply_failed() { # contender log
  echo "---- last lines of $2" >&2
  tail -30 "$2" >&2
  die "terraform apply failed for the $1 config (see above)"
}

prev_run_id=""
# check CONTENDER LOG WHAT DIR: the script really ran (again).
check_ran() {
  local c=$1 log=$2 what=$3 dir=$4
  if [[ $c == aml* ]]; then
    local id status ran dur
    (cd "$dir" && tf output -json) >"$tmp/logs/aml-outputs.json"
    read -r id status ran dur < <(python3 -c 'import json, sys
o = json.load(open(sys.argv[1]))
print(o["run_id"]["value"], o["status"]["value"], o["ran"]["value"], o["duration_seconds"]["value"])' "$tmp/logs/aml-outputs.json")
    if [ "$what" = "apply (rerun)" ]; then echo "$dur" >>"$T/aml-run-duration"; fi
    if [ "$what" = "apply (s-rerun)" ]; then echo "$dur" >>"$T/aml-s-run-duration"; fi
    [ "$id" != "$prev_run_id" ] || die "aml $what kept run id $id: the script did not run again"
    [ "$status" = Completed ] || die "aml $what: run $id ended $status"
    [ "$ran" = 1 ] || die "aml $what: metric ran = $ran, expected 1"
    prev_run_id=$id
  else
    grep -q 'remote-exec): bench train.py ran' "$log" ||
      { tail -30 "$log" >&2; die "baseline $what: train.py's output missing"; }
  fi
}

# measure_cmd NAME TAG LOG CMD...: time CMD (output to LOG) with the current proxy's byte counters
# read around it; appends to $T/NAME-TAG-{sec,up,down,conns}. Returns CMD's status.
measure_cmd() {
  local c=$1 tag=$2 log=$3 u0 d0 n0 u1 d1 n1 rc=0
  shift 3
  read -r u0 d0 n0 < <(counters)
  [[ $u0 =~ ^[0-9]+$ ]] || die "could not read the proxy's counters (see $tmp/logs/proxy*.err)"
  timed "$T/$c-$tag-sec" "$@" >"$log" 2>&1 || rc=$?
  read -r u1 d1 n1 < <(counters)
  [[ $u1 =~ ^[0-9]+$ ]] || die "could not read the proxy's counters (see $tmp/logs/proxy*.err)"
  echo $((u1 - u0)) >>"$T/$c-$tag-up"
  echo $((d1 - d0)) >>"$T/$c-$tag-down"
  echo $((n1 - n0)) >>"$T/$c-$tag-conns"
  return $rc
}

# measure CONTENDER TAG [REP [DIR]]: one timed apply in DIR (default tf-CONTENDER), with the
# current proxy's byte counters read around it.
measure() {
  local c=$1 tag=$2 dir=${4:-$tmp/tf-$1} log
  log=$tmp/logs/$c-apply-$tag${3:+-$3}.log
  (cd "$dir" && measure_cmd "$c" "$tag" "$log" tf apply -auto-approve -input=false -no-color) ||
    apply_failed "$c" "$log"
  if [[ $tag == *rerun ]]; then
    grep -q 'Resources: 1 added, 0 changed, 1 destroyed' "$log" ||
      { tail -30 "$log" >&2; die "$c re-run did not replace exactly one resource"; }
  fi
  check_ran "$c" "$log" "apply ($tag)" "$dir"
}

# First apply: everything is sent (for ours: attach, which stages the agent binary, then the run).
for c in aml base; do
  say "first apply ($c, cold, one sample)"
  measure "$c" cold
done

for rep in $(seq 1 "$N"); do
  say "one file changed, apply: repetition $rep/$N"
  if [ $((rep % 2)) = 1 ]; then order="aml base"; else order="base aml"; fi
  for c in $order; do
    printf 'edited by the benchmark: %s repetition %s\n' "$c" "$rep" >>"$tmp/src-$c/$EDITED"
    measure "$c" rerun "$rep"
  done
done

# Check the baseline really left the tree where remote-exec ran it.
[ -f "$HHOME/base/src-base/$EDITED" ] || die "baseline: $HHOME/base/src-base/$EDITED missing on the host"
cmp -s "$tmp/src-base/$EDITED" "$HHOME/base/src-base/$EDITED" || die "baseline: the edited file on the host differs"


# ---------------------------------------------------------------------------------------------
# The shaped link: the same sshd behind a second proxy that models a slower network
# ---------------------------------------------------------------------------------------------
if [ "$SHAPED" = 1 ]; then
  command -v ssh >/dev/null 2>&1 || die "ssh (openssh-client) is required for the shaped link's tar | ssh contender"
  "$tmp/bin/proxy" -target "127.0.0.1:$SSHD_PORT" -rate-mbit "$RATE_MBIT" -delay "$DELAY" \
    >"$tmp/sproxy.json" 2>"$tmp/logs/sproxy.err" &
  sproxy_pid=$!
  wait_line "$sproxy_pid" "$tmp/sproxy.json" sproxy
  SPORT=$(json "$tmp/sproxy.json" port)
  CUR_CTL=$(json "$tmp/sproxy.json" control)
  printf '[127.0.0.1]:%s %s\n' "$SPORT" "$HOSTKEY" >"$tmp/known_hosts"
  sshc=(ssh -F /dev/null -p "$SPORT" -i "$KEY" -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile="$tmp/known_hosts"
    -o StrictHostKeyChecking=yes -o ControlMaster=no -o ControlPath=none "$HUSER@127.0.0.1")

  # Agent staging, once per host and provider binary: attaching a host whose remote_root has no
  # agent, against sending the same binary with `ssh host 'cat > file'`.
  say "shaped link ($RATE_MBIT Mbit/s, +$DELAY each way): attaching a host, which stages the agent (one sample each)"
  cp -R "$tmp/src" "$tmp/src-aml-s"
  aml_config "$tmp/tf-aml-s" "$SPORT" "$tmp/ws-s" "$tmp/src-aml-s" "$HHOME/.aml-shaped"
  (cd "$tmp/tf-aml-s" && tf init -input=false -no-color >"$tmp/logs/aml-s-init.log" 2>&1) ||
    { tail -20 "$tmp/logs/aml-s-init.log" >&2; die "terraform init failed for the aml-s config"; }
  (cd "$tmp/tf-aml-s" && measure_cmd aml s-stage "$tmp/logs/aml-s-stage.log" \
    tf apply -auto-approve -input=false -no-color -target=aml_remote_compute.host) ||
    apply_failed aml-s "$tmp/logs/aml-s-stage.log"
  measure_cmd cat s-stage "$tmp/logs/cat-s-stage.log" "${sshc[@]}" 'cat > agent-copy' <"$provider_bin" ||
    { tail "$tmp/logs/cat-s-stage.log" >&2; die "ssh cat > agent-copy failed"; }
  [ "$(stat -c %s "$HHOME/agent-copy")" = "$(stat -c %s "$provider_bin")" ] || die "ssh cat: the copy differs in size"
  rm -f "$HHOME/agent-copy"
  # The first real apply of this config (the run) is not timed: the first-apply row below has
  # its own fresh hosts roots.
  say "shaped link: first run of the staged config (not timed)"
  (cd "$tmp/tf-aml-s" && tf apply -auto-approve -input=false -no-color >"$tmp/logs/aml-s-first.log" 2>&1) ||
    apply_failed aml-s "$tmp/logs/aml-s-first.log"
  check_ran aml-s "$tmp/logs/aml-s-first.log" "first apply" "$tmp/tf-aml-s"

  # First apply, agent already staged: a fresh workspace and remote_root each time (so the host has
  # none of the snapshot's blobs), whose bin/ is a copy of the staged agent; against tar | ssh of
  # the same tree into a fresh directory.
  for rep in $(seq 1 "$SN"); do
    cp -R "$tmp/src" "$tmp/src-f$rep"
    aml_config "$tmp/tf-aml-f$rep" "$SPORT" "$tmp/ws-f$rep" "$tmp/src-f$rep" "$HHOME/.aml-f$rep"
    install -d -o "$HUSER" -g "$HGROUP" "$HHOME/.aml-f$rep"
    cp -a "$HHOME/.aml/bin" "$HHOME/.aml-f$rep/bin"
    (cd "$tmp/tf-aml-f$rep" && tf init -input=false -no-color >"$tmp/logs/aml-f$rep-init.log" 2>&1) ||
      { tail -20 "$tmp/logs/aml-f$rep-init.log" >&2; die "terraform init failed for the aml-f$rep config"; }
    if [ -n "${AML_BEFORE_BIN:-}" ]; then
      # The same for the other build, whose agent (content-addressed) is copied in by hand.
      cp -R "$tmp/src" "$tmp/src-bf$rep"
      aml_config "$tmp/tf-aml-bf$rep" "$SPORT" "$tmp/ws-bf$rep" "$tmp/src-bf$rep" "$HHOME/.aml-bf$rep"
      sum=$(sha256sum "$AML_BEFORE_BIN" | cut -c1-16)
      install -d -o "$HUSER" -g "$HGROUP" "$HHOME/.aml-bf$rep" "$HHOME/.aml-bf$rep/bin" "$HHOME/.aml-bf$rep/bin/$sum"
      install -o "$HUSER" -g "$HGROUP" -m 755 "$AML_BEFORE_BIN" "$HHOME/.aml-bf$rep/bin/$sum/terraform-provider-aml"
      (cd "$tmp/tf-aml-bf$rep" && TF_CLI_CONFIG_FILE=$tmp/tf-before.rc tf init -input=false -no-color >"$tmp/logs/aml-bf$rep-init.log" 2>&1) ||
        { tail -20 "$tmp/logs/aml-bf$rep-init.log" >&2; die "terraform init failed for the aml-bf$rep config"; }
    fi
  done
  cp -R "$tmp/src" "$tmp/src-tar"
  for rep in $(seq 1 "$SN"); do
    say "shaped link: first apply (agent staged) and tar | ssh: repetition $rep/$SN"
    if [ -n "${AML_BEFORE_BIN:-}" ]; then
      case $((rep % 3)) in 1) order="aml before tar" ;; 2) order="before tar aml" ;; *) order="tar aml before" ;; esac
    elif [ $((rep % 2)) = 1 ]; then order="aml tar"; else order="tar aml"; fi
    for c in $order; do
      if [ "$c" = aml ]; then
        measure aml s-first "$rep" "$tmp/tf-aml-f$rep"
      elif [ "$c" = before ]; then
        measure aml-before s-first "$rep" "$tmp/tf-aml-bf$rep"
      else
        measure_cmd tar s-first "$tmp/logs/tar-s-first-$rep.log" \
          bash -c 'set -o pipefail; tar -C "$1" -cf - . | "${@:3}" "mkdir -p $2 && tar -C $2 -xf -"' _ \
          "$tmp/src-tar" "tar-$rep" "${sshc[@]}" ||
          { tail "$tmp/logs/tar-s-first-$rep.log" >&2; die "tar | ssh failed"; }
        [ "$(find "$HHOME/tar-$rep" -type f | wc -l)" = "$tree_files" ] || die "tar | ssh: files missing on the host"
      fi
    done
  done

  # Re-runs after a one-file change: ours (its own staged config) against the baseline's config
  # with its connection switched to the shaped proxy (a connection block change replaces nothing).
  sed -i "s/^    port        = $PORT\$/    port        = $SPORT/" "$tmp/tf-base/main.tf"
  grep -q "port        = $SPORT" "$tmp/tf-base/main.tf" || die "could not point the baseline at the shaped proxy"
  for rep in $(seq 1 "$SN"); do
    say "shaped link: one file changed, apply: repetition $rep/$SN"
    if [ $((rep % 2)) = 1 ]; then order="aml base"; else order="base aml"; fi
    for c in $order; do
      if [ "$c" = aml ]; then
        printf 'edited by the benchmark: shaped %s repetition %s\n' "$c" "$rep" >>"$tmp/src-aml-s/$EDITED"
        measure aml s-rerun "$rep" "$tmp/tf-aml-s"
      else
        printf 'edited by the benchmark: shaped %s repetition %s\n' "$c" "$rep" >>"$tmp/src-base/$EDITED"
        measure base s-rerun "$rep"
      fi
    done
  done
  cmp -s "$tmp/src-base/$EDITED" "$HHOME/base/src-base/$EDITED" || die "baseline (shaped): the edited file on the host differs"
fi

# ---------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------
say "done in $(elapsed)s"
agent_bytes=$(stat -c %s "$provider_bin")
tfv=$("$TF" version 2>/dev/null | head -1)
sshv=$(/usr/sbin/sshd -V 2>&1 | head -1 || true)
med() { median "$1" | awk '{ printf "%.0f", $1 }'; }
echo
echo "Machine: $(nproc) cores; $(uname -sr); $tfv; ${sshv:-sshd}; $(python3 --version 2>&1). Date: $(date -u '+%Y-%m-%d %H:%M UTC')."
echo
echo "### Training on an SSH host: re-run after a one-file change in a 2,000-file tree"
echo
echo "Median of $N repetitions (min–max), contenders interleaved, order alternating. Bytes = client→server bytes through the same counting proxy in front of sshd."
echo
echo "| measurement | aml provider | terraform_data + file + remote-exec | ours / baseline |"
echo "|---|---:|---:|---:|"
printf '| one file changed, `terraform apply`: seconds | %s | %s | %s |\n' \
  "$(cell "$T/aml-rerun-sec")" "$(cell "$T/base-rerun-sec")" "$(ratio "$(median "$T/aml-rerun-sec")" "$(median "$T/base-rerun-sec")")"
printf '| one file changed, `terraform apply`: bytes sent to the host | %s | %s | %s |\n' \
  "$(bcell "$T/aml-rerun-up")" "$(bcell "$T/base-rerun-up")" "$(ratio "$(median "$T/aml-rerun-up")" "$(median "$T/base-rerun-up")")"
printf '| first apply (cold, one sample): seconds | %s | %s | %s |\n' \
  "$(awk '{ printf "%.3f", $1 }' "$T/aml-cold-sec")" "$(awk '{ printf "%.3f", $1 }' "$T/base-cold-sec")" \
  "$(ratio "$(median "$T/aml-cold-sec")" "$(median "$T/base-cold-sec")")"
printf '| first apply (cold, one sample): bytes sent to the host | %s | %s | %s |\n' \
  "$(bcell "$T/aml-cold-up")" "$(bcell "$T/base-cold-up")" "$(ratio "$(median "$T/aml-cold-up")" "$(median "$T/base-cold-up")")"
echo
echo "- Tree: $tree_files files, $(human "$tree_bytes") (2,000 files of 2 KiB of base64 text from random bytes in 10 × 10 nested dirs, plus a stdlib-only \`train.py\` that prints one line and logs one metric through \`aml_run\`). Each repetition appends one line to \`$EDITED\` in the contender's own copy of the tree, then times \`terraform apply -auto-approve\` (plan included), which must report \"1 added, 0 changed, 1 destroyed\"."
echo "- ours: \`aml_workspace\` + \`aml_remote_compute\` (key auth, \`host_key\` pinned) + \`aml_run_configuration\` (user-managed \`python3\`) + \`aml_experiment_run\` with \`compute_target = aml_remote_compute.host.name\`; the changed snapshot hash replaces the run, which sends the manifest and the blobs the host lacks, runs \`train.py\` there under the staged agent and brings back metrics and logs. Every apply produced a new run id with status Completed and metric ran = 1."
echo "- baseline: \`terraform_data\` with \`triggers_replace\` = sha1 over every file's \`filesha1\` (\`fileset(src, \"**\")\`), a \`file\` provisioner uploading the tree (scp) and \`remote-exec\` running \`python3 train.py\` there. Every apply printed train.py's line; the edited file arrived on the host."
echo "- Bytes received from the host per re-run (median): ours $(human "$(med "$T/aml-rerun-down")"), baseline $(human "$(med "$T/base-rerun-down")"). SSH connections opened per re-run (median): ours $(med "$T/aml-rerun-conns"), baseline $(med "$T/base-rerun-conns"); cold: ours $(med "$T/aml-cold-conns"), baseline $(med "$T/base-cold-conns")."
echo "- The run's own \`duration_seconds\` on the host (as the provider records it), per re-run: median $(cell "$T/aml-run-duration") s; the rest of ours' apply is terraform and plugin start-ups, the plan's snapshot hash, SSH connect, sending the manifest and blobs, staging the run directory and collecting the results."
echo "- ours' re-run bytes are $(ratio "$(median "$T/aml-rerun-up")" "$manifest_json") the size of the tree's snapshot manifest as JSON ($(human "$manifest_json") for $manifest_files files); the changed file itself is $(human "$(stat -c %s "$tmp/src-aml/$EDITED")") after the last edit."
echo "- The cold apply of ours attaches the host, which stages the provider binary on it as the agent ($(human "$agent_bytes"), once per host and provider version): most of its cold bytes. The snapshot's blobs go as one compressed tar; base64 text compresses only to about 3/4, so compression helps ours little here."
[ -z "$NOTE" ] || echo "- sshd: $NOTE"

if [ "$SHAPED" = 1 ]; then
  row() { # LABEL A B: seconds and bytes rows of contenders A and B (files $T/A-sec, $T/A-up)
    printf '| %s: seconds | %s | %s | %s |\n' "$1" \
      "$(cell "$T/$2-sec")" "$(cell "$T/$3-sec")" "$(ratio "$(median "$T/$2-sec")" "$(median "$T/$3-sec")")"
    printf '| %s: bytes sent to the host | %s | %s | %s |\n' "$1" \
      "$(bcell "$T/$2-up")" "$(bcell "$T/$3-up")" "$(ratio "$(median "$T/$2-up")" "$(median "$T/$3-up")")"
  }
  echo
  echo "### Training on an SSH host over a shaped link ($RATE_MBIT Mbit/s, +$DELAY each way)"
  echo
  echo "Median of $SN repetitions (min–max), contenders interleaved, order alternating; agent staging is one sample each. The same sshd, behind a second proxy that limits each direction to $RATE_MBIT Mbit/s and delays it by $DELAY."
  echo
  echo "| measurement | aml provider | the other contender | ours / other |"
  echo "|---|---:|---:|---:|"
  row 'one file changed, `terraform apply`, vs terraform_data + file + remote-exec' aml-s-rerun base-s-rerun
  row 'first apply (agent staged), vs `tar -cf - . \| ssh host '"'"'mkdir -p d \&\& tar -C d -xf -'"'"'`' aml-s-first tar-s-first
  [ -z "${AML_BEFORE_BIN:-}" ] ||
    row 'first apply (agent staged), the build given as AML_BEFORE_BIN, vs the same `tar \| ssh`' aml-before-s-first tar-s-first
  row 'staging the agent: attach a new host (`-target=aml_remote_compute.host`), vs `ssh host '"'"'cat > file'"'"' < provider`' aml-s-stage cat-s-stage
  echo
  echo "- Re-runs: ours is its own config (workspace, \`remote_root\` ~/.aml-shaped) attached through the shaped proxy; the baseline is the loopback section's config with its \`connection\` port switched to the shaped proxy (which replaces nothing). Each repetition appends one line to \`$EDITED\` first. The run's own \`duration_seconds\`: median $(cell "$T/aml-s-run-duration") s."
  echo "- First apply, agent staged: each repetition of ours is a new config, workspace and \`remote_root\` (so the host has none of the snapshot's blobs) whose \`bin/\` already holds the staged agent (copied on the host, untimed); it attaches the host (probe), sends the manifest and every blob (one gzipped tar) and runs \`train.py\`. The contender sends the same $tree_files files with \`tar | ssh\` into a new directory and runs nothing. Bytes back from the host (median): ours $(human "$(med "$T/aml-s-first-down")"), tar $(human "$(med "$T/tar-s-first-down")")."
  echo "- Staging: attaching a host whose \`remote_root\` has no agent uploads the provider binary ($(human "$agent_bytes")) and probes the host; the contender is one \`ssh host 'cat > file'\` of the same binary. This happens once per host and provider binary."
fi
