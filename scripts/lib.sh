# Shared helpers for the project's scripts.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# A TF_CLI_CONFIG_FILE that names a missing file only produces warnings.
if [ -n "${TF_CLI_CONFIG_FILE:-}" ] && [ ! -f "$TF_CLI_CONFIG_FILE" ]; then
  unset TF_CLI_CONFIG_FILE
fi

# find_terraform prints the terraform (or OpenTofu) binary to use, or nothing.
find_terraform() {
  if [ -n "${TF_ACC_TERRAFORM_PATH:-}" ] && [ -x "$TF_ACC_TERRAFORM_PATH" ]; then
    echo "$TF_ACC_TERRAFORM_PATH"; return
  fi
  command -v terraform 2>/dev/null || command -v tofu 2>/dev/null || true
}

say() { printf '==> %s\n' "$*"; }
