"""Issue 13, part 3: MCP 2026-07-28 clients and older clients behind the same configuration.

Its own stack: real Envoy 1.40 on the rendered configuration, mcp-authz, the oidc-provider AS,
and — as the MCP server — the Python SDK 2.3.0 (tests/e2e/sdk_server.py --root), whose
stateless Streamable HTTP app is dual-era: 2026-07-28 (`server/discover`, per-request
`_meta` envelope, `subscriptions/listen`, `Mcp-Method`/`Mcp-Name` checked against the body)
and the `initialize` revisions. The policy is the stack's usual one (deploy/examples/
file-server.yaml: `files:list` to connect, `read_file` → `files:read`, `write_file` →
`files:write`, `file:///` resources → `files:read`). The server's `/__seen` shows what it
received; every test asserts on it, not only on the client's outcome.
"""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import sys

import pytest

from conftest import MCP_HEADERS, Raw
from test_envoy import E2E, _client_argv
import stack as stack_mod

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {}}


class PythonServerStack(stack_mod.Stack):
    """The stack with the Python SDK server in place of mcp-server.mjs (same tools, same
    `/__seen`)."""

    def _spawn(self, name, argv, cwd=None):
        if name == "mcp":
            argv = [sys.executable, str(E2E / "sdk_server.py"), "--port", str(self.ports.mcp),
                    "--root", str(self.files_root)]
        return super()._spawn(name, argv, cwd)


@pytest.fixture(scope="module")
def rstack(request):
    # The scopes header is off by default; on here, it shows what each forwarded call carried.
    s = PythonServerStack(extra_yaml="identity: {scopes_header: x-mcp-authz-scopes}\n")
    s.start()
    yield s
    failed = request.session.testsfailed > 0
    if failed:
        print(f"\nrevisions stack logs kept in {s.logdir}")
    s.stop(remove_workdir=not failed)


@pytest.fixture(scope="module")
def renvoy(rstack) -> Raw:
    return Raw(rstack.ports.envoy)


@pytest.fixture
def clean(rstack):
    rstack.clear_seen()
    return rstack


def modern(method: str, params: dict | None = None, id: int = 1) -> dict:
    """A 2026-07-28 request: the per-request envelope in `params._meta`."""
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": {"_meta": META, **(params or {})}}


def modern_headers(method: str | None, name: str | None = None, **extra) -> dict:
    h = {**MCP_HEADERS, "mcp-protocol-version": MODERN, **extra}
    if method is not None:
        h["mcp-method"] = method
    if name is not None:
        h["mcp-name"] = name
    return h


def b64(s: str) -> str:
    return f"=?base64?{base64.b64encode(s.encode()).decode()}?="


def posted(stack) -> list[dict]:
    """The JSON-RPC POSTs the MCP server received, in order."""
    return [s for s in stack.seen() if s["method"] == "POST" and isinstance(s.get("body"), dict)]


def methods_seen(stack) -> list[str]:
    return [s["body"].get("method") for s in posted(stack)]


def run_client(stack, argv: list[str]) -> list[dict]:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=150, cwd=E2E)
    report = (f"$ {' '.join(argv)}\nexit {p.returncode}\n--- stdout\n{p.stdout}\n"
              f"--- stderr\n{p.stderr[-4000:]}\n--- stack logs\n{stack.logs()}")
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert p.returncode == 0, report
    assert lines and json.loads(lines[-1]) == {"done": True, "ok": True}, report
    steps = [json.loads(ln) for ln in lines[:-1]]
    assert all(s.get("ok", True) for s in steps), report
    return steps


def step_named(steps: list[dict], name: str) -> dict:
    found = [s for s in steps if s.get("step") == name]
    assert found, f"no {name} step in {[s.get('step') for s in steps]}"
    return found[0]


def listen(port: int, token: str | None, notifications: dict, headers: dict | None = None):
    """POST subscriptions/listen; its answer is an endless SSE stream when accepted, so only
    the first event is read. Returns (status, headers, first event data or body)."""
    body = json.dumps(modern("subscriptions/listen", {"notifications": notifications})).encode()
    return listen_raw(port, token, body, headers)


def listen_raw(port: int, token: str | None, body: bytes, headers: dict | None = None):
    """`listen` with the body given as bytes (duplicate members, escapes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", "/mcp", skip_accept_encoding=True)
        h = headers if headers is not None else modern_headers("subscriptions/listen")
        if token is not None:
            h = {**h, "authorization": f"Bearer {token}"}
        for k, v in {**h, "content-length": str(len(body))}.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        if r.status != 200:
            return r.status, hdrs, r.read()
        buf = b""
        while b"\n\n" not in buf.replace(b"\r\n", b"\n"):
            chunk = r.read1(65536)
            assert chunk, f"stream ended before the first event: {buf!r}"
            buf += chunk
        data = [ln[5:].strip() for ln in buf.replace(b"\r\n", b"\n").split(b"\n")
                if ln.startswith(b"data:")]
        return r.status, hdrs, json.loads(data[0])
    finally:
        conn.close()


# ------------------------------------------------------------------------------ SDK clients

@pytest.mark.parametrize("flow", ["client_credentials", "authorization_code"])
def test_python_client_speaks_2026_07_28_with_step_up(clean, flow):
    """The Python SDK 2.3.0 client against the Python SDK server: server/discover, tools/list,
    tools/call, two step-ups (403 insufficient_scope → new token → allowed), and no
    initialize anywhere."""
    stack = clean
    steps = run_client(stack, _client_argv(stack, "py", flow, deny_write=False))
    assert step_named(steps, "connect")["protocol"] == MODERN, steps
    for name in ("discovery", "tools/list", "tools/call list_files", "tools/call read_file",
                 "step-up read", "tools/call write_file", "step-up write",
                 "tools/call read_file (written file)"):
        assert step_named(steps, name)["ok"], name
    ups = [s for s in steps if s.get("step") == "challenge" and s.get("status") == 403]
    assert len(ups) == 2, ups
    got = posted(stack)
    methods = [s["body"]["method"] for s in got]
    # What the server executed came through the gate in the 2026-07-28 shape only.
    assert "server/discover" in methods and "initialize" not in methods, methods
    assert methods.count("tools/call") >= 4, methods
    for s in got:
        h = s["headers"]
        assert h.get("mcp-protocol-version") == MODERN, s
        assert h.get("mcp-method") == s["body"]["method"], s
        assert "mcp-session-id" not in h, s
        if s["body"]["method"] == "tools/call":
            assert h.get("mcp-name") == s["body"]["params"]["name"], s
    # The write needed files:write; the call that reached the server carried such a token.
    writes = [s for s in got if s["body"].get("params", {}).get("name") == "write_file"]
    assert len(writes) == 1, writes
    assert "files:write" in writes[0]["headers"]["x-mcp-authz-scopes"].split(), writes[0]


def test_python_client_forced_to_the_initialize_handshake(clean):
    """The same client in `legacy` mode (the initialize handshake, 2025-11-25) against the
    same configuration and server."""
    stack = clean
    argv = _client_argv(stack, "py", "client_credentials", deny_write=True) + ["--mode", "legacy"]
    steps = run_client(stack, argv)
    assert step_named(steps, "connect")["protocol"] == "2025-11-25", steps
    assert step_named(steps, "step-up read")["ok"]
    assert step_named(steps, "tools/call write_file (denied)")["ok"]
    methods = methods_seen(stack)
    assert methods[0] == "initialize" and "server/discover" not in methods, methods
    assert all(s["body"].get("params", {}).get("name") != "write_file" for s in posted(stack))


def test_typescript_client_2025_11_25_against_the_same_stack(clean):
    """The TypeScript SDK 1.32.2 client (initialize, 2025-11-25) through the same Envoy and
    mcp-authz configuration to the same Python server."""
    stack = clean
    steps = run_client(stack, _client_argv(stack, "ts", "client_credentials", deny_write=False))
    assert step_named(steps, "connect")["protocol"] == "2025-11-25", steps
    assert step_named(steps, "step-up write")["ok"]
    got = posted(stack)
    methods = [s["body"]["method"] for s in got]
    assert methods[0] == "initialize" and "server/discover" not in methods, methods
    assert all(s["headers"].get("mcp-protocol-version") in (None, "2025-11-25") for s in got[1:]), got


# ------------------------------------------------------------------------------ raw 2026 shapes

def test_discover_is_baseline_and_challenges_without_a_token(renvoy, clean):
    stack = clean
    r = renvoy.mcp(modern("server/discover"), headers=modern_headers("server/discover"))
    assert r.status == 401, r
    www = r.header("www-authenticate")
    assert 'scope="files:list"' in www and "resource_metadata=" in www and "error=" not in www, r
    assert stack.seen() == []
    r = renvoy.mcp(modern("server/discover"), stack.mint(scope="files:list"),
                   headers=modern_headers("server/discover"))
    assert r.status == 200, r
    assert MODERN in r.json()["result"]["supportedVersions"], r
    assert methods_seen(stack) == ["server/discover"]
    # The PRM still advertises the baseline only.
    prm = renvoy.request("GET", "/.well-known/oauth-protected-resource/mcp")
    assert prm.status == 200 and prm.json()["scopes_supported"] == ["files:list"], prm


def test_listen_is_baseline_and_its_resources_need_their_scope(rstack, clean):
    stack = clean
    port = rstack.ports.envoy
    baseline = stack.mint(scope="files:list")
    reader = stack.mint(scope="files:list files:read")
    # Without a token: 401 naming the baseline, as the old GET stream got.
    status, hdrs, _ = listen(port, None, {"toolsListChanged": True})
    assert status == 401 and 'scope="files:list"' in hdrs["www-authenticate"], hdrs
    # The baseline opens a stream of list changes.
    status, _, first = listen(port, baseline, {"toolsListChanged": True})
    assert status == 200, first
    assert first["method"] == "notifications/subscriptions/acknowledged", first
    assert first["params"]["notifications"] == {"toolsListChanged": True}, first
    # A resource subscription needs what reading the resource needs (files:read for file:///),
    # under either spelling of the filter member.
    for key in ("resourceSubscriptions", "resource_subscriptions"):
        status, hdrs, body = listen(port, baseline, {key: ["file:///hello.txt"]})
        assert status == 403, body
        assert 'error="insufficient_scope"' in hdrs["www-authenticate"], hdrs
        assert "files:read" in hdrs["www-authenticate"], hdrs
    assert methods_seen(stack) == ["subscriptions/listen"], stack.seen()
    status, _, first = listen(port, reader, {"resourceSubscriptions": ["file:///hello.txt"]})
    assert status == 200, first
    assert first["params"]["notifications"] == {"resourceSubscriptions": ["file:///hello.txt"]}
    got = posted(stack)
    assert [s["body"]["method"] for s in got] == ["subscriptions/listen"] * 2
    assert got[1]["body"]["params"]["notifications"]["resourceSubscriptions"] == ["file:///hello.txt"]


def test_mcp_method_mismatch_and_missing_are_refused(renvoy, clean):
    stack = clean
    token = stack.mint(scope="files:list files:read")
    call = modern("tools/call", {"name": "read_file", "arguments": {"path": "hello.txt"}})
    cases = {
        "method header names another method": modern_headers("tools/list", "read_file"),
        "name header names another tool": modern_headers("tools/call", "list_files"),
        "Mcp-Method missing": modern_headers(None, "read_file"),
        "Mcp-Name missing": modern_headers("tools/call"),
        "Mcp-Method base64-encoded": modern_headers(b64("tools/call"), "read_file"),
        "Mcp-Name not canonical base64": modern_headers("tools/call", "=?base64?cmVhZF9maWxl=?="),
    }
    direct = Raw(stack.ports.mcp)
    for what, headers in cases.items():
        r = renvoy.mcp(call, token, headers=headers)
        assert r.status == 400, f"{what}: {r}"
        assert r.header("www-authenticate") is None, f"{what}: {r}"
        assert stack.seen() == [], f"{what} reached the server: {stack.seen()}"
        # The server refuses the same request on its own (HeaderMismatch, -32020): the gate
        # and the server read the headers alike.
        d = direct.mcp(call, headers=headers)
        assert d.status == 400 and d.json()["error"]["code"] == -32020, f"{what}: {d}"
        stack.clear_seen()
    # The same call with the headers right is allowed and executed.
    r = renvoy.mcp(call, token, headers=modern_headers("tools/call", "read_file"))
    assert r.status == 200, r
    assert r.json()["result"]["content"][0]["text"] == "hello from mcp-authz", r
    assert methods_seen(stack) == ["tools/call"]


def test_headers_are_optional_for_older_revisions(renvoy, clean):
    """A 2025-11-25 request without Mcp-Method passes the gate (the headers are new in
    2026-07-28) and the server runs it on its handshake path."""
    stack = clean
    token = stack.mint(scope="files:list")
    msg = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    r = renvoy.mcp(msg, token, headers={"mcp-protocol-version": "2025-11-25"})
    assert r.status == 200, r
    assert "list_files" in [t["name"] for t in r.json()["result"]["tools"]], r
    assert methods_seen(stack) == ["tools/list"]


def test_encoded_word_mcp_name_is_decoded_as_the_server_does(renvoy, clean):
    stack = clean
    token = stack.mint(scope="files:list files:read")
    call = modern("tools/call", {"name": "read_file", "arguments": {"path": "hello.txt"}})
    r = renvoy.mcp(call, token, headers=modern_headers("tools/call", b64("read_file")))
    assert r.status == 200, r
    assert r.json()["result"]["content"][0]["text"] == "hello from mcp-authz", r
    got = posted(stack)
    assert len(got) == 1 and got[0]["headers"]["mcp-name"] == b64("read_file"), got
    stack.clear_seen()
    # An encoded word naming another tool than the body is refused by both readers.
    other = modern_headers("tools/call", b64("list_files"))
    r = renvoy.mcp(call, token, headers=other)
    assert r.status == 400 and stack.seen() == [], r
    d = Raw(stack.ports.mcp).mcp(call, headers=other)
    assert d.status == 400 and d.json()["error"]["code"] == -32020, d
    # A resource URI in an encoded word (resources/read names it in Mcp-Name).
    read = modern("resources/read", {"uri": "file:///hello.txt"})
    r = renvoy.mcp(read, token, headers=modern_headers("resources/read", b64("file:///hello.txt")))
    assert r.status == 200, r
    assert r.json()["result"]["contents"][0]["text"] == "hello from mcp-authz", r
    # The baseline alone may not read it: a step-up, and nothing reaches the server.
    stack.clear_seen()
    r = renvoy.mcp(read, stack.mint(scope="files:list"),
                   headers=modern_headers("resources/read", "file:///hello.txt"))
    assert r.status == 403 and "files:read" in r.header("www-authenticate"), r
    assert stack.seen() == []


def test_python_client_listen_steps_up_to_the_resources_scope(clean):
    """The Python SDK client's own `Client.listen()` for updates of file:///hello.txt with a
    files:list token: 403 insufficient_scope naming files:read, the client re-authorizes, the
    listen is allowed and the server acknowledges the subscription."""
    stack = clean
    argv = _client_argv(stack, "py", "client_credentials", deny_write=True) + [
        "--listen", "file:///hello.txt"]
    steps = run_client(stack, argv)
    assert step_named(steps, "connect")["protocol"] == MODERN, steps
    s = step_named(steps, "listen")
    assert s["stepped_up"] and "files:read" in s["challenges"][0]["scope"].split(), s
    assert {"files:list", "files:read"} <= set(s["token_scope"].split()), s
    got = [x for x in posted(stack) if x["body"]["method"] == "subscriptions/listen"]
    # Only the listen with the stepped-up token reached the server, and it named the URI.
    assert len(got) == 1, got
    assert got[0]["body"]["params"]["notifications"]["resourceSubscriptions"] == ["file:///hello.txt"]
    assert "files:read" in got[0]["headers"]["x-mcp-authz-scopes"].split(), got[0]
    assert got[0]["headers"]["mcp-method"] == "subscriptions/listen", got[0]


def test_a_2025_06_18_client_on_the_same_config(renvoy, clean):
    """A 2025-06-18 client (initialize handshake, MCP-Protocol-Version on later requests, no
    Mcp-Method/Mcp-Name) through the same gate: baseline to connect, per-tool step-up."""
    stack = clean
    old = "2025-06-18"
    token = stack.mint(scope="files:list")
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": old, "capabilities": {},
                       "clientInfo": {"name": "e2e-2025-06-18", "version": "1"}}}
    r = renvoy.mcp(init, token)
    assert r.status == 200 and r.json()["result"]["protocolVersion"] == old, r
    r = renvoy.mcp({"jsonrpc": "2.0", "method": "notifications/initialized"}, token,
                   headers={"mcp-protocol-version": old})
    assert r.status in (200, 202), r
    h = {"mcp-protocol-version": old}
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "read_file", "arguments": {"path": "hello.txt"}}}
    r = renvoy.mcp(call, token, headers=h)
    assert r.status == 403, r
    www = r.header("www-authenticate")
    assert 'error="insufficient_scope"' in www and 'scope="files:list files:read"' in www, r
    r = renvoy.mcp(call, stack.mint(scope="files:list files:read"), headers=h)
    assert r.status == 200, r
    assert r.json()["result"]["content"][0]["text"] == "hello from mcp-authz", r
    got = posted(stack)
    assert [s["body"]["method"] for s in got] == ["initialize", "notifications/initialized",
                                                  "tools/call"], got
    assert "mcp-method" not in got[-1]["headers"], got[-1]


META_JSON = json.dumps(META)
LISTEN_SHAPES = {
    # name: (notifications member text, status through the gate)
    "camelCase": ('"notifications":{"resourceSubscriptions":["file:///hello.txt"]}', 403),
    "snake_case (the SDK's models accept it)":
        ('"notifications":{"resource_subscriptions":["file:///hello.txt"]}', 403),
    "both spellings": ('"notifications":{"resourceSubscriptions":[],'
                       '"resource_subscriptions":["file:///hello.txt"]}', 403),
    "escaped member name": ('"notifications":{"resourceSubscripti\\u006fns":["file:///hello.txt"]}', 403),
    "escaped URI": ('"notifications":{"resourceSubscriptions":["file:\\/\\/\\/hello.txt"]}', 403),
    "scheme in capitals": ('"notifications":{"resourceSubscriptions":["FILE:///hello.txt"]}', 403),
    "duplicate member, the last one strong": (
        '"notifications":{"resourceSubscriptions":[],"resourceSubscriptions":["file:///hello.txt"]}', 400),
    "duplicate notifications": ('"notifications":{"toolsListChanged":true},'
                                '"notifications":{"resourceSubscriptions":["file:///hello.txt"]}', 400),
    "URI not a string": ('"notifications":{"resourceSubscriptions":[["file:///hello.txt"]]}', 400),
    "URIs not an array": ('"notifications":{"resourceSubscriptions":"file:///hello.txt"}', 400),
    "dot segments": ('"notifications":{"resourceSubscriptions":["file:///x/../hello.txt"]}', 400),
    "null list": ('"notifications":{"resourceSubscriptions":null,"toolsListChanged":true}', 200),
    "other member name case": ('"notifications":{"ResourceSubscriptions":["file:///hello.txt"],'
                               '"toolsListChanged":true}', 200),
}


@pytest.mark.parametrize("shape", list(LISTEN_SHAPES))
def test_listen_filter_shapes_never_subscribe_beyond_the_token(rstack, clean, shape):
    """Adversarial spellings of a listen filter with a baseline (files:list) token, which may
    follow no file:/// resource: whatever the gate lets through, the server's acknowledgment
    (what it will deliver) names no resource; whatever it refuses never reaches the server."""
    stack = clean
    member, want = LISTEN_SHAPES[shape]
    body = ('{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"_meta":'
            + META_JSON + "," + member + "}}").encode()
    status, hdrs, got = listen_raw(rstack.ports.envoy, stack.mint(scope="files:list"), body)
    assert status == want, (status, hdrs, got)
    if status == 403:
        assert 'error="insufficient_scope"' in hdrs["www-authenticate"], hdrs
        assert "files:read" in hdrs["www-authenticate"], hdrs
    if status != 200:
        assert stack.seen() == [], stack.seen()
        return
    assert got["method"] == "notifications/subscriptions/acknowledged", got
    assert "resourceSubscriptions" not in got["params"]["notifications"], got
    assert methods_seen(stack) == ["subscriptions/listen"]
