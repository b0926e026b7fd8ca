"""Issue 17, items 1 and 4, through real Envoy 1.40 running the rendered configuration:
CORS-preflight look-alikes (Fetch standard §4.8) and the request-body limit at the exact edge
of Envoy's buffer. The MCP server's `/__seen` is the oracle for what got past the gateway.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading

import pytest

from conftest import MCP_HEADERS, tool_call
from test_envoy import ORIGIN, assert_json_denial, assert_not_forwarded
from test_envoy import seen  # noqa: F401  (fixture)

# limits.max_body_bytes in the stack (the default): the largest body mcp-authz decides on.
LIMIT = 65536
NO_POLICY = {"error": "forbidden", "message": "No policy allows this request"}
TOO_LARGE = {"error": "payload_too_large", "message": "The request body is too large to authorize"}


# --- item 1: preflights are what the Fetch standard says, nothing else ----------------------

@pytest.mark.parametrize("path", ["/mcp", "/mcp/admin", "/anything"])
@pytest.mark.parametrize("headers", [
    {"origin": "", "access-control-request-method": "POST"},
    {"origin": ORIGIN, "access-control-request-method": ""},
    {"origin": "", "access-control-request-method": ""},
], ids=["empty-origin", "empty-method", "both-empty"])
def test_preflight_lookalike_is_an_ordinary_request(stack, envoy, seen, headers, path):
    # Issue 17: `Origin` and `Access-Control-Request-Method` merely present made mcp-authz
    # allow an OPTIONS (with a body) to the MCP server without a token.
    body = json.dumps(tool_call("write_file", {"path": "x", "content": "y"}))
    # Not a preflight, so it is decided like any request: no route of the policy takes
    # OPTIONS (the `mcp` route lists GET, POST, DELETE) and the resource default is deny.
    r = envoy.request("OPTIONS", path, {**headers, "content-type": "application/json"}, body)
    assert_json_denial(r, 403, None, NO_POLICY)
    assert_not_forwarded(stack)


@pytest.mark.parametrize("body", [None, b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'],
                         ids=["no-body", "with-body"])
def test_real_preflight_is_answered_by_envoy(envoy, seen, body):
    # Both headers non-empty: Envoy's CORS filter answers it before ext_authz runs, body or
    # not; neither mcp-authz nor the MCP server is asked.
    r = envoy.request("OPTIONS", "/mcp/admin",
                      {"origin": ORIGIN, "access-control-request-method": "POST"}, body)
    assert r.status == 200, r
    assert r.header("access-control-allow-origin") == ORIGIN, r
    assert_not_forwarded(seen)


def test_options_with_a_token_is_decided_like_any_request(stack, envoy, seen):
    # A token does not change that: OPTIONS is not a method any route allows.
    r = envoy.request("OPTIONS", "/mcp", {"origin": ""}, token=stack.mint(scope="files:admin"))
    assert_json_denial(r, 403, None, NO_POLICY)
    assert_not_forwarded(stack)


# --- item 4: the body limit at the exact edge of Envoy's buffer -----------------------------

def _exactly(n: int) -> bytes:
    """A valid `list_files` call padded with JSON whitespace to exactly `n` bytes."""
    msg = json.dumps(tool_call("list_files")).encode()
    assert len(msg) < n
    return msg[:-1] + b" " * (n - len(msg)) + msg[-1:]


def _chunked_http11(port: int, token: str, chunks: list[bytes]) -> tuple[int, bytes]:
    """POST /mcp over HTTP/1.1 with `transfer-encoding: chunked`, one chunk per item."""
    head = "".join(f"{k}: {v}\r\n" for k, v in {
        "host": f"127.0.0.1:{port}", **MCP_HEADERS, "authorization": f"Bearer {token}",
        "transfer-encoding": "chunked", "connection": "close"}.items())
    received: list[bytes] = []

    def read(s: socket.socket) -> None:
        # Read while sending: Envoy may answer (413) and close before the last chunk is in, and
        # a close with unread request bytes is a reset that would drop an answer not yet read.
        try:
            while chunk := s.recv(65536):
                received.append(chunk)
        except OSError:
            pass

    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        reader = threading.Thread(target=read, args=(s,))
        reader.start()
        try:
            s.sendall(f"POST /mcp HTTP/1.1\r\n{head}\r\n".encode())
            for c in chunks:
                s.sendall(f"{len(c):x}\r\n".encode() + c + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered early; the answer is what the test checks
        reader.join(timeout=30)
    data = b"".join(received)
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def _http2(port: int, token: str, body: bytes, tmp_path, content_length: bool) -> tuple[int, bytes]:
    """POST /mcp over cleartext HTTP/2 (prior knowledge) with curl's nghttp2."""
    f = tmp_path / "body.json"
    f.write_bytes(body)
    argv = ["curl", "-sS", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_code}",
            "-H", f"authorization: Bearer {token}", "--data-binary", f"@{f}"]
    for k, v in MCP_HEADERS.items():
        argv += ["-H", f"{k}: {v}"]
    if not content_length:
        argv += ["-H", "content-length:"]  # curl drops the header: DATA frames only
    r = subprocess.run(argv + [f"http://127.0.0.1:{port}/mcp"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out, _, code = r.stdout.rpartition(b"\n")
    return int(code), out


@pytest.mark.parametrize("more", [1, 100, 70000])
def test_exact_limit_then_more_is_too_large_http11_chunked(stack, envoy, seen, more):
    # Issue 17: Envoy buffered exactly `max_request_bytes`, sent
    # `x-envoy-auth-partial-body: false`, and a complete-looking 65,536-byte `list_files`
    # prefix was allowed. The render now buffers one byte more than mcp-authz accepts.
    status, body = _chunked_http11(stack.ports.envoy, stack.mint(),
                                   [_exactly(LIMIT), b" " * (more - 1) + b"x"])
    assert status == 413, body
    assert json.loads(body) == TOO_LARGE
    assert_not_forwarded(stack)


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "data-only"])
@pytest.mark.parametrize("more", [1, 100])
def test_exact_limit_then_more_is_too_large_http2(stack, seen, tmp_path, more, content_length):
    status, body = _http2(stack.ports.envoy, stack.mint(),
                          _exactly(LIMIT) + b" " * (more - 1) + b"x", tmp_path, content_length)
    assert status == 413, body
    assert json.loads(body) == TOO_LARGE
    assert_not_forwarded(stack)


def test_exact_limit_body_is_decided_and_served_http11_chunked(stack, seen):
    # The legitimate edge still works: a body of exactly the limit is complete and allowed.
    status, body = _chunked_http11(stack.ports.envoy, stack.mint(),
                                   [_exactly(LIMIT)[:1000], _exactly(LIMIT)[1000:]])
    assert status == 200, body
    assert [s["method"] for s in stack.seen()] == ["POST"]


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "data-only"])
def test_exact_limit_body_is_decided_and_served_http2(stack, seen, tmp_path, content_length):
    status, body = _http2(stack.ports.envoy, stack.mint(), _exactly(LIMIT), tmp_path,
                          content_length)
    assert status == 200, body
    assert [s["method"] for s in stack.seen()] == ["POST"]


def test_one_over_the_limit_is_too_large(stack, envoy, seen):
    r = envoy.mcp(_exactly(LIMIT + 1), token=stack.mint())
    assert_json_denial(r, 413, None, TOO_LARGE)
    assert_not_forwarded(stack)
