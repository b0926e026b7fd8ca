"""mcp-authz behind real Envoy 1.40, against the contract's decision matrix
(/work/shared/reference/resource-server-contract.md §2), with a real OAuth server
(tests/e2e/as.mjs), a real MCP server (tests/e2e/mcp-server.mjs) and the official SDK clients.

Raw requests go through `http.client` (conftest.Raw), so paths reach Envoy byte for byte.
The MCP server's `/__seen` (read directly, not through Envoy) proves what got past the gateway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time

import pytest

from conftest import MCP_HEADERS, REPO, rpc, tool_call
import stack as stack_mod

E2E = REPO / "tests" / "e2e"
SEED_401_BODY = (b'{"error":"unauthorized","message":"Authentication required. Use OAuth 2.0 with '
                 b'the authorization server listed in the Protected Resource Metadata."}')
ORIGIN = "https://inspector.example"


# --- expected challenges -------------------------------------------------------------------

def challenge(stack, *attrs: str) -> str:
    """`Bearer realm="...", <attrs>, resource_metadata="..."` in the order mcp-authz writes."""
    parts = [f'realm="{stack_mod.REALM}"', *attrs, f'resource_metadata="{stack.prm_url}"']
    return "Bearer " + ", ".join(parts)


def invalid_token(stack, description: str) -> str:
    return challenge(stack, 'error="invalid_token"', f'error_description="{description}"')


def insufficient(stack, scope: str) -> str:
    return challenge(stack, 'error="insufficient_scope"',
                     'error_description="The access token lacks the scope this request requires"',
                     f'scope="{scope}"')


def assert_json_denial(r, status: int, www: str | None, body: dict):
    assert r.status == status, r
    assert r.header("www-authenticate") == www, r
    assert r.header("content-type") == "application/json", r
    assert r.header("cache-control") == "no-store", r
    assert "WWW-Authenticate" in (r.header("access-control-expose-headers") or ""), r
    assert r.json() == body, r


def assert_not_forwarded(stack):
    seen = stack.seen()
    assert seen == [], f"request reached the MCP server: {json.dumps(seen)[:800]}"


@pytest.fixture
def seen(stack):
    """Clears the MCP server's record before the test; returns the stack."""
    stack.clear_seen()
    return stack


@pytest.fixture(scope="module")
def as_token(stack):
    """Real access tokens from oidc-provider (client credentials, RFC 8707 resource)."""
    cache = {}

    def get(scope: str = "files:list") -> str:
        if scope not in cache:
            cache[scope] = stack.client_credentials(scope)["access_token"]
        return cache[scope]

    return get


# --- discovery: PRM and CORS ---------------------------------------------------------------

@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp",
                                  "/.well-known/oauth-protected-resource"])
def test_prm_is_served_byte_equal_to_render(stack, envoy, seen, path):
    r = envoy.request("GET", path)
    assert r.status == 200, r
    assert r.header("content-type") == "application/json", r
    assert r.body == stack.render_prm(), r
    doc = r.json()
    assert doc == {"resource": stack.mcp_uri, "authorization_servers": [stack.issuer],
                   "scopes_supported": ["files:list"], "bearer_methods_supported": ["header"]}
    assert_not_forwarded(stack)  # direct_response: neither mcp-authz nor upstream involved


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp",
                                  "/.well-known/oauth-protected-resource"])
def test_prm_allows_browser_origins(envoy, path):
    r = envoy.request("GET", path, {"origin": ORIGIN})
    assert r.status == 200, r
    assert r.header("access-control-allow-origin") == "*", r


def test_cors_preflight_needs_no_token(envoy, seen):
    r = envoy.request("OPTIONS", "/mcp", {
        "origin": ORIGIN, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, mcp-protocol-version"})
    assert r.status == 200, r
    assert r.header("access-control-allow-origin") == ORIGIN, r
    assert "POST" in r.header("access-control-allow-methods"), r
    allowed = {h.strip() for h in r.header("access-control-allow-headers").split(",")}
    assert {"authorization", "content-type", "mcp-protocol-version"} <= allowed, r
    assert r.header("www-authenticate") is None, r
    assert_not_forwarded(seen)


# --- 401 without credentials ---------------------------------------------------------------

def test_no_token_gets_401_with_resource_metadata(stack, envoy, seen):
    r = envoy.mcp(rpc("tools/list"))
    assert r.status == 401, r
    assert r.header("www-authenticate") == (
        f'Bearer realm="{stack_mod.REALM}", scope="files:list", '
        f'resource_metadata="http://127.0.0.1:{stack.ports.envoy}'
        '/.well-known/oauth-protected-resource/mcp"'), r
    assert r.body == SEED_401_BODY, r
    assert r.header("content-type") == "application/json", r
    assert r.header("access-control-expose-headers") == "WWW-Authenticate", r
    assert_not_forwarded(stack)


def test_401_is_readable_by_browser_clients(stack, envoy):
    r = envoy.mcp(rpc("tools/list"), headers={"origin": ORIGIN})
    assert r.status == 401, r
    assert r.header("access-control-allow-origin") == ORIGIN, r
    exposed = {h.strip().lower() for h in r.header("access-control-expose-headers").split(",")}
    assert "www-authenticate" in exposed, r
    assert r.header("www-authenticate") == challenge(stack, 'scope="files:list"'), r


def test_other_auth_scheme_is_treated_as_no_credentials(stack, envoy, seen):
    r = envoy.mcp(rpc("tools/list"), headers={"authorization": "Basic ZGVtbzpkZW1v"})
    assert_json_denial(r, 401, challenge(stack, 'scope="files:list"'),
                       json.loads(SEED_401_BODY))
    assert_not_forwarded(stack)


# --- 401 invalid_token ----------------------------------------------------------------------

def _bad_tokens(stack):
    """name -> (token, error_description). Descriptions are the fixed RFC 6750 strings."""
    now = int(time.time())
    other_key = stack_mod.TestIssuerKey(kid=stack_mod.TEST_KID)  # same kid, different key
    good = stack.mint()
    _header, payload, _sig = good.split(".")
    return {
        "garbage": ("garbage", "The access token is malformed"),
        "expired": (stack.mint(iat=now - 900, exp=now - 600), "The access token expired"),
        "not_yet_valid": (stack.mint(nbf=now + 600), "The access token is not yet valid"),
        "no_exp": (stack.mint(exp=None), "The access token has no expiry"),
        "wrong_audience": (stack.mint(aud="http://127.0.0.1:1/other"),
                           "The access token was not issued for this resource"),
        "casdoor_client_id_audience": (stack.mint(aud=["demo-cc"]),
                                       "The access token was not issued for this resource"),
        "wrong_issuer": (stack.mint(iss="https://evil.invalid"),
                         "The access token issuer is not trusted"),
        "refresh_token": (stack.mint(tokenType="refresh-token"),
                          "The token is not an access token"),
        "casdoor_refresh_token": (stack.mint(tokenType="access-token", TokenType="refresh-token"),
                                  "The token is not an access token"),
        "bad_signature": (other_key.sign(_unb64(payload)), "The access token signature is invalid"),
        "unknown_kid": (stack.mint(header={"kid": "no-such-key"}),
                        "The access token signing key is unknown"),
        # Signed by the test issuer's key but claiming the real AS: the kid must belong to
        # the key set of the issuer the token names.
        "kid_of_another_issuer": (stack.mint(iss=stack.issuer),
                                  "The access token signing key is unknown"),
        # `alg: none` carries an empty signature: refused before any algorithm lookup.
        "alg_none": (f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
                     "The access token is malformed"),
        "alg_none_signed": (_hs256_with_public_key(stack, payload, alg="none"),
                            "The access token algorithm is not allowed"),
        # HS256 keyed with the issuer's public key (the classic RS/HS confusion).
        "hs256_public_key": (_hs256_with_public_key(stack, payload),
                             "The access token algorithm is not allowed"),
        "truncated_signature": (good[:-10], "The access token signature is invalid"),
    }


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _hs256_with_public_key(stack, payload: str, alg: str = "HS256") -> str:
    from cryptography.hazmat.primitives import serialization

    pem = stack.test_key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{_b64({'alg': alg, 'typ': 'JWT', 'kid': stack_mod.TEST_KID})}.{payload}"
    sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


def _unb64(part: str):
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


BAD_TOKEN_CASES = ["garbage", "expired", "not_yet_valid", "no_exp", "wrong_audience",
                   "casdoor_client_id_audience", "wrong_issuer", "refresh_token",
                   "casdoor_refresh_token", "bad_signature", "unknown_kid", "kid_of_another_issuer",
                   "alg_none",
                   "alg_none_signed", "hs256_public_key",
                   "truncated_signature"]


@pytest.fixture(scope="module")
def bad_tokens(stack):
    return _bad_tokens(stack)


@pytest.mark.parametrize("case", BAD_TOKEN_CASES)
def test_bad_token_gets_401_invalid_token(stack, envoy, seen, bad_tokens, case):
    token, description = bad_tokens[case]
    r = envoy.mcp(rpc("tools/list"), token=token)
    assert_json_denial(r, 401, invalid_token(stack, description),
                       {"error": "invalid_token", "message": description})
    assert_not_forwarded(stack)


# --- 400 invalid_request --------------------------------------------------------------------

def test_bearer_without_token_gets_400(stack, envoy, seen):
    r = envoy.mcp(rpc("tools/list"), headers={"authorization": "Bearer"})
    desc = "Malformed Authorization header"
    assert_json_denial(r, 400, challenge(stack, 'error="invalid_request"',
                                         f'error_description="{desc}"'),
                       {"error": "invalid_request", "message": desc})
    assert_not_forwarded(stack)


def test_two_authorization_headers_get_400(stack, envoy, seen):
    t = stack.mint()
    r = envoy.request("POST", "/mcp", [*MCP_HEADERS.items(), ("authorization", f"Bearer {t}"),
                                       ("authorization", f"Bearer {t}")], rpc("tools/list"))
    desc = "Malformed Authorization header"
    assert_json_denial(r, 400, challenge(stack, 'error="invalid_request"',
                                         f'error_description="{desc}"'),
                       {"error": "invalid_request", "message": desc})
    assert_not_forwarded(stack)


@pytest.mark.parametrize("with_header", [False, True])
def test_token_in_query_string_gets_400(stack, envoy, seen, with_header):
    t = stack.mint()
    r = envoy.mcp(rpc("tools/list"), path=f"/mcp?access_token={t}",
                  token=t if with_header else None)
    desc = "Access tokens are accepted only in the Authorization header"
    assert_json_denial(r, 400, challenge(stack, 'error="invalid_request"',
                                         f'error_description="{desc}"'),
                       {"error": "invalid_request", "message": desc})
    assert_not_forwarded(stack)


# --- 403 insufficient_scope -----------------------------------------------------------------

@pytest.mark.parametrize("granted,challenged", [
    (None, "files:list"),                     # no scope claim at all: no scopes
    ("", "files:list"),
    ("openid profile", "files:list"),         # scopes unknown to this resource are not echoed
    ("files:read", "files:read files:list"),  # union: granted (known) first, then required
    ("files", "files:list"),                  # no prefix matching
])
def test_valid_token_lacking_scope_gets_403(stack, envoy, seen, granted, challenged):
    r = envoy.mcp(rpc("tools/list"), token=stack.mint(scope=granted))
    assert_json_denial(r, 403, insufficient(stack, challenged),
                       {"error": "insufficient_scope",
                        "message": "The access token lacks the scope this request requires",
                        "scope": challenged})
    assert_not_forwarded(stack)


# --- allowed: identity headers --------------------------------------------------------------

def _forwarded(stack) -> dict:
    seen = stack.seen()
    assert len(seen) == 1, seen
    assert seen[0]["path"] == "/mcp", seen
    return seen[0]["headers"]


def test_valid_token_reaches_upstream_with_identity_headers(stack, envoy, seen):
    token = stack.mint(sub="alice", client_id="test-client", scope="files:list files:read")
    r = envoy.mcp(rpc("tools/list"), token=token, headers={
        "x-mcp-authz-subject": "mallory", "x-mcp-authz-scopes": "files:admin",
        "x-mcp-authz-issuer": "https://evil.invalid", "x-mcp-authz-client-id": "evil-client"})
    assert r.status == 200, r
    names = [t["name"] for t in r.json()["result"]["tools"]]
    assert names == ["list_files", "read_file", "write_file"], r
    h = _forwarded(stack)
    assert h["x-mcp-authz-subject"] == "alice"
    # Scopes are not sent by default, and the client's copy never reaches the server; the
    # issuer is, since this resource trusts two issuers.
    assert "x-mcp-authz-scopes" not in h, h
    assert h["x-mcp-authz-issuer"] == stack_mod.TEST_ISSUER
    assert h["x-mcp-authz-client-id"] == "test-client"
    assert h["authorization"] == f"Bearer {token}"  # identity.forward_authorization: true


def test_spoofed_client_id_is_removed_when_token_has_none(stack, envoy, seen):
    token = stack.mint(sub="bob", client_id=None)
    r = envoy.mcp(rpc("tools/list"), token=token,
                  headers={"x-mcp-authz-client-id": "evil-client",
                           "x-mcp-authz-subject": "mallory"})
    assert r.status == 200, r
    h = _forwarded(stack)
    assert "x-mcp-authz-client-id" not in h, h
    assert h["x-mcp-authz-subject"] == "bob"


def test_azp_is_the_client_id_when_client_id_is_absent(stack, envoy, seen):
    token = stack.mint(client_id=None, azp="casdoor-app", scope="files:list")
    r = envoy.mcp(rpc("tools/list"), token=token)
    assert r.status == 200, r
    assert _forwarded(stack)["x-mcp-authz-client-id"] == "casdoor-app"


@pytest.mark.parametrize("variant,status", [("scheme_upper", 200), ("trailing_slash", 401),
                                            ("path_upper", 401)])
def test_audience_comparison(stack, envoy, seen, variant, status):
    # RFC 3986 §6.2.2.1: scheme and host are case-insensitive, the path is not.
    aud = {"scheme_upper": stack.mcp_uri.replace("http://", "HTTP://"),
           "trailing_slash": stack.mcp_uri + "/",
           "path_upper": stack.mcp_uri[:-4] + "/MCP"}[variant]
    r = envoy.mcp(rpc("tools/list"), token=stack.mint(aud=aud))
    assert r.status == status, r
    if status == 401:
        assert r.header("www-authenticate") == invalid_token(
            stack, "The access token was not issued for this resource"), r


def test_token_with_leeway_and_array_audience_is_accepted(stack, envoy, seen):
    now = int(time.time())
    token = stack.mint(aud=["other", stack.mcp_uri], exp=now - 1, nbf=now + 2)  # within 5 s
    r = envoy.mcp(rpc("tools/list"), token=token)
    assert r.status == 200, r


# --- the real authorization server ----------------------------------------------------------

def test_client_credentials_token_from_the_as_works(stack, envoy, seen, as_token):
    token = as_token("files:list")
    r = envoy.mcp(rpc("tools/list"), token=token)
    assert r.status == 200, r
    assert r.header("content-type") == "application/json", r
    assert [t["name"] for t in r.json()["result"]["tools"]] == [
        "list_files", "read_file", "write_file"]
    h = _forwarded(stack)
    assert h["x-mcp-authz-subject"] == "demo-cc"
    assert h["x-mcp-authz-client-id"] == "demo-cc"
    assert h["x-mcp-authz-issuer"] == stack.issuer
    assert "x-mcp-authz-scopes" not in h, h


# --- per-tool authorization -----------------------------------------------------------------

def test_list_files_with_files_list(envoy, seen, as_token):
    r = envoy.mcp(tool_call("list_files"), token=as_token("files:list"))
    assert r.status == 200, r
    assert "hello.txt" in r.json()["result"]["content"][0]["text"].split("\n"), r


def test_read_file_needs_files_read(stack, envoy, seen, as_token):
    r = envoy.mcp(tool_call("read_file", {"path": "hello.txt"}), token=as_token("files:list"))
    assert_json_denial(r, 403, insufficient(stack, "files:list files:read"),
                       {"error": "insufficient_scope",
                        "message": "The access token lacks the scope this request requires",
                        "scope": "files:list files:read"})
    assert_not_forwarded(stack)
    r = envoy.mcp(tool_call("read_file", {"path": "hello.txt"}),
                  token=as_token("files:list files:read"))
    assert r.status == 200, r
    assert r.json()["result"]["content"][0]["text"] == "hello from mcp-authz", r


def test_write_file_needs_files_write(stack, envoy, seen, as_token):
    r = envoy.mcp(tool_call("write_file", {"path": "x.txt", "content": "x"}),
                  token=as_token("files:list files:read"))
    assert_json_denial(r, 403, insufficient(stack, "files:list files:read files:write"),
                       {"error": "insufficient_scope",
                        "message": "The access token lacks the scope this request requires",
                        "scope": "files:list files:read files:write"})
    assert_not_forwarded(stack)
    assert not (stack.files_root / "x.txt").exists()


def test_files_admin_implies_every_file_scope(envoy, seen, stack):
    r = envoy.mcp(tool_call("write_file", {"path": "admin.txt", "content": "by admin"}),
                  token=stack.mint(scope="files:admin"))
    assert r.status == 200, r
    assert (stack.files_root / "admin.txt").read_text() == "by admin"


def test_duplicate_name_keys_get_400_and_never_reach_upstream(stack, envoy, seen, as_token):
    # The MCP server's JSON.parse keeps the last "name"; the gateway must not pick the first.
    body = ('{"jsonrpc":"2.0","id":1,"method":"tools/call",'
            '"params":{"name":"list_files","name":"write_file",'
            '"arguments":{"path":"dup.txt","content":"pwned"}}}')
    r = envoy.mcp(body, token=as_token("files:list"))
    assert_json_denial(r, 400, None, {"error": "bad_request",
                                      "message": "The request body repeats a member name"})
    assert_not_forwarded(stack)
    assert not (stack.files_root / "dup.txt").exists()


def test_batch_is_decided_for_every_element(stack, envoy, seen):
    body = json.dumps([tool_call("list_files", id=1),
                       tool_call("write_file", {"path": "batch.txt", "content": "x"}, id=2)])
    r = envoy.mcp(body, token=stack.mint(scope="files:list"))
    assert_json_denial(r, 403, insufficient(stack, "files:list files:write"),
                       {"error": "insufficient_scope",
                        "message": "The access token lacks the scope this request requires",
                        "scope": "files:list files:write"})
    assert_not_forwarded(stack)


@pytest.mark.parametrize("headers", [{"mcp-method": "tools/list"},
                                     {"mcp-method": "tools/call", "mcp-name": "list_files"}])
def test_mcp_headers_must_match_the_body(stack, envoy, seen, headers):
    # 2026-07-28 Mcp-Method / Mcp-Name: a proxy deciding on the header while the server acts on
    # the body would be a bypass, so a mismatch is a 400 whatever the scopes.
    r = envoy.mcp(tool_call("write_file", {"path": "hdr.txt", "content": "x"}),
                  token=stack.mint(scope="files:list files:write"), headers=headers)
    assert_json_denial(r, 400, None, {
        "error": "bad_request",
        "message": "The Mcp-Method or Mcp-Name header does not match the body"})
    assert_not_forwarded(stack)


def test_unparseable_body_gets_400(stack, envoy, seen):
    r = envoy.mcp('{"jsonrpc":', token=stack.mint())
    assert_json_denial(r, 400, None, {"error": "bad_request",
                                      "message": "The request body is not a JSON-RPC message"})
    assert_not_forwarded(stack)


def test_body_that_is_not_utf8_is_refused(stack, envoy, seen):
    # Envoy 1.40 sends a per-route body in the Check's UTF-8 `body` field even though the
    # render asks for raw bytes; a byte sequence that is not UTF-8 makes that CheckRequest
    # undecodable, which mcp-authz answers with a denial, never a gRPC error (an Envoy failing
    # open would allow it). JSON must be UTF-8 (RFC 8259 §8.1): the server would not read it.
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_files","arguments":{"p":"\xff\xfe"}}}'
    r = envoy.mcp(body, token=stack.mint())
    assert r.status == 400, r
    assert_not_forwarded(stack)


def test_body_over_the_envoy_buffer_gets_413(stack, envoy, seen):
    # Envoy buffers 65536 bytes for ext_authz (allow_partial_message): a tools/call beyond that
    # cannot be decided, so it is refused rather than judged on a truncated prefix.
    r = envoy.mcp(tool_call("list_files", {"pad": "x" * 70000}), token=stack.mint())
    assert_json_denial(r, 413, None, {"error": "payload_too_large",
                                      "message": "The request body is too large to authorize"})
    assert_not_forwarded(stack)


def test_unlisted_tool_is_denied_whatever_the_scopes(stack, envoy, seen):
    r = envoy.mcp(tool_call("delete_everything"), token=stack.mint(scope="files:admin"))
    assert_json_denial(r, 403, None, {"error": "forbidden",
                                      "message": "This MCP tool is not allowed"})
    assert_not_forwarded(stack)


# --- path tricks ----------------------------------------------------------------------------
# Envoy's HCM normalises (normalize_path, merge_slashes) before routing and before ext_authz,
# and rejects escaped slashes. So every trick either collapses to /mcp, where mcp-authz asks
# for a token (401 with the baseline challenge), or is refused outright. None reaches the MCP
# server without a token.
NO_TOKEN_401 = 401   # normalised to /mcp: mcp-authz's no-credentials challenge
ENVOY_400 = 400      # Envoy itself (path_with_escaped_slashes_action: REJECT_REQUEST), empty body
BAD_PATH_400 = 400   # mcp-authz: a case/trailing-slash folding router would pick another route
NO_ROUTE_403 = 403   # reaches mcp-authz on a path no policy route matches: default deny

PATH_TRICKS = [
    ("//mcp", NO_TOKEN_401),                                           # merge_slashes -> /mcp
    ("/./mcp", NO_TOKEN_401),                                          # RFC 3986 dot removal
    ("/x/../mcp", NO_TOKEN_401),
    ("/.well-known/../mcp", NO_TOKEN_401),                             # not the public PRM route
    ("/.well-known/oauth-protected-resource/../../mcp", NO_TOKEN_401),
    ("/.well-known/oauth-protected-resource/mcp/../../../mcp", NO_TOKEN_401),
    ("/.well-known%2F..%2Fmcp", ENVOY_400),                            # %2F: rejected by Envoy
    ("/.well-known/oauth-protected-resource%2F..%2F..%2Fmcp", ENVOY_400),
    ("/mcp%2F", ENVOY_400),
    ("/x/%2e%2e/mcp", NO_TOKEN_401),                                   # %2e%2e decoded, then removed
    ("/.well-known/oauth-protected-resource/%2e%2e/%2e%2e/mcp", NO_TOKEN_401),
    ("/%6dcp", NO_TOKEN_401),                                          # unreserved %6d -> m
    ("/MCP", BAD_PATH_400),                                            # a folding router's /mcp
    ("/mcp/", BAD_PATH_400),                                           # ... and so is /mcp/
    ("/mcpx", NO_ROUTE_403),
    ("/__seen", NO_ROUTE_403),                                         # upstream's other paths
    ("/mcp?x=/.well-known/oauth-protected-resource", NO_TOKEN_401),    # query is not the path
    ("/mcp#frag", ENVOY_400),                                          # fragment: invalid request
]


@pytest.mark.parametrize("path,status", PATH_TRICKS, ids=[p for p, _ in PATH_TRICKS])
def test_path_tricks_never_reach_upstream_without_token(stack, envoy, seen, path, status):
    r = envoy.mcp(rpc("tools/list"), path=path)
    assert r.status == status, r
    if status == NO_TOKEN_401:
        assert r.header("www-authenticate") == challenge(stack, 'scope="files:list"'), r
        assert r.body == SEED_401_BODY, r
    elif status == NO_ROUTE_403:
        assert r.header("www-authenticate") is None, r
        assert r.json() == {"error": "forbidden", "message": "No policy allows this request"}, r
    elif path in ("/MCP", "/mcp/"):
        assert r.header("www-authenticate") is None, r
        assert r.json() == {"error": "bad_request", "message": "The request path is not acceptable"}, r
    else:
        assert r.body == b"", r
    assert_not_forwarded(stack)


@pytest.mark.parametrize("path", ["//mcp", "/x/../mcp", "/.well-known/../mcp", "/x/%2e%2e/mcp"])
def test_upstream_sees_the_normalised_path_mcp_authz_decided_on(stack, envoy, seen, path):
    r = envoy.mcp(rpc("tools/list"), path=path, token=stack.mint())
    assert r.status == 200, r
    assert stack.seen()[0]["path"] == "/mcp"


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource//mcp",
                                  "/.well-known/oauth-protected-resource/x/../mcp",
                                  "/.well-known/oauth-protected-resource/mcp?x=1"])
def test_prm_variants_only_ever_serve_the_prm(stack, envoy, seen, path):
    r = envoy.request("GET", path)
    assert r.status == 200, r
    assert r.body == stack.render_prm(), r
    assert_not_forwarded(stack)


# --- fail closed ----------------------------------------------------------------------------

def test_fail_closed_when_mcp_authz_is_down_and_recovers(stack, envoy, seen):
    token = stack.mint()
    assert envoy.mcp(rpc("tools/list"), token=token).status == 200
    stack.clear_seen()
    stack.stop_authz()  # SIGKILL: a crash, no graceful drain
    try:
        for _ in range(3):
            r = envoy.mcp(rpc("tools/list"), token=token)
            # ext_authz status_on_error: ServiceUnavailable (failure_mode_allow: false);
            # Envoy's own reply, empty body.
            assert r.status == 503, r
            assert r.header("www-authenticate") is None, r
            assert r.body == b"", r
        assert_not_forwarded(stack)
        r = envoy.request("GET", "/.well-known/oauth-protected-resource/mcp")
        assert r.status == 200, r  # the PRM never depended on mcp-authz
    finally:
        stack.start_authz()  # same ports; waits for /readyz
    r = envoy.mcp(rpc("tools/list"), token=token)
    assert r.status == 200, r
    assert envoy.mcp(rpc("tools/list")).status == 401


# --- the official SDK clients, given only the URL ------------------------------------------

def _client_argv(stack, lang: str, flow: str, deny_write: bool) -> list[str]:
    if lang == "ts":
        argv = [stack.node, str(E2E / "client.mjs")]
    else:
        argv = [sys.executable, str(E2E / "client.py")]
    argv += ["--url", stack.mcp_uri, "--flow", flow, "--timeout", "90"]
    if flow == "client_credentials":
        argv += ["--scope", "files:list", "--client-id", "demo-cc",
                 "--client-secret", "demo-cc-secret", "--expected-issuer", stack.issuer]
    if deny_write:
        argv.append("--deny-write")
    return argv


@pytest.mark.parametrize("deny_write", [False, True], ids=["write", "deny-write"])
@pytest.mark.parametrize("flow", ["client_credentials", "authorization_code"])
@pytest.mark.parametrize("lang", ["ts", "py"])
def test_sdk_client_end_to_end(stack, lang, flow, deny_write):
    argv = _client_argv(stack, lang, flow, deny_write)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=E2E)
    report = (f"$ {' '.join(argv)}\nexit {p.returncode}\n--- stdout\n{p.stdout}\n"
              f"--- stderr\n{p.stderr[-4000:]}\n--- stack logs\n{stack.logs()}")
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert p.returncode == 0, report
    assert lines and json.loads(lines[-1]) == {"done": True, "ok": True}, report
    steps = [json.loads(ln) for ln in lines[:-1]]
    assert all(s.get("ok", True) for s in steps), report
    # "Every step that ran was ok" is not enough: the steps this flow must go through ran.
    ran = [s.get("step") for s in steps]
    want = ["challenge", "prm", "as-metadata", "discovery", "initial-token", "connect",
            "tools/list", "tools/call list_files", "tools/call read_file", "step-up read"]
    if flow == "authorization_code":
        want += ["register", "authorize"]
    if deny_write:
        want += ["tools/call write_file (denied)", "tools/call list_files (after denied write)"]
    else:
        want += ["tools/call write_file", "step-up write", "tools/call list_files (after write)",
                 "tools/call read_file (written file)"]
    want.append("tokens")
    missing = [w for w in want if w not in ran]
    assert not missing, f"steps that did not run: {missing}\n{report}"
    assert "error" not in ran and "timeout" not in ran, report
