"""End-to-end guards for rows and helpers no other test holds (issue 16):

- the fail-closed row "Envoy gave up before a decision (ext_authz timeout)": Envoy answers its
  rendered `status_on_error` (503) and mcp-authz counts the abandoned Check as `cancelled`;
- the stand-in authorization server (as.mjs) passes its own self-check (as-check.mjs), so the
  SDK tests stand on an AS that behaves as the README says.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import REPO, Raw, rpc
import stack as stack_mod

E2E = REPO / "tests" / "e2e"


class SlowJwks:
    """The offline test issuer's JWKS over HTTP on 127.0.0.1:0; once `slow` is set, every
    request hangs for `delay` seconds before answering (an IAM that stopped responding)."""

    def __init__(self, delay: float = 60.0):
        self.jwks = b'{"keys":[]}'
        self.slow = threading.Event()
        self.requests = 0
        self.delay = delay
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                outer.requests += 1
                if outer.slow.is_set():
                    time.sleep(outer.delay)
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(outer.jwks)))
                    self.end_headers()
                    self.wfile.write(outer.jwks)
                except OSError:
                    pass  # the client gave up first

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class SlowIssuerStack(stack_mod.Stack):
    """The local stack, with the offline test issuer's keys fetched from `jwks` by URL instead
    of read from a file, and a fetch timeout far longer than Envoy's ext_authz timeout."""

    def __init__(self, jwks: SlowJwks):
        super().__init__()
        self.slow_jwks = jwks

    def config_yaml(self) -> str:
        self.slow_jwks.jwks = json.dumps({"keys": [self.test_key.jwk()]}).encode()
        yaml = super().config_yaml()
        line = f"        jwks_file: {json.dumps(str(self.jwks_path))}\n"
        assert line in yaml, yaml
        yaml = yaml.replace(line, f"        jwks_uri: {json.dumps(self.slow_jwks.url)}\n")
        # mcp-authz bounds an unknown-kid wait by half of `envoy.check_timeout_ms` (10 s here:
        # it waits up to 5 s), while the Envoy it fronts is rendered with a 0.5 s ext_authz
        # timeout (`_run` below), so Envoy gives up first, as with a slow or overloaded service.
        assert yaml.count("envoy:\n") == 1, yaml
        yaml = yaml.replace("envoy:\n", "envoy:\n  check_timeout_ms: 10000\n", 1)
        return yaml.replace("resources:\n", "jwks:\n  fetch_timeout_seconds: 20\nresources:\n", 1)

    def _run(self, argv: list[str]) -> str:
        out = super()._run(argv)
        if argv[1:3] == ["render", "envoy"]:
            out, n = re.subn(r"(?m)^(\s+)timeout: 10s$", r"\1timeout: 0.5s", out)
            assert n == 1, out
        return out


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the series of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_envoy_ext_authz_timeout_is_status_on_error_and_counted_cancelled():
    jwks = SlowJwks()
    s = SlowIssuerStack(jwks)
    try:
        s.start()
        envoy = Raw(s.ports.envoy)
        rendered = s.envoy_config_path.read_text()
        assert "status_on_error" in rendered and "ServiceUnavailable" in rendered, rendered
        metrics_url = f"http://127.0.0.1:{s.ports.authz_admin}/metrics"
        cancelled = lambda: metric(stack_mod.http_get(metrics_url)[1].decode(),  # noqa: E731
                                   "mcp_authz_checks_total", reason="cancelled")
        # Known kid: decided at once, allowed.
        assert envoy.mcp(rpc("tools/list"), token=s.mint()).status == 200
        before = cancelled()
        # A kid the set lacks makes mcp-authz wait on a refetch that hangs (its own bound is
        # 5 s); Envoy's ext_authz timeout (0.5 s in its rendered config) fires first.
        jwks.slow.set()
        token = s.mint(header={"kid": "rotated-in-but-unreachable"})
        r = envoy.mcp(rpc("tools/list"), token=token)
        assert r.status == 503, r  # status_on_error: ServiceUnavailable, never an allow
        assert r.header("www-authenticate") is None, r  # the answer is Envoy's, not ours
        deadline = time.monotonic() + 30
        while cancelled() < before + 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cancelled() == before + 1, stack_mod.http_get(metrics_url)[1].decode()
        # mcp-authz itself is fine: a known-kid token is still decided (and allowed).
        assert envoy.mcp(rpc("tools/list"), token=s.mint(jti="after")).status == 200
    finally:
        jwks.slow.clear()
        s.stop()
        jwks.close()


def test_stand_in_authorization_server_passes_its_self_check(stack):
    argv = [stack.node, str(E2E / "as-check.mjs"), "--issuer", stack.issuer,
            "--resource", stack.mcp_uri]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=E2E)
    report = f"$ {' '.join(argv)}\nexit {p.returncode}\n{p.stdout}\n{p.stderr[-3000:]}"
    lines = [json.loads(ln) for ln in p.stdout.splitlines() if ln.strip()]
    assert p.returncode == 0, report
    assert lines and lines[-1] == {"done": True, "ok": True}, report
    checks = lines[:-1]
    assert len(checks) >= 5 and all(c.get("ok") for c in checks), report
