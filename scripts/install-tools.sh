#!/usr/bin/env bash
# Installs or checks everything `make test` needs (`install-tools.sh demo`: only
# what `make demo` needs, which runs on this machine alone: no sshd, no root).
# Terraform itself is the one prerequisite the user brings; it is never downloaded.
source "$(dirname "$0")/lib.sh"
purpose=${1:-test}

missing=()
command -v go >/dev/null || missing+=("go (https://go.dev/dl)")
if ! command -v python3 >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    say "installing python3 with apt-get"
    apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
  else
    missing+=("python3")
  fi
fi
# uv builds system-managed environments fast; without it the engine falls back to
# venv + pip, but the tests exercise both builders.
if command -v python3 >/dev/null && ! uv --version >/dev/null 2>&1; then
  say "installing uv with pip"
  python3 -m pip install --quiet --disable-pip-version-check uv 2>&1 | grep -v 'Running pip as' || true
  command -v pyenv >/dev/null && pyenv rehash 2>/dev/null || true
  uv --version >/dev/null 2>&1 || missing+=("uv (python3 -m pip install uv)")
fi
# A real OpenSSH sshd on 127.0.0.1 for the SSH tests (aml_remote_compute).
if [ "$purpose" = demo ]; then
  :
elif [ "$(id -u)" = 0 ] || [ -x /usr/sbin/sshd ]; then
  bash "$(dirname "$0")/install-sshd.sh" || missing+=("openssh-server (scripts/install-sshd.sh)")
else
  missing+=("openssh-server and root for the sshd tests (scripts/install-sshd.sh)")
fi
# A real Spark (the pyspark package, Java) for the aml_hdinsight_attachment tests.
if [ "$purpose" != demo ]; then
  bash "$(dirname "$0")/install-spark.sh" || missing+=("Spark (scripts/install-spark.sh)")
  # A real Slurm (slurm-wlm, munge) for the aml_batch_attachment tests.
  bash "$(dirname "$0")/install-slurm.sh" || missing+=("Slurm (scripts/install-slurm.sh)")
  # A real Docker engine (docker.io, containerd, runc) and debootstrap for the
  # environment.docker tests; the tests start a private dockerd of their own.
  bash "$(dirname "$0")/install-docker.sh" || missing+=("Docker (scripts/install-docker.sh)")
  # A real PostgreSQL and S3-compatible server (versitygw) for the shared workspace backend.
  bash "$(dirname "$0")/install-postgres.sh" || missing+=("PostgreSQL (scripts/install-postgres.sh)")
  bash "$(dirname "$0")/install-versitygw.sh" || missing+=("versitygw (scripts/install-versitygw.sh)")
fi
# Real mlflow-skinny and azureml-core wheels for the script-compatibility tests
# (demo: not needed).
if [ "$purpose" != demo ]; then
  bash "$(dirname "$0")/install-pywheels.sh" || missing+=("python test wheels (scripts/install-pywheels.sh)")
  # Debian's headless Chromium for the `aml ui` browser tests (cmd/aml).
  bash "$(dirname "$0")/install-chromium.sh" || missing+=("chromium (scripts/install-chromium.sh)")
fi
tf=$(find_terraform)
if [ -z "$tf" ]; then
  missing+=("terraform or tofu on PATH (or TF_ACC_TERRAFORM_PATH)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  printf 'missing prerequisites:\n'; printf '  - %s\n' "${missing[@]}"
  # Outside CI the tests skip with the reason; in CI nothing may skip.
  [ "${CI:-}" = "true" ] && exit 1
fi
say "go: $(go version 2>/dev/null | cut -d' ' -f3)  python3: $(python3 --version 2>&1 | cut -d' ' -f2)  uv: $(uv --version 2>/dev/null | cut -d' ' -f2)  terraform: ${tf:-none}"
