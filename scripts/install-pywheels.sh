#!/usr/bin/env bash
# Downloads the real Python packages the script-compatibility tests install
# offline (find_links + no_index) into a wheel directory: mlflow-skinny with its
# dependencies, for MLflow logging in a system-managed environment, and the
# azureml-core wheel alone (installed with --no-deps: the tests only check that
# a real azureml.core is found before the provider's stand-in). The wheels are
# for this machine's python3, which the tests build environments with.
# Idempotent: a complete directory is kept.
set -euo pipefail
WHEELS=${AML_TEST_WHEELS:-/opt/aml-wheels}
MLFLOW_VERSION=3.17.2
AZUREML_CORE_VERSION=1.61.0.post4
stamp="$WHEELS/.complete-mlflow-$MLFLOW_VERSION-azureml-$AZUREML_CORE_VERSION-$(python3 -c 'import sys; print("py%d%d" % sys.version_info[:2])')"

if [ ! -f "$stamp" ]; then
  mkdir -p "$WHEELS"
  python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: -d "$WHEELS" "mlflow-skinny==$MLFLOW_VERSION"
  python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: --no-deps -d "$WHEELS" "azureml-core==$AZUREML_CORE_VERSION"
  chmod -R a+rX "$WHEELS"
  touch "$stamp"
fi
echo "==> python test wheels: mlflow-skinny $MLFLOW_VERSION, azureml-core $AZUREML_CORE_VERSION in $WHEELS"
