"""The local demo (README command 1): start the whole stack on fixed loopback ports and walk
through what an MCP client does, one numbered step at a time.

    deploy/local/demo.sh            # walk through the flow, then keep running until Ctrl-C
    deploy/local/demo.sh --check    # the same walk, non-interactive; exit 1 on any deviation

Ports (override with flags): Envoy 10000, mcp-authz gRPC 9191 / admin 9192, Envoy admin 9901,
MCP server 3000, authorization server 4000. Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stack as stack_mod  # noqa: E402
from stack import E2E_DIR, Ports, Stack, StackError  # noqa: E402

MCP_HEADERS = {"accept": "application/json, text/event-stream",
               "content-type": "application/json"}


class Deviation(Exception):
    """The stack did not answer what the MCP authorization spec (and this demo) expects."""


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise Deviation(what)


# --- output --------------------------------------------------------------------------------

def say(text: str = "") -> None:
    print(text, flush=True)


def step(n: int, title: str) -> None:
    say()
    say(f"{n}. {title}")
    say("-" * (len(title) + 3))


def show(label: str, text: str) -> None:
    say(f"   {label}")
    say(textwrap.indent(text, "      "))


# --- HTTP ----------------------------------------------------------------------------------

class Reply:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def json(self):
        return json.loads(self.body)


def call(url: str, method: str = "GET", headers: dict | None = None,
         body: bytes | None = None) -> Reply:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        path = u.path + (f"?{u.query}" if u.query else "")
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Reply(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def mcp(stack: Stack, message: dict, token: str | None = None) -> Reply:
    headers = dict(MCP_HEADERS)
    if token:
        headers["authorization"] = f"Bearer {token}"
    return call(stack.mcp_uri, "POST", headers, json.dumps(message).encode())


def show_reply(r: Reply, headers=("www-authenticate", "content-type")) -> None:
    say(f"   <- HTTP {r.status}")
    for name in headers:
        value = r.header(name)
        if value is not None:
            say(f"      {name}: {value}")
    if r.body:
        say(f"      {r.body.decode(errors='replace')[:400]}")


def challenge_params(www: str | None) -> dict:
    """RFC 6750 / RFC 9728 attributes of a `Bearer` challenge."""
    expect(www is not None and www.startswith("Bearer "), f"expected a Bearer challenge, got {www!r}")
    return dict(re.findall(r'(\w+)="([^"]*)"', www))


def jwt_parts(token: str) -> tuple[dict, dict]:
    """Header and payload of a JWT, decoded for display (the gateway verifies; we only look)."""
    def part(s: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    header, payload, _ = token.split(".")
    return part(header), part(payload)


def token_request(meta: dict, scope: str, resource: str) -> dict:
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": scope,
                                   "resource": resource}).encode()
    basic = base64.b64encode(b"demo-cc:demo-cc-secret").decode()
    r = call(meta["token_endpoint"], "POST",
             {"authorization": f"Basic {basic}",
              "content-type": "application/x-www-form-urlencoded"}, form)
    expect(r.status == 200, f"token endpoint: HTTP {r.status} {r.body[:300]!r}")
    return r.json()


def show_token(tok: dict) -> dict:
    header, claims = jwt_parts(tok["access_token"])
    show("token header:", json.dumps(header, indent=2))
    show("token claims:", json.dumps(claims, indent=2))
    say(f"   access_token: {tok['access_token'][:48]}... ({len(tok['access_token'])} chars)")
    return claims


# --- the walk ------------------------------------------------------------------------------

def walk(stack: Stack) -> None:
    tools_list = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}

    step(1, "An MCP request without a token is refused with a challenge")
    say(f"   -> POST {stack.mcp_uri}  {json.dumps(tools_list)}")
    r = mcp(stack, tools_list)
    show_reply(r)
    expect(r.status == 401, f"expected 401 without a token, got {r.status}")
    c = challenge_params(r.header("www-authenticate"))
    expect("error" not in c, "a request without credentials must get no error code (RFC 6750 §3)")
    expect(c.get("scope") == "files:list", f"expected scope=\"files:list\", got {c.get('scope')!r}")
    expect(c.get("resource_metadata") == stack.prm_url,
           f"expected resource_metadata={stack.prm_url}, got {c.get('resource_metadata')!r}")
    say("   The challenge names the Protected Resource Metadata (RFC 9728) and the scope to ask for.")

    step(2, "The Protected Resource Metadata it points to")
    say(f"   -> GET {c['resource_metadata']}")
    r = call(c["resource_metadata"])
    say(f"   <- HTTP {r.status}, content-type: {r.header('content-type')}")
    expect(r.status == 200, f"PRM: expected 200, got {r.status}")
    expect(r.header("content-type") == "application/json", "PRM must be application/json")
    prm = r.json()
    show("document (served by Envoy, rendered from the mcp-authz config):", json.dumps(prm, indent=2))
    expect(prm.get("resource") == stack.mcp_uri, f"PRM resource must be {stack.mcp_uri}")
    expect(bool(prm.get("authorization_servers")), "PRM must name an authorization server")

    step(3, "Authorization server metadata discovery (RFC 8414)")
    as_url = prm["authorization_servers"][0]
    url = f"{as_url}/.well-known/oauth-authorization-server"
    say(f"   -> GET {url}")
    r = call(url)
    say(f"   <- HTTP {r.status}")
    expect(r.status == 200, f"AS metadata: expected 200, got {r.status}")
    meta = r.json()
    expect(meta.get("issuer") == as_url, f"AS metadata issuer {meta.get('issuer')!r} != {as_url}")
    picked = {k: meta.get(k) for k in ("issuer", "token_endpoint", "jwks_uri",
                                       "registration_endpoint", "grant_types_supported",
                                       "code_challenge_methods_supported")}
    show("selected fields:", json.dumps(picked, indent=2))

    step(4, "A client-credentials token for this resource (RFC 8707 `resource`)")
    say(f"   -> POST {meta['token_endpoint']}  (HTTP Basic demo-cc:demo-cc-secret)")
    say(f"      grant_type=client_credentials scope={c['scope']} resource={prm['resource']}")
    tok = token_request(meta, c["scope"], prm["resource"])
    claims = show_token(tok)
    expect(claims.get("aud") == prm["resource"], f"aud {claims.get('aud')!r} != {prm['resource']}")
    expect(claims.get("scope") == "files:list", f"scope {claims.get('scope')!r} != 'files:list'")
    token = tok["access_token"]

    step(5, "Allowed: tools/list and tools/call list_files with that token")
    say(f"   -> POST {stack.mcp_uri}  tools/list  (Authorization: Bearer ...)")
    r = mcp(stack, tools_list, token)
    say(f"   <- HTTP {r.status}")
    expect(r.status == 200, f"tools/list with files:list: expected 200, got {r.status} {r.body[:300]!r}")
    names = [t["name"] for t in r.json()["result"]["tools"]]
    say(f"      tools: {', '.join(names)}")
    expect(names == ["list_files", "read_file", "write_file"], f"unexpected tools {names}")
    list_files = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                  "params": {"name": "list_files", "arguments": {}}}
    say(f"   -> POST {stack.mcp_uri}  tools/call list_files")
    r = mcp(stack, list_files, token)
    say(f"   <- HTTP {r.status}")
    expect(r.status == 200, f"list_files: expected 200, got {r.status} {r.body[:300]!r}")
    text = r.json()["result"]["content"][0]["text"]
    say(f"      files: {text.replace(chr(10), ', ')}")
    expect("hello.txt" in text.split("\n"), "list_files should show hello.txt")

    step(6, "Refused: read_file needs files:read -> 403 insufficient_scope")
    read_file = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                 "params": {"name": "read_file", "arguments": {"path": "hello.txt"}}}
    say(f"   -> POST {stack.mcp_uri}  tools/call read_file {{\"path\":\"hello.txt\"}}")
    r = mcp(stack, read_file, token)
    show_reply(r)
    expect(r.status == 403, f"read_file with files:list: expected 403, got {r.status}")
    c = challenge_params(r.header("www-authenticate"))
    expect(c.get("error") == "insufficient_scope", f"expected error=insufficient_scope, got {c}")
    expect(c.get("scope") == "files:list files:read",
           f"expected scope=\"files:list files:read\" (granted + required), got {c.get('scope')!r}")
    say("   mcp-authz read the JSON-RPC body: the tool name decides the scope.")

    step(7, "Step-up: a new token with the challenged scope, and the call succeeds")
    say(f"   -> POST {meta['token_endpoint']}  scope={c['scope']} resource={prm['resource']}")
    tok = token_request(meta, c["scope"], prm["resource"])
    claims = show_token(tok)
    expect(set(claims.get("scope", "").split()) == {"files:list", "files:read"},
           f"stepped-up token scope {claims.get('scope')!r}")
    say(f"   -> POST {stack.mcp_uri}  tools/call read_file (new token)")
    r = mcp(stack, read_file, tok["access_token"])
    say(f"   <- HTTP {r.status}")
    expect(r.status == 200, f"read_file after step-up: expected 200, got {r.status} {r.body[:300]!r}")
    content = r.json()["result"]["content"][0]["text"]
    say(f"      hello.txt: {content!r}")
    expect(content == "hello from mcp-authz", f"unexpected file content {content!r}")

    step(8, "The official TypeScript MCP SDK does all of this by itself, given only the URL")
    argv = [stack.node, str(E2E_DIR / "client.mjs"), "--url", stack.mcp_uri,
            "--flow", "client_credentials", "--client-id", "demo-cc",
            "--client-secret", "demo-cc-secret", "--expected-issuer", stack.issuer]
    say(f"   $ node tests/e2e/client.mjs --url {stack.mcp_uri} --flow client_credentials \\")
    say(f"       --client-id demo-cc --client-secret demo-cc-secret --expected-issuer {stack.issuer}")
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=E2E_DIR)
    lines = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    for ev in lines:
        if "step" in ev:
            detail = {k: v for k, v in ev.items() if k not in ("step", "ok")}
            summary = json.dumps(detail)
            say(f"      {'ok ' if ev['ok'] else 'BAD'} {ev['step']:<14} {summary[:150]}")
    done = lines[-1] if lines else {}
    expect(p.returncode == 0 and done == {"done": True, "ok": True},
           f"client.mjs failed (exit {p.returncode}):\n{p.stdout}\n{p.stderr[-3000:]}")
    say("   done: every check passed")


def print_try_it(stack: Stack, ports: Ports) -> None:
    mcp_uri, issuer = stack.mcp_uri, stack.issuer
    body = '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    say()
    say("The stack keeps running. Try it by hand (from the repository root):")
    say(f"""
   MCP endpoint (Envoy)       {mcp_uri}
   Protected Resource Meta    {stack.prm_url}
   Authorization server       {issuer}/.well-known/oauth-authorization-server
   mcp-authz metrics / ready  http://127.0.0.1:{ports.authz_admin}/metrics  /readyz
   Envoy admin                http://127.0.0.1:{ports.envoy_admin}/
   Logs                       {stack.logdir}

   # 401 and its challenge
   curl -i {mcp_uri} -H 'content-type: application/json' \\
        -H 'accept: application/json, text/event-stream' -d '{body}'

   # the Protected Resource Metadata
   curl -s {stack.prm_url}

   # a token (client credentials), then the same request with it
   TOKEN=$(curl -s -u demo-cc:demo-cc-secret -d grant_type=client_credentials \\
        -d scope=files:list -d resource={mcp_uri} {issuer}/token \\
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
   curl -i {mcp_uri} -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \\
        -H 'accept: application/json, text/event-stream' -d '{body}'

   # read_file needs files:read: 403 insufficient_scope
   curl -i {mcp_uri} -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \\
        -H 'accept: application/json, text/event-stream' \\
        -d '{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"read_file","arguments":{{"path":"hello.txt"}}}}}}'

   # the SDK clients (authorization code: scripted login to the local AS)
   node tests/e2e/client.mjs --url {mcp_uri} --flow authorization_code
   .venv/bin/python tests/e2e/client.py --url {mcp_uri} --flow authorization_code

Press Ctrl-C to stop everything.""")


def ports_in_use(ports: Ports) -> list[int]:
    busy = []
    for port in vars(ports).values():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # Like the servers themselves: TIME_WAIT leftovers of a previous run are no conflict.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true",
                    help="run the walk non-interactively and exit (non-zero on any deviation)")
    d = Ports.demo()
    ap.add_argument("--envoy-port", type=int, default=d.envoy)
    ap.add_argument("--envoy-admin-port", type=int, default=d.envoy_admin)
    ap.add_argument("--authz-grpc-port", type=int, default=d.authz_grpc)
    ap.add_argument("--authz-admin-port", type=int, default=d.authz_admin)
    ap.add_argument("--mcp-port", type=int, default=d.mcp)
    ap.add_argument("--as-port", type=int, default=d.auth_server)
    args = ap.parse_args()
    ports = Ports(envoy=args.envoy_port, envoy_admin=args.envoy_admin_port,
                  authz_grpc=args.authz_grpc_port, authz_admin=args.authz_admin_port,
                  mcp=args.mcp_port, auth_server=args.as_port)

    stack_mod.interrupt_on_signals()  # Ctrl-C / SIGTERM -> KeyboardInterrupt -> cleanup below
    busy = ports_in_use(ports)
    if busy:
        print(f"demo: port(s) {', '.join(map(str, busy))} on 127.0.0.1 already in use "
              "(another demo running?); pick others with --envoy-port etc.", file=sys.stderr)
        return 1

    stack = None
    failed = True
    try:
        say("mcp-authz local demo: Envoy + mcp-authz in front of an MCP server, "
            "oidc-provider as the OAuth server")
        say("starting the stack on 127.0.0.1 ...")
        stack = Stack(ports=ports, log=lambda m: say(f"   {m}"))
        stack.start()
        walk(stack)
        failed = False
        if args.check:
            say()
            say("demo --check: all 8 steps behaved as expected")
            return 0
        print_try_it(stack, stack.ports)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        failed = False
        say("\ninterrupted")
        return 0 if not args.check else 130
    except Deviation as e:
        print(f"\ndemo: DEVIATION: {e}", file=sys.stderr)
        if stack:
            print(f"logs: {stack.logdir}", file=sys.stderr)
        return 1
    except StackError as e:
        print(f"\ndemo: the stack did not start: {e}", file=sys.stderr)
        return 1
    finally:
        if stack:
            say("stopping every process the demo started ...")
            stack.stop(remove_workdir=not failed)


if __name__ == "__main__":
    sys.exit(main())
