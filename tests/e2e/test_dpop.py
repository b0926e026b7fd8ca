"""Issue 14, DPoP-bound tokens (RFC 9449), through real Envoy.

The real authorization server (oidc-provider, `as.mjs --dpop`) issues DPoP-bound JWT access
tokens (`token_type: DPoP`, `cnf.jkt`) to a client that proves a key at its token endpoint;
the proofs for the MCP requests are built by the independent npm `dpop` package
(`dpop-client.mjs`). The resource runs `dpop: {mode: allowed}`: a valid proof reaches the MCP
server; replay, wrong `htu`/`htm`, stale `iat`, another key, a missing `ath` and the token
downgraded to `Bearer` are refused with the `DPoP` challenge Envoy passes on unchanged.
"""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from conftest import Raw, Response, rpc
import stack as stack_mod

ALGS = 'DPoP algs="ES256 EdDSA RS256 PS256"'


class DpopStack(stack_mod.Stack):
    """The local stack with a DPoP-issuing AS and `dpop: {mode: allowed}` on the resource."""

    def _spawn(self, name, argv, cwd=None):
        if name == "as":
            argv = [*argv, "--dpop"]
        return super()._spawn(name, argv, cwd)

    def config_yaml(self) -> str:
        yaml = super().config_yaml()
        realm = f"    realm: {json.dumps(stack_mod.REALM)}\n"
        assert realm in yaml, yaml
        return yaml.replace(realm, realm + "    dpop: {mode: allowed}\n", 1)


def _client(*args: str) -> str:
    r = subprocess.run([stack_mod.find_node(), str(stack_mod.E2E_DIR / "dpop-client.mjs"), *args],
                       capture_output=True, text=True, timeout=60, cwd=stack_mod.E2E_DIR)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


class Holder:
    """A DPoP-bound token and the key it is bound to."""

    def __init__(self, stack: DpopStack, scope: str = "files:list"):
        self.stack = stack
        out = json.loads(_client("token", "--token-endpoint", stack.as_metadata()["token_endpoint"],
                                 "--resource", stack.mcp_uri, "--scope", scope))
        self.token, self.key, self.jkt = out["access_token"], out["key"], out["jkt"]
        assert out["token_type"] == "DPoP", out

    def proof(self, htm: str = "POST", htu: str | None = None, token: str | None = "",
              iat_offset: int = 0, key: dict | None = None, nonce: str | None = None) -> str:
        args = ["proof", "--key", json.dumps(key or self.key), "--htm", htm,
                "--htu", htu or self.stack.mcp_uri, f"--iat-offset={iat_offset}"]
        if token is not None:
            args += ["--token", token or self.token]
        if nonce is not None:
            args += ["--nonce", nonce]
        return _client(*args)

    def send(self, envoy: Raw, proof: str, scheme: str = "DPoP") -> Response:
        return envoy.mcp(rpc("tools/list"), headers={
            "authorization": f"{scheme} {self.token}", "dpop": proof})


@pytest.fixture(scope="module")
def dpop_stack():
    s = DpopStack()
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture
def envoy(dpop_stack) -> Raw:
    dpop_stack.clear_seen()
    return Raw(dpop_stack.ports.envoy)


@pytest.fixture(scope="module")
def holder(dpop_stack) -> Holder:
    return Holder(dpop_stack)


def _refused(r, error: str, description: str | None = None) -> str:
    assert r.status == 401, r
    www = r.header("www-authenticate") or ""
    bearer, sep, dpop = www.partition(", DPoP ")
    assert sep and bearer.startswith("Bearer "), r
    assert "error=" not in bearer, r
    assert f'error="{error}"' in dpop, r
    if description:
        assert f'error_description="{description}"' in dpop, r
    assert www.count("resource_metadata=") == 2, r
    assert ALGS in www, r
    return www


def test_the_as_binds_the_token_to_the_key(holder):
    payload = holder.token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    # The AS's thumbprint and the one computed from the key independently agree.
    assert claims["cnf"] == {"jkt": holder.jkt}, claims


def test_valid_proof_reaches_the_mcp_server(dpop_stack, holder, envoy):
    r = holder.send(envoy, holder.proof())
    assert r.status == 200, r
    seen = dpop_stack.seen()
    assert len(seen) == 1, seen


def test_replayed_proof_is_refused(dpop_stack, holder, envoy):
    proof = holder.proof()
    assert holder.send(envoy, proof).status == 200
    _refused(holder.send(envoy, proof), "invalid_dpop_proof", "The DPoP proof was already used")
    assert len(dpop_stack.seen()) == 1


@pytest.mark.parametrize("htm,path", [("GET", "/mcp"), ("POST", "/mcp/other")])
def test_wrong_htm_or_htu_is_refused(dpop_stack, holder, envoy, htm, path):
    r = holder.send(envoy, holder.proof(htm=htm, htu=dpop_stack.base_url + path))
    _refused(r, "invalid_dpop_proof")
    assert dpop_stack.seen() == []


def test_proof_for_another_host_is_refused(holder, envoy):
    _refused(holder.send(envoy, holder.proof(htu="http://evil.example/mcp")),
             "invalid_dpop_proof", "The DPoP proof htu does not match the request")


@pytest.mark.parametrize("offset", [-600, 600])
def test_stale_or_future_iat_is_refused(holder, envoy, offset):
    _refused(holder.send(envoy, holder.proof(iat_offset=offset)), "invalid_dpop_proof",
             "The DPoP proof is too old or too new")


def test_proof_by_another_key_is_refused(holder, envoy):
    other = json.loads(_client("key"))["key"]
    _refused(holder.send(envoy, holder.proof(key=other)), "invalid_token",
             "The access token is bound to another key than the DPoP proof")


def test_proof_without_ath_is_refused(holder, envoy):
    _refused(holder.send(envoy, holder.proof(token=None)), "invalid_dpop_proof",
             "The DPoP proof ath does not match the access token")


def test_bound_token_as_bearer_is_refused(dpop_stack, holder, envoy):
    r = holder.send(envoy, holder.proof(), scheme="Bearer")
    assert r.status == 401, r
    www = r.header("www-authenticate") or ""
    assert ALGS in www and 'error="invalid_token"' in www, r
    r = envoy.mcp(rpc("tools/list"), token=holder.token)
    assert r.status == 401, r
    assert dpop_stack.seen() == []


def test_plain_bearer_tokens_still_work(dpop_stack, envoy):
    token = dpop_stack.client_credentials()["access_token"]
    r = envoy.mcp(rpc("tools/list"), token=token)
    assert r.status == 200, r
    # No credentials: both challenges, no error.
    r = envoy.mcp(rpc("tools/list"))
    assert r.status == 401, r
    www = r.header("www-authenticate") or ""
    assert www.startswith("Bearer ") and ALGS in www and "error=" not in www, r


class NonceStack(DpopStack):
    """`dpop: {mode: required, nonce: required}`: server nonces (RFC 9449 §9)."""

    def config_yaml(self) -> str:
        key = self.workdir / "dpop-nonce.key"
        key.write_text(base64.b64encode(bytes(range(48))).decode() + "\n")
        yaml = stack_mod.Stack.config_yaml(self)
        realm = f"    realm: {json.dumps(stack_mod.REALM)}\n"
        return yaml.replace(realm, realm + (
            "    dpop: {mode: required, nonce: required, "
            f"nonce_key_file: {json.dumps(str(key))}, nonce_seconds: 60}}\n"), 1)


@pytest.fixture(scope="module")
def nonce_stack():
    s = NonceStack()
    try:
        s.start()
        yield s
    finally:
        s.stop()


def test_required_nonce_round_trip_through_envoy(nonce_stack):
    envoy = Raw(nonce_stack.ports.envoy)
    holder = Holder(nonce_stack)
    r = holder.send(envoy, holder.proof())
    assert r.status == 401, r
    www = r.header("www-authenticate") or ""
    assert www.startswith('DPoP algs="ES256 EdDSA RS256 PS256"'), r
    assert 'error="use_dpop_nonce"' in www and "Bearer" not in www, r
    nonce = r.header("dpop-nonce")
    assert nonce, r
    assert "DPoP-Nonce" in (r.header("access-control-expose-headers") or ""), r
    # The client retries with the nonce, as RFC 9449 §9 has it.
    r = holder.send(envoy, holder.proof(nonce=nonce))
    assert r.status == 200, r
    assert holder.send(envoy, holder.proof(nonce=nonce + "x")).status == 401
    # Required mode: a bearer token is refused with the DPoP challenge only.
    token = nonce_stack.client_credentials()["access_token"]
    r = envoy.mcp(rpc("tools/list"), token=token)
    assert r.status == 401, r
    www = r.header("www-authenticate") or ""
    assert www.startswith("DPoP algs=") and 'error="invalid_token"' in www, r
