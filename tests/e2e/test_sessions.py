"""Issue 17, items 2 and 3: MCP sessions bound to who opened them, and streams that end.

Its own stack: real Envoy 1.40 on the rendered configuration with `sessions:` (ext_proc wraps
the MCP server's `Mcp-Session-Id`, ext_authz unwraps it) and `envoy.max_stream_seconds: 3`,
mcp-authz, and the TypeScript-SDK server in `--stateful` mode (the SDK's own session handling
and InMemoryEventStore, which bind a session to nothing but its id). The server's `/__seen`
shows what it received.
"""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import subprocess
import time

import pytest

from conftest import MCP_HEADERS, Raw, rpc, tool_call
from test_envoy import E2E, _client_argv
import stack as stack_mod

MAX_STREAM_SECONDS = 3
PROTOCOL = "2025-11-25"  # the last revision with sessions; it also brings the priming event
NOT_FOUND = {"error": "not_found",
             "message": "Session not found. Start a new session with an initialize request"}


@pytest.fixture(scope="module")
def sstack(request):
    s = stack_mod.Stack(mcp_args=("--stateful",),
                        envoy_yaml=f"  max_stream_seconds: {MAX_STREAM_SECONDS}\n",
                        extra_yaml="sessions:\n  key_file: {workdir}/session.key\n")
    # The key lives in a file (never in the YAML); 48 random bytes, base64url.
    (s.workdir / "session.key").write_text(secrets.token_urlsafe(48) + "\n")
    s.start()
    yield s
    failed = request.session.testsfailed > 0
    if failed:
        print(f"\nsessions stack logs kept in {s.logdir}")
    s.stop(remove_workdir=not failed)


@pytest.fixture(scope="module")
def senvoy(sstack) -> Raw:
    return Raw(sstack.ports.envoy)


@pytest.fixture
def clean(sstack):
    sstack.clear_seen()
    return sstack


def tokens(stack):
    """alice (reads files), bob (baseline scope only), and alice through another client."""
    return {
        "alice": stack.mint(scope="files:list files:read", sub="alice", client_id="app"),
        "bob": stack.mint(scope="files:list", sub="bob", client_id="app"),
        "alice-other-client": stack.mint(scope="files:list files:read", sub="alice",
                                         client_id="other-app"),
    }


def sse_events(body: bytes) -> list[dict]:
    """`id`/`data` of each SSE event (data parsed as JSON when there is any)."""
    events = []
    for block in body.decode().replace("\r\n", "\n").split("\n\n"):
        ev = {}
        for line in block.split("\n"):
            key, _, value = line.partition(":")
            if key in ("id", "data"):
                ev[key] = value.strip()
        if ev:
            if ev.get("data"):
                ev["data"] = json.loads(ev["data"])
            events.append(ev)
    return events


def headers(session: str | None = None, **extra) -> dict:
    h = {**MCP_HEADERS, "mcp-protocol-version": PROTOCOL, **extra}
    if session is not None:
        h["mcp-session-id"] = session
    return h


def open_session(envoy: Raw, token: str) -> str:
    """initialize + notifications/initialized; returns the Mcp-Session-Id the client holds."""
    init = rpc("initialize", {"protocolVersion": PROTOCOL, "capabilities": {},
                              "clientInfo": {"name": "e2e", "version": "1"}})
    r = envoy.request("POST", "/mcp", headers(), init, token)
    assert r.status == 200, r
    session = r.header("mcp-session-id")
    assert session, r
    r = envoy.request("POST", "/mcp", headers(session),
                      {"jsonrpc": "2.0", "method": "notifications/initialized"}, token)
    assert r.status == 202, r
    return session


def server_ids(stack) -> set[str]:
    return {s["headers"]["mcp-session-id"] for s in stack.seen() if "mcp-session-id" in s["headers"]}


def assert_unknown_session(r, stack):
    assert r.status == 404, r
    assert r.header("content-type") == "application/json", r
    assert r.header("www-authenticate") is None, r
    assert r.json() == NOT_FOUND, r
    seen = stack.seen()
    assert seen == [], f"reached the MCP server: {json.dumps(seen)[:800]}"


def open_stream(port: int, token: str, session: str, last_event_id: str | None = None):
    """GET /mcp (the standalone SSE stream, or a replay); returns the connection and response
    with the body unread, so the caller decides how much of the stream to read."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("GET", "/mcp", skip_accept_encoding=True)
    h = {"accept": "text/event-stream", "mcp-protocol-version": PROTOCOL,
         "mcp-session-id": session, "authorization": f"Bearer {token}"}
    if last_event_id is not None:
        h["last-event-id"] = last_event_id
    for k, v in h.items():
        conn.putheader(k, v)
    conn.endheaders()
    return conn, conn.getresponse()


def stream_answer(port: int, token: str, session: str, last_event_id: str | None = None):
    """Status and body of a GET /mcp that is expected to be refused. An accepted one is an
    endless SSE stream (with keep-alive comments): its body is not read, so a regression
    fails at once instead of hanging."""
    conn, resp = open_stream(port, token, session, last_event_id)
    try:
        if resp.status == 200:
            return resp.status, resp.read1(65536)
        return resp.status, resp.read()
    finally:
        conn.close()


# --- item 2: sessions bound to (resource, iss, sub, client) ---------------------------------

def test_the_client_holds_a_bound_id_and_the_server_gets_its_own(sstack, senvoy, clean):
    t = tokens(sstack)
    session = open_session(senvoy, t["alice"])
    assert session.startswith("mab1."), session
    r = senvoy.request("POST", "/mcp", headers(session), tool_call("list_files", id=2), t["alice"])
    assert r.status == 200, r
    assert r.header("mcp-session-id") == session, r  # the same binding on every response
    ids = server_ids(sstack)
    assert len(ids) == 1, ids
    raw = ids.pop()
    assert not raw.startswith("mab1.") and session.endswith("." + raw), (raw, session)


@pytest.mark.parametrize("who", ["bob", "alice-other-client"])
def test_another_principal_cannot_open_the_sessions_get_stream(sstack, senvoy, clean, who):
    t = tokens(sstack)
    session = open_session(senvoy, t["alice"])
    sstack.clear_seen()
    status, body = stream_answer(sstack.ports.envoy, t[who], session)
    assert status == 404, (status, body)
    assert json.loads(body) == NOT_FOUND
    assert sstack.seen() == []
    # The owner's stream opens.
    conn, resp = open_stream(sstack.ports.envoy, t["alice"], session)
    try:
        assert resp.status == 200, resp.status
        assert resp.getheader("content-type") == "text/event-stream"
    finally:
        conn.close()


def test_another_principal_cannot_replay_the_sessions_events(sstack, senvoy, clean):
    # Issue 17: with alice's Mcp-Session-Id and a Last-Event-ID from her stream, bob (no
    # files:read) received her read_file result.
    t = tokens(sstack)
    session = open_session(senvoy, t["alice"])
    r = senvoy.request("POST", "/mcp", headers(session),
                       tool_call("read_file", {"path": "hello.txt"}, id=3), t["alice"])
    assert r.status == 200 and r.header("content-type") == "text/event-stream", r
    events = sse_events(r.body)
    priming = events[0]["id"]
    assert events[-1]["data"]["result"]["content"][0]["text"] == "hello from mcp-authz", events
    sstack.clear_seen()
    status, body = stream_answer(sstack.ports.envoy, t["bob"], session, last_event_id=priming)
    assert status == 404, (status, body)
    assert json.loads(body) == NOT_FOUND
    assert sstack.seen() == []
    # The replay is real: alice herself gets her result again.
    conn, resp = open_stream(sstack.ports.envoy, t["alice"], session, last_event_id=priming)
    try:
        assert resp.status == 200, resp.status
        data = b""
        while b"hello from mcp-authz" not in data:
            chunk = resp.read1(65536)
            assert chunk, data
            data += chunk
    finally:
        conn.close()


def test_another_principal_cannot_delete_the_session(sstack, senvoy, clean):
    t = tokens(sstack)
    session = open_session(senvoy, t["alice"])
    sstack.clear_seen()
    r = senvoy.request("DELETE", "/mcp", headers(session), token=t["bob"])
    assert_unknown_session(r, sstack)
    r = senvoy.request("POST", "/mcp", headers(session), rpc("tools/list", id=4), t["alice"])
    assert r.status == 200, r  # still alive
    r = senvoy.request("DELETE", "/mcp", headers(session), token=t["alice"])
    assert r.status == 200, r
    r = senvoy.request("POST", "/mcp", headers(session), rpc("tools/list", id=5), t["alice"])
    assert r.status == 404, r  # the MCP server ended it


@pytest.mark.parametrize("variant", ["bare-server-id", "forged-tag", "two-ids"])
def test_unbound_or_forged_session_ids_are_refused(sstack, senvoy, clean, variant):
    t = tokens(sstack)
    session = open_session(senvoy, t["alice"])
    raw = session.split(".", 2)[2]
    value = {"bare-server-id": raw,
             "forged-tag": "mab1." + "A" * 43 + "." + raw,
             "two-ids": f"{session}, {session}"}[variant]
    sstack.clear_seen()
    r = senvoy.request("POST", "/mcp", headers(value), rpc("tools/list", id=6), t["alice"])
    assert_unknown_session(r, sstack)


def test_a_token_naming_no_subject_or_client_gets_no_session(sstack, senvoy, clean):
    # Bound to (resource, iss) alone, such a session would be shared by every token of the
    # issuer that names nobody: none is opened for it, and no one else's opens for it either.
    anonymous = sstack.mint(scope="files:list files:read", sub=None, client_id=None)
    init = rpc("initialize", {"protocolVersion": PROTOCOL, "capabilities": {},
                              "clientInfo": {"name": "e2e", "version": "1"}})
    r = senvoy.request("POST", "/mcp", headers(), init, anonymous)
    assert r.status == 200, r
    assert r.header("mcp-session-id") is None, r
    assert len(sstack.seen()) == 1  # the initialize reached the server, which opened a session
    session = open_session(senvoy, tokens(sstack)["alice"])
    sstack.clear_seen()
    r = senvoy.request("POST", "/mcp", headers(session), rpc("tools/list", id=7), anonymous)
    assert_unknown_session(r, sstack)


def test_requests_without_a_session_still_need_a_token_first(sstack, senvoy, clean):
    # The decision matrix order holds: no token is 401 whatever Mcp-Session-Id says.
    r = senvoy.request("GET", "/mcp", headers("mab1.whatever"))
    assert r.status == 401, r
    assert sstack.seen() == []


@pytest.mark.parametrize("lang", ["ts", "py"])
def test_sdk_clients_use_bound_sessions_end_to_end(sstack, clean, lang):
    argv = _client_argv(sstack, lang, "client_credentials", deny_write=False)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=E2E)
    report = (f"$ {' '.join(argv)}\nexit {p.returncode}\n--- stdout\n{p.stdout}\n"
              f"--- stderr\n{p.stderr[-4000:]}\n--- stack logs\n{sstack.logs()}")
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert p.returncode == 0, report
    assert lines and json.loads(lines[-1]) == {"done": True, "ok": True}, report
    # The client really used a session, and the server only ever saw its own ids.
    ids = server_ids(sstack)
    assert ids and not any(i.startswith("mab1.") for i in ids), (ids, report)


# --- item 3: streams end, and are reopened with a current token -----------------------------

def test_an_open_stream_ends_at_max_stream_seconds(sstack, senvoy, clean):
    # Issue 17: an SSE stream outlived its token and a policy reload. Envoy now resets every
    # stream at envoy.max_stream_seconds; the guard below only keeps a failure from hanging.
    t = tokens(sstack)
    session = open_session(senvoy, t["alice"])
    conn, resp = open_stream(sstack.ports.envoy, t["alice"], session)
    conn.sock.settimeout(10 * MAX_STREAM_SECONDS)
    # The server sends keep-alive comments, so a stream that never ends keeps delivering.
    give_up = time.monotonic() + 10 * MAX_STREAM_SECONDS
    ended = False
    try:
        assert resp.status == 200, resp.status
        try:
            while time.monotonic() < give_up:
                if not resp.read1(65536):
                    ended = True
                    break
        except http.client.IncompleteRead:
            ended = True  # reset mid-chunk: the stream ended too
        except (socket.timeout, TimeoutError):
            pass
    finally:
        conn.close()
    assert ended, "the SSE stream was still open after 10x envoy.max_stream_seconds"
    # The client reconnects with its (current) token and the session goes on.
    conn, resp = open_stream(sstack.ports.envoy, t["alice"], session)
    try:
        assert resp.status == 200, resp.status
    finally:
        conn.close()
