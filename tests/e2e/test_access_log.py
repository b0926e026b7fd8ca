"""Issue 15, the default answer: `envoy.access_log: true` renders an access log that reads
mcp-authz's dynamic metadata, which is then on by default; the identity headers sent by
default, and every reserved name stripped by the rendered listener before any filter.

Its own stack: real Envoy 1.40 on the rendered configuration with `envoy.access_log: true`
(JSON lines on Envoy's stdout), mcp-authz, the AS and the MCP server.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import Raw, rpc
import stack as stack_mod


@pytest.fixture(scope="module")
def lstack(request):
    s = stack_mod.Stack(envoy_yaml="  access_log: true\n")
    s.start()
    yield s
    failed = request.session.testsfailed > 0
    if failed:
        print(f"\naccess-log stack logs kept in {s.logdir}")
    s.stop(remove_workdir=not failed)


@pytest.fixture(scope="module")
def lenvoy(lstack) -> Raw:
    return Raw(lstack.ports.envoy)


def log_lines(stack) -> list[dict]:
    """Envoy's access log so far: every JSON line on its stdout."""
    out = stack.procs["envoy"].out.read_text(errors="replace")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def logged(stack, before: int) -> dict:
    """The one access-log line written after the first `before` (Envoy flushes its log about
    once a second; as the edge it replaces a client's `x-request-id`, so lines are told
    apart by order)."""
    deadline = time.monotonic() + 10
    while True:
        lines = log_lines(stack)[before:]
        if lines or time.monotonic() > deadline:
            assert len(lines) == 1, lines
            return lines[0]
        time.sleep(0.2)


def test_allowed_request_is_logged_with_the_identity(lstack, lenvoy):
    token = lstack.mint(sub="alice", client_id="app-1", scope="files:list files:read")
    lstack.clear_seen()
    before = len(log_lines(lstack))
    r = lenvoy.mcp(rpc("tools/list"), token=token, headers={"x-mcp-authz-scopes": "files:admin"})
    assert r.status == 200, r
    line = logged(lstack, before)
    assert line["request_id"], line
    assert line["status"] == 200, line
    assert line["authz_decision"] == "allow", line
    assert line["authz_reason"] == "ok", line
    assert line["authz_resource"] == stack_mod.RESOURCE_ID, line
    assert line["authz_route"] == "mcp", line
    assert line["sub"] == "alice" and line["client_id"] == "app-1", line
    assert line["iss"] == stack_mod.TEST_ISSUER, line
    assert line["scope"] == "files:list files:read", line
    assert line["path"] == "/mcp", line
    # The MCP server got the default identity headers, not the client's scopes copy.
    seen = lstack.seen()
    assert len(seen) == 1, seen
    h = seen[0]["headers"]
    assert h["x-mcp-authz-subject"] == "alice" and h["x-mcp-authz-client-id"] == "app-1", h
    assert "x-mcp-authz-scopes" not in h, h


def test_denied_request_is_logged_without_any_credential(lstack, lenvoy):
    token = lstack.mint(sub="mallory", scope="files:list")
    secret = "QUERYSECRET" + "x" * 20
    before = len(log_lines(lstack))
    r = lenvoy.request("POST", f"/mcp?access_token={secret}",
                       headers={"content-type": "application/json"},
                       body=rpc("tools/list"), token=token)
    assert r.status == 400, r
    line = logged(lstack, before)
    assert line["status"] == 400, line
    assert line["authz_decision"] == "deny", line
    assert line["authz_reason"] == "token_in_query", line
    # Neither the query's token nor the bearer token is ever written to the log.
    raw = json.dumps(line)
    assert secret not in raw and token not in raw and token.split(".")[1] not in raw, line
    assert line["path"] == "/mcp", line
    before = len(log_lines(lstack))
    r = lenvoy.mcp(rpc("tools/list"))
    assert r.status == 401, r
    line = logged(lstack, before)
    assert (line["authz_decision"], line["authz_reason"]) == ("deny", "no_credentials"), line
    assert line["sub"] is None, line
