#!/usr/bin/env bash
# The one way mcp-authz is built for release: the container image's build stage runs it
# (deploy/docker/Dockerfile) and so does the test suite (tests/run-all.sh), so the image is
# built by exactly the steps CI runs and checks.
#
#   deploy/docker/build.sh OUT_DIR    -> OUT_DIR/mcp-authz
set -euo pipefail
out=${1:?usage: deploy/docker/build.sh OUT_DIR}
cd "$(dirname "$0")/../.."

cargo build --release --locked --bin mcp-authz
mkdir -p "$out"
# Debug info out (about 85% of the file), symbols kept so a backtrace still names functions.
strip --strip-debug -o "$out/mcp-authz" "${CARGO_TARGET_DIR:-target}/release/mcp-authz"

# The binary runs and accepts the example configuration, offline.
"$out/mcp-authz" --version
"$out/mcp-authz" check-config deploy/mcp-authz.yaml > /dev/null
echo "built $out/mcp-authz ($(du -h "$out/mcp-authz" | cut -f1))"
