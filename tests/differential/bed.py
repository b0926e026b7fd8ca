"""The differential test bed: real Envoy 1.40 + mcp-authz + the official MCP SDK servers, and
systematically generated adversarial requests checked against one oracle (issue 11):

  for every request mcp-authz allows, what the server executed is permitted by the policy for
  that token's scopes; for every request it refuses, the status is the decision matrix's.

Each SDK server (tests/e2e/sdk-express-server.mjs: TypeScript SDK `McpServer` on
`createMcpExpressApp`; tests/e2e/sdk_server.py: Python SDK `MCPServer` Streamable HTTP app)
records what it executed (tool, resource, prompt, completion) and which requests reached it,
under the `x-case-id` header the bed sends; the bed reads both directly, not through Envoy.

Bounded run: tests/e2e/test_differential.py (part of `pytest tests/e2e`, command 2).
Long run (a developer's, prints the count):

    MCP_AUTHZ_BIN=target/debug/mcp-authz .venv/bin/python tests/differential/bed.py --cases 100000

The oracle's policy (`REQUIRED`) is written out by hand from BED_POLICY, independently of
mcp-authz's code: it names, for each thing a server can execute, the scopes it needs.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import itertools
import json
import os
import random
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
E2E_DIR = REPO / "tests" / "e2e"
sys.path.insert(0, str(REPO / "deploy" / "local"))

import stack as stack_mod  # noqa: E402

ISSUER = "https://differential-issuer.invalid"

# The policy under test. Paths: only /mcp has MCP rules; `default_scopes: []` lets any valid
# token through paths no route names — the fallback a case-insensitive router must not reach.
BED_POLICY = """\
    default_scopes: []
    routes:
      - name: mcp
        path: /mcp
        methods: [GET, POST, DELETE]
        scopes: [mcp:base]
        mcp:
          tools: {public_echo: [t:basic], admin_wipe: [t:admin]}
          resources:
            "file:///public/": [r:public]
            "file:///secret/": [r:secret]
            "config://secret": [r:secret]
          prompts: {greet: [p:basic], admin_report: [p:admin]}
"""

# What each executed operation needs (the servers report these targets), besides mcp:base
# (every one runs in the /mcp handler).
REQUIRED: dict[tuple[str, str], set[str]] = {
    ("tool", "public_echo"): {"t:basic"},
    ("tool", "admin_wipe"): {"t:admin"},
    ("resource", "file:///public/readme"): {"r:public"},
    ("resource", "file:///secret/key"): {"r:secret"},
    ("resource", "config://secret/app"): {"r:secret"},
    ("resource", "template:file:///public/docs/{name}"): {"r:public"},
    ("resource", "template:file:///secret/vault/{name}"): {"r:secret"},
    ("prompt", "greet"): {"p:basic"},
    ("prompt", "admin_report"): {"p:admin"},
    ("complete", "prompt:greet"): {"p:basic"},
    ("complete", "prompt:admin_report"): {"p:admin"},
    ("complete", "resource:file:///public/docs/{name}"): {"r:public"},
    ("complete", "resource:file:///secret/vault/{name}"): {"r:secret"},
}
BASE = "mcp:base"
ALL_SCOPES = [BASE, "t:basic", "t:admin", "r:public", "r:secret", "p:basic", "p:admin"]

# Decision-matrix statuses (contract §2) plus Envoy's own answers: 400 for a request its codec
# or path normalisation rejects, 404 for a path decided by mcp-authz that no route forwards.
REFUSAL_STATUSES = {400, 401, 403, 404, 413, 415}
JSON_ERROR = {400: {"bad_request", "invalid_request"}, 401: {"unauthorized", "invalid_token"},
              403: {"forbidden", "insufficient_scope"}, 404: {"not_found"},
              413: {"payload_too_large"}, 415: {"unsupported_media_type"}}


# ------------------------------------------------------------------------------------------
# Request generation: every dimension enumerated, combined by a mixed-radix counter (so the
# bounded run covers every value of every dimension) with a seeded RNG for the rest.
# ------------------------------------------------------------------------------------------

PATHS = ["/mcp", "/MCP", "/Mcp", "/mcP", "/mcp/", "/MCP/", "//mcp", "/./mcp", "/x/../mcp",
         "/mcp/.", "/mcp/x/..", "/%6Dcp", "/%6dcp", "/%4dCP", "/mcp%2F", "/mcp%2f..",
         "/mcp;a=b", "/mcp?x=/../admin", "/mcp/%2e", "/mcp/%2E%2E/mcp", "/mcp//", "/mcp%20",
         "/mcp/x", "/mcpx", "/.well-known/../mcp", "/mcp\\", "/%2e/mcp"]

TOOLS = ["public_echo", "admin_wipe", "Admin_Wipe", "ADMIN_WIPE", "admin_wipe ", " admin_wipe",
         "admin\u005fwipe", "admin_wipe\u0000", "admin_wip\u00e9", "public_echo\n"]
PROMPTS = ["greet", "admin_report", "Admin_Report", "admin_report ", "greet\t"]

# Resource URIs: a base target, optionally reached from a public prefix by a traversal whose
# dots and separators are spelled in every way, then scheme/host/case/escape mutations.
TARGETS = ["file:///secret/key", "file:///public/readme", "file:///secret/vault/x",
           "file:///public/docs/a", "config://secret/app"]
DOTS = ["..", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "..%00", "%252e%252e", "...", "."]
SEPS = ["/", "%2f", "%2F", "\\", "%5c", "//", "/./"]
MUTATIONS = [
    lambda u: u,
    lambda u: u.replace("file:", "FILE:", 1),
    lambda u: u.replace("file:///", "file://localhost/", 1),
    lambda u: u.replace("file:///", "file://LOCALHOST/", 1),
    lambda u: u.replace("file:///", "file:////", 1),
    lambda u: u.replace("file:///", "file:/", 1),
    lambda u: u.replace("file:///", "file:", 1),
    lambda u: u.replace("secret", "%73ecret", 1),
    lambda u: u.replace("secret", "SECRET", 1),
    lambda u: u.replace("secret", "sec\tret", 1),
    lambda u: u.replace("public", "pub\nlic", 1),
    lambda u: u + "#frag",
    lambda u: u + "?x=1",
    lambda u: u + "/",
    lambda u: " " + u,
    lambda u: u + " ",
    lambda u: u.replace("config://", "CONFIG://", 1),
    lambda u: u.replace("config://secret", "config://Secret", 1),
    lambda u: u.replace("/", "\\"),
    lambda u: u.replace("file:///", "file://user@/", 1),
    # Classes the property tests found where the `url` crate and Node's parser disagree:
    lambda u: u.replace("file:///", "file://///", 1),
    lambda u: u.replace("secret/", "secret//", 1),
    lambda u: u.replace("config://", "config://:@", 1),
    lambda u: u.replace("file:///", "file://LocalHost./C:/../", 1),
    lambda u: u.replace("readme", "read^me", 1),
]


def traversal(target: str, dots: str, sep: str) -> str:
    """`target` reached from the public prefix: file:///public/<dots><sep><rest-of-target>."""
    if not target.startswith("file:///"):
        return target
    return "file:///public/" + dots + sep + target[len("file:///"):]


def resource_uri(i: int, rng: random.Random) -> str:
    target = TARGETS[i % len(TARGETS)]
    if rng.random() < 0.35:
        target = traversal(target, DOTS[(i // 5) % len(DOTS)], SEPS[(i // 45) % len(SEPS)])
    m = MUTATIONS[(i // 7) % len(MUTATIONS)] if rng.random() < 0.6 else MUTATIONS[0]
    u = m(target)
    if rng.random() < 0.2:
        u = MUTATIONS[rng.randrange(len(MUTATIONS))](u)
    return u


REFS = [
    lambda rng, i: {"type": "ref/resource", "uri": "file:///secret/vault/{name}"},
    lambda rng, i: {"type": "ref/resource", "uri": "file:///public/docs/{name}"},
    lambda rng, i: {"type": "ref/resource", "uri": "FILE:///secret/vault/{name}"},
    lambda rng, i: {"type": "ref/resource", "uri": "file:///public/../secret/vault/{name}"},
    lambda rng, i: {"type": "ref/resource", "uri": resource_uri(i, rng)},
    lambda rng, i: {"type": "ref/prompt", "name": "admin_report"},
    lambda rng, i: {"type": "ref/prompt", "name": "greet"},
    lambda rng, i: {"type": "ref/prompt", "name": PROMPTS[i % len(PROMPTS)]},
    lambda rng, i: {"type": "ref/Prompt", "name": "admin_report"},
    lambda rng, i: {"name": "admin_report"},
    lambda rng, i: {"type": "ref/prompt", "name": "greet", "uri": "file:///secret/vault/{name}"},
    lambda rng, i: {"type": "ref/resource", "name": "admin_report",
                    "uri": "file:///public/docs/{name}"},
]


def message(kind: int, i: int, rng: random.Random) -> dict:
    """One JSON-RPC request of the given kind."""
    mid = rng.randrange(1, 1 << 30)
    if kind == 0:
        name = TOOLS[i % len(TOOLS)] if rng.random() < 0.7 else rng.choice(TOOLS[:2])
        return {"jsonrpc": "2.0", "id": mid, "method": "tools/call",
                "params": {"name": name, "arguments": {}}}
    if kind == 1:
        return {"jsonrpc": "2.0", "id": mid, "method": "resources/read",
                "params": {"uri": resource_uri(i, rng)}}
    if kind == 2:
        return {"jsonrpc": "2.0", "id": mid, "method": "prompts/get",
                "params": {"name": PROMPTS[i % len(PROMPTS)], "arguments": {"who": "x"}}}
    if kind == 3:
        ref = REFS[i % len(REFS)](rng, i)
        arg = "who" if ref.get("type") == "ref/prompt" else "name"
        return {"jsonrpc": "2.0", "id": mid, "method": "completion/complete",
                "params": {"ref": ref, "argument": {"name": arg, "value": "a"}}}
    if kind == 4:
        m = ["tools/list", "resources/list", "resources/templates/list", "prompts/list", "ping",
             "resources/subscribe", "resources/unsubscribe"][i % 7]
        params = {"uri": resource_uri(i, rng)} if m.startswith("resources/s") or \
            m.startswith("resources/u") else {}
        return {"jsonrpc": "2.0", "id": mid, "method": m, "params": params}
    raise ValueError(kind)


def _dup(obj_text: str, key: str, weak: str, strong: str) -> str:
    """A JSON object text with `key` twice: mcp-authz must refuse, the servers take the last."""
    return obj_text.replace(f'"{key}":', f'"{key}":{json.dumps(weak)},"{key}":', 1) \
        .replace(f'"{key}":{json.dumps(weak)},"{key}":{json.dumps(weak)}',
                 f'"{key}":{json.dumps(weak)},"{key}":{json.dumps(strong)}', 1)


# Body shapes: each a function of (message, rng) -> bytes.
def _shape_plain(m, rng):
    return json.dumps(m).encode()


def _shape_compact_escaped(m, rng):
    # Member names and values spelled with \\u escapes (same JSON value).
    t = json.dumps(m, ensure_ascii=True, separators=(",", ":"))
    return (t.replace('"method"', '"m\\u0065thod"').replace('"name"', '"n\\u0061me"')
             .replace('"uri"', '"\\u0075ri"').replace("admin", "\\u0061dmin")).encode()


def _shape_dup_name(m, rng):
    t = json.dumps(m, separators=(",", ":"))
    if '"name":' in t:
        return t.replace('"name":', '"name":"public_echo","name":', 1).encode()
    if '"uri":' in t:
        return t.replace('"uri":', '"uri":"file:///public/readme","uri":', 1).encode()
    return t.replace('"method":', '"method":"ping","method":', 1).encode()


def _shape_dup_params(m, rng):
    t = json.dumps(m, separators=(",", ":"))
    return t.replace('"params":', '"params":{"name":"public_echo","uri":"file:///public/readme"},'
                                  '"params":', 1).encode()


def _shape_dup_method(m, rng):
    t = json.dumps(m, separators=(",", ":"))
    return t.replace('"method":', '"method":"tools/list","method":', 1).encode()


def _shape_batch(m, rng):
    weak = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "public_echo", "arguments": {}}}
    pair = [weak, m] if rng.random() < 0.5 else [m, weak]
    return json.dumps(pair).encode()


def _shape_bom(m, rng):
    return b"\xef\xbb\xbf" + json.dumps(m).encode()


def _shape_trailing(m, rng):
    return json.dumps(m).encode() + rng.choice([b" ", b"\n", b" {}", b"x", b"\x00", b",{}"])


def _shape_nested_wrong(m, rng):
    # A `params` the servers read as a different shape: by-position, or name in arguments.
    m = dict(m)
    if rng.random() < 0.5:
        m["params"] = [m.get("params")]
    else:
        p = dict(m.get("params") or {})
        p["arguments"] = {"name": "admin_wipe", "uri": "file:///secret/key"}
        p.pop("name", None)
        m["params"] = p
    return json.dumps(m).encode()


def _shape_latin1(m, rng):
    return json.dumps(m, ensure_ascii=False).encode("latin-1", errors="replace") + b"\xff"


def _shape_big_number_id(m, rng):
    m = dict(m)
    m["id"] = 1e400 if rng.random() < 0.5 else 2 ** 70
    t = json.dumps(m).replace("Infinity", "1e400")
    return t.encode()


SHAPES = [_shape_plain, _shape_plain, _shape_plain, _shape_compact_escaped, _shape_dup_name,
          _shape_dup_params, _shape_dup_method, _shape_batch, _shape_bom, _shape_trailing,
          _shape_nested_wrong, _shape_latin1, _shape_big_number_id]

HEADER_VARIANTS = [
    lambda m: {},
    lambda m: {},
    lambda m: {"mcp-method": m.get("method", "")},
    lambda m: {"mcp-method": "tools/list"},
    lambda m: {"mcp-name": "public_echo"},
    lambda m: {"content-encoding": "gzip"},
    lambda m: {"content-encoding": "deflate"},
    lambda m: {"content-encoding": "identity"},
    lambda m: {"content-type": "text/plain"},
    lambda m: {"content-type": "application/json; charset=utf-16"},
]

TOKEN_KINDS = ["base", "base+one", "base+two", "all", "none", "garbage", "no-base", "base+one",
               "base+two", "base+three"]


@dataclass
class Case:
    n: int
    path: str
    headers: dict
    body: bytes
    token_kind: str
    scopes: set[str]
    label: str


def generate(n: int, seed: int = 11) -> Case:
    """Case number n (deterministic for a seed)."""
    rng = random.Random(seed * 1_000_003 + n)
    # About half the cases vary one dimension at most, so allowed requests (and what the
    # servers then execute) are plentiful enough for the oracle to bite.
    path = PATHS[(n // 3) % len(PATHS)] if n % 3 == 0 else "/mcp"
    kind = n % 5
    m = message(kind, n // 5, rng)
    shape = SHAPES[(n // 15) % len(SHAPES)] if rng.random() < 0.4 else _shape_plain
    body = shape(m, rng)
    hv = HEADER_VARIANTS[(n // 7) % len(HEADER_VARIANTS)](m) if rng.random() < 0.4 else {}
    headers = {"accept": "application/json, text/event-stream",
               "content-type": "application/json", **hv}
    if headers.get("content-encoding") == "gzip":
        body = gzip.compress(body)
    elif headers.get("content-encoding") == "deflate":
        body = zlib.compress(body)
    tk = TOKEN_KINDS[(n // 11) % len(TOKEN_KINDS)]
    extra = [s for s in ALL_SCOPES if s != BASE]
    scopes: set[str] = set()
    if tk == "base":
        scopes = {BASE}
    elif tk == "base+one":
        scopes = {BASE, rng.choice(extra)}
    elif tk == "base+two":
        scopes = {BASE, *rng.sample(extra, 2)}
    elif tk == "base+three":
        scopes = {BASE, *rng.sample(extra, 3)}
    elif tk == "all":
        scopes = set(ALL_SCOPES)
    elif tk == "no-base":
        scopes = set(rng.sample(extra, 3))
    label = f"#{n} {path} {shape.__name__} {sorted(hv)} {tk}{sorted(scopes)} {body[:160]!r}"
    return Case(n, path, headers, body, tk, scopes, label)


# ------------------------------------------------------------------------------------------
# One server behind its own Envoy + mcp-authz.
# ------------------------------------------------------------------------------------------

@dataclass
class Bed:
    server: str  # "ts" or "py"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mcp-authz-diff-")))
    procs: list = field(default_factory=list)

    def start(self) -> "Bed":
        try:
            self._start()
        except BaseException:
            self.stop(keep=True)
            raise
        return self

    def _spawn(self, name, argv, cwd=None):
        p = stack_mod.Proc(name, argv, self.logdir, cwd)
        self.procs.append(p)
        return p

    def _wait(self, proc, probe, what, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = probe()
            if r:
                return r
            if not proc.alive():
                raise stack_mod.StackError(f"{proc.name} exited before {what}\n{self.logs()}")
            time.sleep(0.05)
        raise stack_mod.StackError(f"{proc.name}: no {what}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(p.logs() for p in self.procs)

    def _start(self) -> None:
        self.logdir = self.workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        authz_bin = stack_mod.find_mcp_authz()
        envoy_bin = stack_mod.find_envoy()
        if self.server == "ts":
            srv = self._spawn("sdk-ts", [stack_mod.find_node(), str(E2E_DIR / "sdk-express-server.mjs"),
                                         "--port", "0"], cwd=E2E_DIR)
        else:
            srv = self._spawn("sdk-py", [sys.executable, str(E2E_DIR / "sdk_server.py"), "--port", "0"],
                              cwd=E2E_DIR)
        self.upstream_port = self._wait(srv, srv.ready_line, "ready line")["port"]
        self.envoy_port, envoy_admin = stack_mod.free_port(), stack_mod.free_port()
        grpc, admin = stack_mod.free_port(), stack_mod.free_port()
        self.key = stack_mod.TestIssuerKey("diff-key")
        jwks = self.workdir / "jwks.json"
        jwks.write_text(json.dumps({"keys": [self.key.jwk()]}))
        self.resource = f"http://127.0.0.1:{self.envoy_port}/mcp"
        config = self.workdir / "mcp-authz.yaml"
        config.write_text(f"""\
listen: {{grpc: "127.0.0.1:{grpc}", admin: "127.0.0.1:{admin}"}}
envoy:
  listen: 127.0.0.1:{self.envoy_port}
  admin: 127.0.0.1:{envoy_admin}
  authz_address: 127.0.0.1:{grpc}
resources:
  - id: bed
    uri: {json.dumps(self.resource)}
    upstream: 127.0.0.1:{self.upstream_port}
    issuers:
      - issuer: {json.dumps(ISSUER)}
        jwks_file: {json.dumps(str(jwks))}
        algorithms: [RS256]
{BED_POLICY}""")
        authz = self._spawn("mcp-authz", [str(authz_bin), "serve", "--config", str(config),
                                          "--drain-seconds", "0"])
        readyz = f"http://127.0.0.1:{admin}/readyz"
        self._wait(authz, lambda: stack_mod.http_get(readyz)[0] == 200, "readyz")
        rendered = self.workdir / "envoy.yaml"
        r = stack_mod.subprocess.run([str(authz_bin), "render", "envoy", "--config", str(config)],
                                     capture_output=True, text=True, timeout=60)
        if r.returncode:
            raise stack_mod.StackError(f"render envoy: {r.stderr}")
        rendered.write_text(r.stdout)
        envoy = self._spawn("envoy", [str(envoy_bin), "-c", str(rendered), "--concurrency", "1",
                                      "--disable-hot-restart", "--log-level", "warning"])
        ready = f"http://127.0.0.1:{envoy_admin}/ready"
        self._wait(envoy, lambda: stack_mod.http_get(ready)[0] == 200, "Envoy ready")
        self.tokens: dict[frozenset, str] = {}
        self.conn = None

    def stop(self, keep: bool = False) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()
        if not keep and os.environ.get("MCP_AUTHZ_KEEP_LOGS") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)

    def token(self, scopes: set[str]) -> str:
        key = frozenset(scopes)
        if key not in self.tokens:
            now = int(time.time())
            self.tokens[key] = self.key.sign({"iss": ISSUER, "aud": self.resource, "sub": "diff",
                                              "scope": " ".join(sorted(scopes)), "iat": now,
                                              "exp": now + 3600})
        return self.tokens[key]

    def send(self, case: Case) -> tuple[int, dict, bytes]:
        headers = dict(case.headers)
        headers["x-case-id"] = str(case.n)
        if case.token_kind == "garbage":
            headers["authorization"] = "Bearer not.a.token"
        elif case.token_kind != "none":
            headers["authorization"] = f"Bearer {self.token(case.scopes)}"
        for attempt in range(3):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.envoy_port, timeout=30)
            try:
                self.conn.putrequest("POST", case.path, skip_host=False, skip_accept_encoding=True)
                for k, v in headers.items():
                    self.conn.putheader(k, v)
                self.conn.putheader("content-length", str(len(case.body)))
                self.conn.endheaders(case.body)
                r = self.conn.getresponse()
                body = r.read()
                hdrs = {k.lower(): v for k, v in r.getheaders()}
                if hdrs.get("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, hdrs, body
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def direct(self, method: str, path: str):
        c = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        try:
            c.request(method, path)
            r = c.getresponse()
            body = r.read()
            return json.loads(body) if r.status == 200 else None
        finally:
            c.close()


# ------------------------------------------------------------------------------------------
# The oracle.
# ------------------------------------------------------------------------------------------

@dataclass
class Tally:
    cases: int = 0
    allowed: int = 0
    refused: int = 0
    executed_ops: int = 0
    by_status: dict = field(default_factory=dict)
    violations: list = field(default_factory=list)


def check_chunk(bed: Bed, cases: list[Case], answers: dict, tally: Tally) -> None:
    executed = bed.direct("GET", "/__executed") or []
    arrived = bed.direct("GET", "/__arrived") or []
    bed.direct("DELETE", "/__executed")
    arrived_cases = {a["case"] for a in arrived}
    ops: dict[str, list] = {}
    for e in executed:
        ops.setdefault(e["case"], []).append((e["kind"], e["target"]))
    for c in cases:
        cid = str(c.n)
        status, hdrs, body = answers[c.n]
        tally.cases += 1
        tally.by_status[status] = tally.by_status.get(status, 0) + 1
        if cid in arrived_cases:
            tally.allowed += 1
            # `default_scopes: []`: any valid token may reach paths no route names, but only
            # a valid one; and everything the MCP handler executes is under /mcp's baseline.
            if c.token_kind in ("none", "garbage"):
                tally.violations.append(f"reached the server without a valid token: {c.label}")
            for op in ops.get(cid, []):
                tally.executed_ops += 1
                need = REQUIRED.get(op)
                if need is None:
                    tally.violations.append(f"executed an unknown operation {op}: {c.label}")
                elif not need | {BASE} <= c.scopes:
                    tally.violations.append(
                        f"executed {op} needing {sorted(need)} with {sorted(c.scopes)}: {c.label}")
        else:
            tally.refused += 1
            if ops.get(cid):
                tally.violations.append(f"executed {ops[cid]} but never arrived?: {c.label}")
            if status not in REFUSAL_STATUSES:
                tally.violations.append(f"refused with status {status}: {c.label} {body[:200]!r}")
                continue
            if hdrs.get("content-type") == "application/json":
                try:
                    err = json.loads(body).get("error")
                except ValueError:
                    err = None
                if err not in JSON_ERROR[status]:
                    tally.violations.append(f"status {status} with error {err!r}: {c.label}")
                if err == "insufficient_scope" and 'error="insufficient_scope"' not in \
                        hdrs.get("www-authenticate", ""):
                    tally.violations.append(f"403 insufficient_scope without challenge: {c.label}")
                if status == 401 and c.token_kind not in ("none", "garbage"):
                    tally.violations.append(f"401 for a valid token: {c.label}")
            if status == 401 and c.token_kind == "garbage" and \
                    'error="invalid_token"' not in hdrs.get("www-authenticate", ""):
                tally.violations.append(f"bad token without invalid_token: {c.label}")


def run(bed: Bed, count: int, start: int = 0, chunk: int = 200, seed: int = 11,
        progress=None) -> Tally:
    tally = Tally()
    bed.direct("DELETE", "/__executed")
    n = start
    while n < start + count:
        cases = [generate(i, seed) for i in range(n, min(n + chunk, start + count))]
        answers = {c.n: bed.send(c) for c in cases}
        check_chunk(bed, cases, answers, tally)
        n += len(cases)
        if progress:
            progress(tally)
    return tally


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=100_000, help="total, split over the servers")
    ap.add_argument("--servers", default="ts,py")
    ap.add_argument("--seed", type=int, default=11)
    a = ap.parse_args()
    servers = a.servers.split(",")
    per = a.cases // len(servers)
    total = Tally()
    t0 = time.monotonic()
    for s in servers:
        bed = Bed(s).start()
        try:
            def progress(t, s=s):
                if t.cases % 5000 == 0:
                    print(f"  {s}: {t.cases} cases, {t.allowed} allowed, {t.executed_ops} executed, "
                          f"{len(t.violations)} violations", flush=True)
            t = run(bed, per, seed=a.seed, progress=progress)
        finally:
            bed.stop()
        print(f"{s}: {t.cases} cases ({t.allowed} reached the server, {t.executed_ops} operations "
              f"executed, {t.refused} refused), statuses {dict(sorted(t.by_status.items()))}, "
              f"{len(t.violations)} violations", flush=True)
        for v in t.violations[:20]:
            print("  VIOLATION", v)
        for k in ("cases", "allowed", "refused", "executed_ops"):
            setattr(total, k, getattr(total, k) + getattr(t, k))
        total.violations += t.violations
    print(f"total: {total.cases} generated requests in {time.monotonic() - t0:.0f} s, "
          f"{total.allowed} allowed, {total.executed_ops} executed operations checked, "
          f"{len(total.violations)} violations")
    return 1 if total.violations else 0


if __name__ == "__main__":
    sys.exit(main())
