"""Issue 13 part 4 through real Envoy: the mesh binding of a resource to its workload.

Envoy plays two Istio sidecars: one listener per MCP workload, each terminating mutual TLS
with that workload's certificate (a SPIFFE URI SAN, spiffe://cluster.local/ns/mcp/sa/<sa>,
issued by a CA generated here with `cryptography`), and calling mcp-authz the way Istio's
CUSTOM action does: gRPC ext_authz with no per-route context_extensions, so mcp-authz picks
the resource from `:authority`. Envoy itself fills the CheckRequest's destination principal
from its own certificate (and the source principal from the client's), exactly as a sidecar.
mcp-authz protects two resources, `files` and `wiki`, each bound to its workload's service
account (`istio.workloads.<id>.service_account`).

A caller reaching the wiki workload with the files host (and a valid files token) is refused
(403 destination_mismatch) and never reaches the workload; the same request to the files
workload is allowed; plaintext (a third listener without TLS) fails closed (403
destination_unauthenticated).
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import stack as stack_mod

TRUST_DOMAIN = "cluster.local"
FILES_URI = "https://files.example.com/mcp"
WIKI_URI = "https://wiki.example.com/mcp"
CALLER_ID = f"spiffe://{TRUST_DOMAIN}/ns/agents/sa/agent"


def spiffe(sa: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/mcp/sa/{sa}"


class Pki:
    """A CA and leaf certificates with SPIFFE URI SANs, written as PEM files into `dir`."""

    def __init__(self, dir: Path):
        self.dir = dir
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_path = self._write("ca.pem", self._pem(self.ca))

    @staticmethod
    def _pem(cert) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def _write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(data)
        return path

    def leaf(self, name: str, spiffe_id: str) -> tuple[Path, Path]:
        """A workload certificate, like Istio's: no subject, the SPIFFE id as the URI SAN
        (plus 127.0.0.1, so a client can also check the address); both client and server."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([])).issuer_name(self.ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.UniformResourceIdentifier(spiffe_id),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return self._write(f"{name}.pem", self._pem(cert)), self._write(f"{name}-key.pem", key_pem)


class MeshStack(stack_mod.Stack):
    """mcp-authz (two resources bound to two workloads) behind an Envoy with one mTLS listener
    per workload and one plaintext listener; no authorization server or MCP server: each
    listener answers an allowed request itself (`reached <workload>`)."""

    def _start(self) -> None:
        self.ports = stack_mod.Ports(envoy_admin=stack_mod.free_port(),
                                     authz_grpc=stack_mod.free_port(),
                                     authz_admin=stack_mod.free_port())
        self.listeners = {name: stack_mod.free_port() for name in ("files", "wiki", "plain")}
        pki = Pki(self.workdir)
        self.ca_path = pki.ca_path
        self.certs = {sa: pki.leaf(sa, spiffe(f"{sa}-mcp")) for sa in ("files", "wiki")}
        self.client_cert = pki.leaf("agent", CALLER_ID)

        self.test_key = stack_mod.TestIssuerKey()
        self.jwks_path.write_text(json.dumps({"keys": [self.test_key.jwk()]}) + "\n")
        self.config_path.write_text(self.config_yaml())
        self._run([str(self.mcp_authz_bin), "check-config", str(self.config_path)])
        self.start_authz()

        self.envoy_config_path = self.workdir / "envoy.json"
        self.envoy_config_path.write_text(json.dumps(self.envoy_config(), indent=1))
        self._run([str(self.envoy_bin), "--mode", "validate", "--disable-hot-restart",
                   "-c", str(self.envoy_config_path)])
        envoy = self._spawn("envoy", [str(self.envoy_bin), "-c", str(self.envoy_config_path),
                                      "--concurrency", "1", "--disable-hot-restart",
                                      "--log-level", "info"])
        admin = f"http://127.0.0.1:{self.ports.envoy_admin}/ready"
        self._wait(envoy, f"{admin} = 200", lambda: stack_mod.http_get(admin)[0] == 200)

    def config_yaml(self) -> str:
        q = json.dumps
        p = self.ports
        issuer = f"""    issuers:
      - issuer: {q(stack_mod.TEST_ISSUER)}
        jwks_file: {q(str(self.jwks_path))}
        algorithms: [RS256]
"""
        return f"""\
listen:
  grpc: 127.0.0.1:{p.authz_grpc}
  admin: 127.0.0.1:{p.authz_admin}
resources:
  - id: files
    uri: {FILES_URI}
{issuer}    routes: [{{path: /mcp, scopes: [files:list]}}]
  - id: wiki
    uri: {WIKI_URI}
{issuer}    routes: [{{path: /mcp, scopes: [wiki:read]}}]
istio:
  trust_domain: {TRUST_DOMAIN}
  workloads:
    files:
      namespace: mcp
      selector: {{app: files-mcp}}
      destination: files-mcp.mcp.svc.cluster.local:8080
      service_account: files-mcp
    wiki:
      namespace: mcp
      selector: {{app: wiki-mcp}}
      destination: wiki-mcp.mcp.svc.cluster.local:8080
      service_account: wiki-mcp
"""

    def envoy_config(self) -> dict:
        def listener(name: str, tls: tuple[Path, Path] | None) -> dict:
            chain = {"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network."
                             "http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": name,
                    "route_config": {"virtual_hosts": [{
                        "name": "all", "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "direct_response": {
                            "status": 200, "body": {"inline_string": f"reached {name}"}}}],
                    }]},
                    # As Istio's CUSTOM provider: gRPC, fail closed, no context_extensions.
                    "http_filters": [
                        {"name": "envoy.filters.http.ext_authz", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http."
                                     "ext_authz.v3.ExtAuthz",
                            "transport_api_version": "V3",
                            "failure_mode_allow": False,
                            "include_peer_certificate": True,
                            "status_on_error": {"code": 503},
                            "grpc_service": {"envoy_grpc": {"cluster_name": "mcp_authz"},
                                             "timeout": "5s"},
                        }},
                        {"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http."
                                     "router.v3.Router"}},
                    ],
                },
            }]}
            if tls:
                cert, key = tls
                chain["transport_socket"] = {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls."
                                 "v3.DownstreamTlsContext",
                        "require_client_certificate": True,
                        "common_tls_context": {
                            "tls_certificates": [{"certificate_chain": {"filename": str(cert)},
                                                  "private_key": {"filename": str(key)}}],
                            "validation_context": {"trusted_ca": {"filename": str(self.ca_path)}},
                        },
                    },
                }
            return {"name": name,
                    "address": {"socket_address": {"address": "127.0.0.1",
                                                   "port_value": self.listeners[name]}},
                    "filter_chains": [chain]}

        return {
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": self.ports.envoy_admin}}},
            "static_resources": {
                "listeners": [listener("files", self.certs["files"]),
                              listener("wiki", self.certs["wiki"]),
                              listener("plain", None)],
                "clusters": [{
                    "name": "mcp_authz", "type": "STATIC", "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                                     "HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}}}},
                    "load_assignment": {"cluster_name": "mcp_authz", "endpoints": [{
                        "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                            "address": "127.0.0.1", "port_value": self.ports.authz_grpc}}}}]}]},
                }],
            },
        }

    def token(self, aud: str, scope: str) -> str:
        now = int(time.time())
        return self.test_key.sign({"iss": stack_mod.TEST_ISSUER, "aud": aud, "sub": "agent",
                                   "client_id": "agent", "scope": scope, "iat": now,
                                   "exp": now + 300})

    def request(self, workload: str, host: str, token: str | None = None,
                method: str = "POST", path: str = "/mcp") -> tuple[int, dict, bytes]:
        """One request to a workload's listener with `host` as :authority, as the in-mesh
        caller (its client certificate) over mTLS, or plaintext for `plain`."""
        port = self.listeners[workload]
        if workload == "plain":
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        else:
            ctx = ssl.create_default_context(cafile=str(self.ca_path))
            ctx.check_hostname = False  # the workload is named by its SPIFFE id, checked below
            ctx.load_cert_chain(*map(str, self.client_cert))
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=ctx)
        headers = {"host": host, "content-type": "application/json",
                   "accept": "application/json, text/event-stream"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        try:
            conn.request(method, path, body=body if method == "POST" else None, headers=headers)
            if workload != "plain":
                # The listener really presents the workload's identity.
                peer = x509.load_der_x509_certificate(conn.sock.getpeercert(binary_form=True))
                san = peer.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
                assert uris == [spiffe(f"{workload}-mcp")], uris
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def mesh():
    s = MeshStack()
    try:
        s.start()
        yield s
    finally:
        s.stop()


def _metric(s: MeshStack, reason: str) -> float:
    status, body = stack_mod.http_get(f"http://127.0.0.1:{s.ports.authz_admin}/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("mcp_authz_checks_total{") and f'reason="{reason}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("workload,host,aud,scope", [
    ("files", "files.example.com", FILES_URI, "files:list"),
    ("wiki", "wiki.example.com", WIKI_URI, "wiki:read"),
])
def test_the_named_resources_workload_is_allowed(mesh, workload, host, aud, scope):
    status, _, body = mesh.request(workload, host, mesh.token(aud, scope))
    assert (status, body) == (200, f"reached {workload}".encode()), body
    # The token is still checked behind the binding.
    status, headers, _ = mesh.request(workload, host)
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer ")


@pytest.mark.parametrize("workload,host,aud,scope", [
    ("wiki", "files.example.com", FILES_URI, "files:list"),
    ("files", "wiki.example.com", WIKI_URI, "wiki:read"),
])
def test_another_resources_host_at_a_workload_is_refused(mesh, workload, host, aud, scope):
    before = _metric(mesh, "destination_mismatch")
    status, headers, body = mesh.request(workload, host, mesh.token(aud, scope))
    assert status == 403, body
    assert b"reached" not in body
    assert "www-authenticate" not in headers, headers
    assert json.loads(body)["error"] == "forbidden", body
    # Not even the public PRM of the named resource is served by the other workload.
    status, _, body = mesh.request(workload, host, method="GET",
                                   path="/.well-known/oauth-protected-resource/mcp")
    assert status == 403, body
    assert _metric(mesh, "destination_mismatch") == before + 2


def test_plaintext_fails_closed(mesh):
    before = _metric(mesh, "destination_unauthenticated")
    status, headers, body = mesh.request("plain", "files.example.com",
                                         mesh.token(FILES_URI, "files:list"))
    assert status == 403, body
    assert b"reached" not in body
    assert "www-authenticate" not in headers, headers
    assert _metric(mesh, "destination_unauthenticated") == before + 1
