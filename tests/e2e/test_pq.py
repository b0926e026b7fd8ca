"""Issue 13 through real Envoy: Hanzo IAM's post-quantum access tokens (ML-DSA-65, FIPS 204,
pure with an empty context), signed by an implementation independent of mcp-authz
(@noble/post-quantum, via mldsa.mjs beside this file).

The offline test issuer publishes, beside its RSA key, an ML-DSA-65 key in Hanzo IAM's spelling
(`kty: "MLDSA"`, `alg: "MLDSA65"`, `x`) and another in the JOSE draft's
(draft-ietf-cose-dilithium: `kty: "AKP"`, `alg: "ML-DSA-65"`, `pub`), and allows
`[RS256, MLDSA65, ML-DSA-65]`. Tokens in either spelling reach the MCP server; a wrong key, a
truncated signature and every alg/key-type confusion get 401 `invalid_token` from mcp-authz,
and none reaches the MCP server.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time

import pytest

from conftest import REPO, Raw, rpc
import stack as stack_mod

E2E = REPO / "tests" / "e2e"

HANZO_KID = "cert-pq-1"  # Hanzo IAM's kid is the certificate name
AKP_KID = "akp-1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class MlDsaKey:
    """An ML-DSA-65 key pair that lives in mldsa.mjs (derived from a random seed there)."""

    def __init__(self, node: str, kid: str, jose: bool):
        self.node, self.kid, self.jose = node, kid, jose
        self.seed = os.urandom(32).hex()
        self.x = self._run()["x"]

    @property
    def alg(self) -> str:
        return "ML-DSA-65" if self.jose else "MLDSA65"

    def jwk(self) -> dict:
        if self.jose:
            return {"kty": "AKP", "alg": "ML-DSA-65", "use": "sig", "kid": self.kid, "pub": self.x}
        return {"kty": "MLDSA", "alg": "MLDSA65", "use": "sig", "kid": self.kid, "x": self.x}

    def sign(self, signing_input: str) -> str:
        return self._run(signing_input)["sig"]

    def _run(self, *args: str) -> dict:
        r = subprocess.run([self.node, str(E2E / "mldsa.mjs"), self.seed, *args],
                           capture_output=True, cwd=E2E, timeout=60)
        assert r.returncode == 0, f"mldsa.mjs failed (npm ci in tests/e2e?): {r.stderr!r}"
        return json.loads(r.stdout)


class PqStack(stack_mod.Stack):
    """The local stack, its offline test issuer also publishing two ML-DSA-65 keys."""

    def config_yaml(self) -> str:
        self.pq = MlDsaKey(self.node, HANZO_KID, jose=False)
        self.pq_other = MlDsaKey(self.node, HANZO_KID, jose=False)  # same kid, never published
        self.akp = MlDsaKey(self.node, AKP_KID, jose=True)
        keys = [self.test_key.jwk(), self.pq.jwk(), self.akp.jwk()]
        self.jwks_path.write_text(json.dumps({"keys": keys}, indent=2) + "\n")
        yaml = super().config_yaml()
        line = f"        jwks_file: {json.dumps(str(self.jwks_path))}\n        algorithms: [RS256]\n"
        assert line in yaml, yaml
        return yaml.replace(line, line.replace("[RS256]", "[RS256, MLDSA65, ML-DSA-65]"))

    def claims(self, **extra) -> dict:
        now = int(time.time())
        return {"iss": stack_mod.TEST_ISSUER, "aud": self.mcp_uri, "sub": "pq-user",
                "client_id": "pq-client", "scope": "files:list", "iat": now, "exp": now + 300,
                "tokenType": "access-token", **extra}

    def mint_pq(self, key: MlDsaKey, header: dict | None = None, **claims) -> str:
        """A JWS compact token signed with `key` (default header: its alg and kid)."""
        h = {"alg": key.alg, "kid": key.kid, "typ": "JWT", **(header or {})}
        signing_input = f"{_b64(json.dumps(h).encode())}.{_b64(json.dumps(self.claims(**claims)).encode())}"
        return f"{signing_input}.{key.sign(signing_input)}"


@pytest.fixture(scope="module")
def pq_stack():
    s = PqStack()
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture
def pq_envoy(pq_stack) -> Raw:
    pq_stack.clear_seen()
    return Raw(pq_stack.ports.envoy)


@pytest.mark.parametrize("spelling", ["hanzo", "jose"])
def test_ml_dsa_65_token_reaches_the_mcp_server(pq_stack, pq_envoy, spelling):
    key = pq_stack.pq if spelling == "hanzo" else pq_stack.akp
    token = pq_stack.mint_pq(key)
    assert 4400 < len(token) < 8192, len(token)  # ~4.5 KB: within limits.max_token_bytes
    r = pq_envoy.mcp(rpc("tools/list"), token=token)
    assert r.status == 200, r
    seen = pq_stack.seen()
    assert len(seen) == 1, seen
    assert "pq-user" in json.dumps(seen), seen  # the identity mcp-authz sent upstream


def _bad(s: PqStack) -> dict[str, tuple[str, str]]:
    good = s.mint_pq(s.pq)
    head, sig = good.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[2000] ^= 0x01
    rsa = s.test_key
    return {
        "another_key_same_kid": (s.mint_pq(s.pq_other), "The access token signature is invalid"),
        "truncated_signature": (f"{head}.{sig[:-12]}", "The access token signature is invalid"),
        "flipped_bit": (f"{head}.{_b64(bytes(raw))}", "The access token signature is invalid"),
        "mldsa65_against_rsa_kid": (s.mint_pq(s.pq, header={"kid": rsa.kid}),
                                    "The access token signing key is unknown"),
        "rs256_against_mldsa_kid": (s.mint(iss=stack_mod.TEST_ISSUER, header={"kid": HANZO_KID}),
                                    "The access token signing key is unknown"),
        "hanzo_alg_against_akp_key": (s.mint_pq(s.akp, header={"alg": "MLDSA65"}),
                                      "The access token signing key is unknown"),
        "jose_alg_against_hanzo_key": (s.mint_pq(s.pq, header={"alg": "ML-DSA-65"}),
                                       "The access token signing key is unknown"),
        "ml_dsa_87_name": (s.mint_pq(s.pq, header={"alg": "ML-DSA-87"}),
                           "The access token algorithm is not allowed"),
    }


BAD = ["another_key_same_kid", "truncated_signature", "flipped_bit", "mldsa65_against_rsa_kid",
       "rs256_against_mldsa_kid", "hanzo_alg_against_akp_key", "jose_alg_against_hanzo_key",
       "ml_dsa_87_name"]


@pytest.fixture(scope="module")
def bad_pq_tokens(pq_stack):
    return _bad(pq_stack)


@pytest.mark.parametrize("case", BAD)
def test_bad_ml_dsa_token_gets_401_invalid_token(pq_stack, pq_envoy, bad_pq_tokens, case):
    token, description = bad_pq_tokens[case]
    r = pq_envoy.mcp(rpc("tools/list"), token=token)
    assert r.status == 401, r
    assert r.header("www-authenticate") == (
        f'Bearer realm="{stack_mod.REALM}", error="invalid_token", '
        f'error_description="{description}", resource_metadata="{pq_stack.prm_url}"'), r
    assert r.json() == {"error": "invalid_token", "message": description}, r
    assert pq_stack.seen() == [], "a refused token reached the MCP server"
