#!/usr/bin/env bash
# Installs a real Spark for the aml_hdinsight_attachment tests: the pyspark
# package (it carries bin/spark-submit, bin/spark-class and the jars) with numpy
# (pyspark.ml needs it) in a virtual environment every user can run, so the
# test sshd's throwaway user (the "head node") can too. Java comes from the
# machine (Debian's openjdk-17). Idempotent.
set -euo pipefail
SPARK_VENV=${AML_SPARK_VENV:-/opt/aml-spark}
PYSPARK_VERSION=3.5.5
NUMPY_VERSION=1.26.4

have() { "$SPARK_VENV/bin/python" -c "import pyspark, numpy, sys; sys.exit(pyspark.__version__ != '$PYSPARK_VERSION')" 2>/dev/null; }

if ! command -v java >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null
  else
    echo "install-spark: java is missing (install a JDK/JRE 17)" >&2; exit 1
  fi
fi
if ! have; then
  # The system interpreter (not a per-user version manager's), so that any
  # user can run the environment.
  py=/usr/bin/python3
  [ -x "$py" ] || py=$(command -v python3)
  mkdir -p "$(dirname "$SPARK_VENV")"
  "$py" -m venv "$SPARK_VENV"
  "$SPARK_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "pyspark==$PYSPARK_VERSION" "numpy==$NUMPY_VERSION"
  chmod -R a+rX "$SPARK_VENV"
  have || { echo "install-spark: pyspark $PYSPARK_VERSION did not install into $SPARK_VENV" >&2; exit 1; }
fi
echo "==> spark: pyspark $PYSPARK_VERSION in $SPARK_VENV ($(java -version 2>&1 | head -n1))"
