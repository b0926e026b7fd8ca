"""Issue 14, RFC 7662 introspection, through real Envoy.

The real authorization server (oidc-provider, as.mjs) runs with `--access-token-format opaque`:
its client-credentials tokens are opaque, and mcp-authz judges them at the endpoint it
discovers from the AS metadata (`introspection_endpoint`), authenticated as the static
confidential client `mcp-authz-rs` (client_secret_basic, the secret from a file). A token the
AS revoked (RFC 7009, at its revocation endpoint) is refused with 401 `invalid_token`.

oidc-provider refuses to introspect JWTs (`unsupported_token_type`), so the revoked-JWT case
(`introspect: always`) uses the offline test issuer's JWTs and an introspection endpoint in
this file that says which of them are revoked. When that endpoint is down, its JWTs get 503
while the AS's opaque tokens, judged by the AS's own endpoint, still pass.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import Raw, rpc
import stack as stack_mod

RS_ID, RS_SECRET = "mcp-authz-rs", "mcp-authz-rs-secret"
TEST_RS_ID, TEST_RS_SECRET = "test-rs", "test-rs-secret"
AS_CACHE_SECONDS = 2


class RevocationList:
    """An RFC 7662 endpoint for the offline test issuer: every token is active unless revoked;
    the answer is built from the JWT's own claims (what an IAM holding the token would say)."""

    def __init__(self):
        self.revoked: set[str] = set()
        self.calls = 0
        self.bad_auth = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                outer.calls += 1
                length = int(self.headers.get("content-length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                want = "Basic " + base64.b64encode(f"{TEST_RS_ID}:{TEST_RS_SECRET}".encode()).decode()
                if self.headers.get("authorization") != want:
                    outer.bad_auth += 1
                    self._send(401, {"error": "invalid_client"})
                    return
                token = form.get("token", "")
                if token in outer.revoked or token.count(".") != 2:
                    self._send(200, {"active": False})
                    return
                payload = token.split(".")[1]
                claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                self._send(200, {"active": True, **claims, "token_type": "Bearer"})

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/introspect"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class IntrospectionStack(stack_mod.Stack):
    """The local stack with an opaque-token AS, introspection for both issuers, and
    `introspect: always` on the resource (the AS's tokens are opaque anyway; the test issuer's
    JWTs are verified and then introspected)."""

    def __init__(self, revocations: RevocationList):
        self.revocations = revocations
        super().__init__(envoy_yaml="  check_timeout_ms: 2000\n")

    def _spawn(self, name, argv, cwd=None):
        if name == "as":
            argv = [*argv, "--access-token-format", "opaque"]
        return super()._spawn(name, argv, cwd)

    def config_yaml(self) -> str:
        secret = self.workdir / "introspection.secret"
        secret.write_text(RS_SECRET + "\n")
        test_secret = self.workdir / "test-introspection.secret"
        test_secret.write_text(TEST_RS_SECRET + "\n")
        yaml = super().config_yaml()
        q = json.dumps
        leeway = f"        leeway_seconds: {stack_mod.LEEWAY_SECONDS}\n"
        head, sep, tail = yaml.partition(f"      - issuer: {q(stack_mod.TEST_ISSUER)}")
        assert sep and head.endswith(leeway) and leeway in tail, yaml
        # The AS: endpoint discovered from its metadata.
        head += (f"        introspection: {{client_id: {RS_ID}, client_secret_file: {q(str(secret))}, "
                 f"cache_seconds: {AS_CACHE_SECONDS}, negative_cache_seconds: 1}}\n")
        tail = tail.replace(leeway, leeway + (
            f"        introspection: {{endpoint: {q(self.revocations.url)}, client_id: {TEST_RS_ID}, "
            f"client_secret_file: {q(str(test_secret))}}}\n"), 1)
        yaml = head + sep + tail
        realm = f"    realm: {q(stack_mod.REALM)}\n"
        assert realm in yaml, yaml
        return yaml.replace(realm, realm + "    introspect: always\n", 1)

    def opaque_token(self, scope: str = "files:list") -> str:
        token = self.client_credentials(scope)["access_token"]
        assert token.count(".") != 2, f"the AS must issue opaque tokens here: {token[:40]}"
        return token

    def revoke(self, token: str) -> None:
        """RFC 7009 at the AS, as the client the token was issued to."""
        basic = base64.b64encode(b"demo-cc:demo-cc-secret").decode()
        req = urllib.request.Request(
            self.as_metadata()["revocation_endpoint"],
            data=urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"}).encode(),
            headers={"authorization": f"Basic {basic}",
                     "content-type": "application/x-www-form-urlencoded"})
        with stack_mod._HTTP.open(req, timeout=10) as r:
            assert r.status == 200


@pytest.fixture(scope="module")
def revocations():
    r = RevocationList()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def intro_stack(revocations):
    s = IntrospectionStack(revocations)
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture
def envoy(intro_stack) -> Raw:
    intro_stack.clear_seen()
    return Raw(intro_stack.ports.envoy)


def _invalid(r, description: str) -> None:
    assert r.status == 401, r
    www = r.header("www-authenticate") or ""
    assert 'error="invalid_token"' in www, r
    assert f'error_description="{description}"' in www, r
    assert "resource_metadata=" in www, r


def test_as_advertises_introspection(intro_stack):
    assert intro_stack.as_metadata()["introspection_endpoint"].startswith(intro_stack.issuer)


def test_opaque_token_reaches_the_mcp_server(intro_stack, envoy):
    token = intro_stack.opaque_token()
    r = envoy.mcp(rpc("tools/list"), token=token)
    assert r.status == 200, r
    seen = intro_stack.seen()
    assert len(seen) == 1, seen
    assert "demo-cc" in json.dumps(seen), seen  # client_id from the introspection answer
    # The introspected scope decides: files:list does not reach read_file.
    r = envoy.mcp(rpc("tools/call", {"name": "read_file", "arguments": {"path": "a"}}), token=token)
    assert r.status == 403, r
    assert 'error="insufficient_scope"' in (r.header("www-authenticate") or ""), r


def test_revoked_opaque_token_is_refused(intro_stack, envoy):
    token = intro_stack.opaque_token()
    intro_stack.revoke(token)
    _invalid(envoy.mcp(rpc("tools/list"), token=token), "The access token is not active")
    assert intro_stack.seen() == []


def test_revocation_is_seen_once_the_cached_answer_expires(intro_stack, envoy):
    token = intro_stack.opaque_token()
    assert envoy.mcp(rpc("tools/list"), token=token).status == 200
    intro_stack.revoke(token)
    # Within cache_seconds the cached answer may still allow it; after it, never.
    time.sleep(AS_CACHE_SECONDS + 1.2)
    _invalid(envoy.mcp(rpc("tools/list"), token=token), "The access token is not active")


def test_unknown_opaque_token_is_refused(envoy):
    _invalid(envoy.mcp(rpc("tools/list"), token="not-a-token-the-as-issued-0123456789"),
             "The access token is not active")


def test_revoked_jwt_is_refused_under_introspect_always(intro_stack, envoy, revocations):
    live = intro_stack.mint()
    before = revocations.calls
    assert envoy.mcp(rpc("tools/list"), token=live).status == 200
    assert revocations.calls == before + 1, "a JWT is introspected under `introspect: always`"
    revoked = intro_stack.mint()
    revocations.revoked.add(revoked)
    _invalid(envoy.mcp(rpc("tools/list"), token=revoked), "The access token is not active")
    # A JWT that fails verification is refused before anyone is asked.
    before = revocations.calls
    r = envoy.mcp(rpc("tools/list"), token=intro_stack.mint(aud="https://other.example/mcp"))
    assert r.status == 401, r
    assert revocations.calls == before
    assert revocations.bad_auth == 0


def test_endpoint_down_is_503_only_for_its_tokens(intro_stack, envoy, revocations):
    """Last in the module: it stops the test issuer's endpoint, then the AS."""
    revocations.stop()
    r = envoy.mcp(rpc("tools/list"), token=intro_stack.mint())
    assert r.status == 503, r
    assert r.header("retry-after") == "30", r
    assert r.header("www-authenticate") is None, r
    # The AS's opaque tokens are judged by the AS's endpoint: unaffected.
    token = intro_stack.opaque_token()
    assert envoy.mcp(rpc("tools/list"), token=token).status == 200
    # The AS down: an opaque token not yet cached cannot be judged; fail closed.
    fresh = intro_stack.opaque_token()
    intro_stack.procs.pop("as").stop()
    r = envoy.mcp(rpc("tools/list"), token=fresh)
    assert r.status == 503, r
