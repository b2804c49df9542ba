#!/usr/bin/env bash
# Installs a real S3-compatible server for the shared-backend tests: versitygw
# (Apache-2.0, a Go program serving a directory over the S3 API), built from
# the Go module proxy at a pinned version into $(go env GOPATH)/bin. The test
# harness (internal/testutil/s3) starts it on a loopback port; nothing is
# started here. Idempotent.
set -euo pipefail
version=v1.8.0
bin="$(go env GOPATH)/bin/versitygw"
if [ ! -x "$bin" ] || [ "$(cat "$bin.version" 2>/dev/null)" != "$version" ]; then
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  if ! GOFLAGS= go install "github.com/versity/versitygw/cmd/versitygw@$version" >"$log" 2>&1; then
    echo "install-versitygw: go install failed:" >&2; tail -n 30 "$log" >&2; exit 1
  fi
  echo "$version" >"$bin.version"
fi
echo "==> versitygw: $version ($bin)"
