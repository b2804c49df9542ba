#!/usr/bin/env bash
# Installs or checks everything `make test` needs. Terraform itself is the one
# prerequisite the user brings; it is never downloaded.
source "$(dirname "$0")/lib.sh"

missing=()
command -v go >/dev/null || missing+=("go (https://go.dev/dl)")
command -v python3 >/dev/null || {
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    say "installing python3 with apt-get"
    apt-get update -qq && apt-get install -y -qq python3 >/dev/null
  else
    missing+=("python3")
  fi
}
tf=$(find_terraform)
if [ -z "$tf" ]; then
  missing+=("terraform or tofu on PATH (or TF_ACC_TERRAFORM_PATH)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  printf 'missing prerequisites:\n'; printf '  - %s\n' "${missing[@]}"
  # Outside CI the tests skip with the reason; in CI nothing may skip.
  [ "${CI:-}" = "true" ] && exit 1
fi
say "go: $(go version 2>/dev/null | cut -d' ' -f3)  python3: $(python3 --version 2>&1 | cut -d' ' -f2)  terraform: ${tf:-none}"
