"""Shared fixtures for the end-to-end tests: one real stack (oidc-provider AS, MCP server,
mcp-authz, Envoy 1.40) per test session, on free loopback ports, and a raw HTTP helper.

Nothing here skips: a missing Envoy, node, node_modules or mcp-authz binary makes the stack
fixture raise StackError, so every test that needs it errors with the reason.
"""

from __future__ import annotations

import http.client
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "local"))

import stack as stack_mod  # noqa: E402

MCP_HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
}


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]  # as received, names lower-cased, repeats kept
    body: bytes

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def header(self, name: str) -> str | None:
        """The one value of a header (fails if it is repeated), or None."""
        values = self.all(name)
        assert len(values) <= 1, f"header {name} repeated: {values}\n{self}"
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)

    def __str__(self) -> str:
        head = "\n".join(f"  {k}: {v}" for k, v in self.headers)
        return f"HTTP {self.status}\n{head}\n  {self.body[:600]!r}"


class Raw:
    """Raw HTTP/1.1 to one loopback port. `http.client` sends the path byte for byte, so no
    client-side normalisation hides what Envoy does with `//`, `..` or `%2F`."""

    def __init__(self, port: int):
        self.port = port

    def request(self, method: str, path: str, headers=None, body: bytes | str | dict | None = None,
                token: str | None = None) -> Response:
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        hdrs = list((headers or {}).items()) if isinstance(headers, dict) else list(headers or [])
        if token is not None:
            hdrs.append(("authorization", f"Bearer {token}"))
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for k, v in hdrs:  # putheader keeps repeats (two Authorization headers)
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("content-length", str(len(body)))
            conn.endheaders(body)
            r = conn.getresponse()
            return Response(r.status, [(k.lower(), v) for k, v in r.getheaders()], r.read())
        finally:
            conn.close()

    def mcp(self, message: dict | str | bytes, token: str | None = None, path: str = "/mcp",
            headers=None) -> Response:
        """One JSON-RPC POST with the MCP Streamable HTTP headers."""
        return self.request("POST", path, {**MCP_HEADERS, **(headers or {})}, message, token)


def rpc(method: str, params: dict | None = None, id: int = 1) -> dict:
    msg = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def tool_call(name: str, arguments: dict | None = None, id: int = 1) -> dict:
    return rpc("tools/call", {"name": name, "arguments": arguments or {}}, id)


@pytest.fixture(scope="session")
def stack(request):
    s = stack_mod.Stack()
    s.start()
    yield s
    # Keep the logs of a failed session for inspection (the path is in every StackError).
    failed = request.session.testsfailed > 0
    if failed:
        print(f"\nstack logs kept in {s.logdir}")
    s.stop(remove_workdir=not failed)


@pytest.fixture(scope="session")
def envoy(stack) -> Raw:
    return Raw(stack.ports.envoy)
