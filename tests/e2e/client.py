#!/usr/bin/env python3
"""client.py - end-to-end MCP client on the official Python SDK v2 (PyPI `mcp` 2.3.x).

Same flow, CLI and output as client.mjs: given only the MCP URL it discovers everything from
the 401 challenge, gets a token, calls tools, follows 403 insufficient_scope step-ups, and
checks every step.

  python client.py --url http://127.0.0.1:10000/mcp --flow client_credentials|authorization_code
                   [--scope "files:list"] [--client-id demo-cc --client-secret demo-cc-secret]
                   [--expected-issuer URL] [--deny-write] [--username alice]
                   [--write-path NAME] [--timeout SECONDS] [--mode auto|legacy|2026-07-28]
                   [--listen URI]

--mode is the SDK's `Client(mode=...)`: `auto` (default) opens with `server/discover`
(MCP 2026-07-28) and falls back to `initialize` on a server of an older revision; `legacy`
forces the `initialize` handshake (2025-11-25); a revision pins it.
--listen URI: right after tools/list, open a `subscriptions/listen` stream (2026-07-28) for
tool-list changes and updates of URI, check the acknowledgment names URI, and close it (step
"listen", with `stepped_up` when a 403 insufficient_scope came first).

Output: one JSON line per step on stdout ({"step": ..., "ok": ...}), ending with
{"done": true, "ok": true}. Exit 0 only if every check passed; 1 on any deviation.

Providers: `mcp.client.auth.OAuthClientProvider` (authorization code + PKCE, DCR; the
devInteractions login/consent is scripted with httpx2 in the redirect handler and the code is
taken from the redirect to a loopback redirect_uri that is never contacted) and
`mcp.client.auth.extensions.client_credentials.ClientCredentialsOAuthProvider`. Both take the
scope from the challenge by themselves and, on step-up, request the union of old and new
scopes; the subclasses below only add --scope (first token) and --deny-write (never request
files:write, as a user refusing consent would).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import secrets
import sys
import warnings
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp.shared.exceptions import MCPError

# ---------------------------------------------------------------- output and checks
ALL_OK = True


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({k: v for k, v in obj.items() if v is not None}) + "\n")
    sys.stdout.flush()


def step(name: str, ok: bool, **extra: Any) -> bool:
    global ALL_OK
    if not ok:
        ALL_OK = False
    emit({"step": name, "ok": bool(ok), **extra})
    return bool(ok)


def describe(e: BaseException) -> str:
    """Flatten (nested) exception groups from anyio task groups into one readable line."""
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(describe(x) for x in e.exceptions)
    return f"{type(e).__name__}: {e}"


def scopes_of(s: str | None) -> set[str]:
    return set((s or "").split())


def jwt_claims(token: str | None) -> dict[str, Any]:
    parts = (token or "").split(".")
    if len(parts) != 3:
        return {"opaque": True}
    c = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    return {k: c.get(k) for k in ("iss", "aud", "sub", "client_id", "scope", "exp")}


# ---------------------------------------------------------------- scripted devInteractions login
class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = "get"
        self.fields: list[tuple[str, str, str]] = []  # (name, type, value)
        self._in_form = False
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form" and not self._done:
            self._in_form = True
            self.action = a.get("action")
            self.method = a.get("method", "get").lower()
        elif tag == "input" and self._in_form and a.get("name"):
            self.fields.append((a["name"], a.get("type", "text").lower(), a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._in_form:
            self._in_form = False
            self._done = True


async def scripted_login(
    authorization_url: str, redirect_uri: str, username: str, http: httpx2.AsyncClient
) -> tuple[AuthorizationCodeResult, list[str]]:
    """Drive oidc-provider's devInteractions: follow redirects, post each form, stop at redirect_uri."""
    target = urlparse(redirect_uri)
    url, method, data = authorization_url, "GET", None
    pages: list[str] = []
    for _ in range(20):
        res = await http.request(method, url, data=data)
        if 300 <= res.status_code < 400:
            location = urljoin(url, res.headers["location"])
            loc = urlparse(location)
            if (loc.scheme, loc.netloc, loc.path) == (target.scheme, target.netloc, target.path):
                q = {k: v[0] for k, v in parse_qs(loc.query).items()}
                if "error" in q:
                    raise RuntimeError(f"authorization failed: {q['error']} {q.get('error_description', '')}")
                return AuthorizationCodeResult(code=q["code"], state=q.get("state"), iss=q.get("iss")), pages
            url, method, data = location, "GET", None
            continue
        if res.status_code != 200:
            raise RuntimeError(f"authorization flow: HTTP {res.status_code} at {url}: {res.text[:300]}")
        form = _FormParser()
        form.feed(res.text)
        if form.action is None and not form.fields:
            raise RuntimeError(f"authorization flow: no form at {url}: {res.text[:300]}")
        fields: dict[str, str] = {}
        for name, typ, value in form.fields:
            fields[name] = username if name == "login" else ("any-password" if typ == "password" else value)
        pages.append(fields.get("prompt", "form"))
        url = urljoin(url, form.action or url)
        if form.method == "post":
            method, data = "POST", fields
        else:
            url, method, data = f"{url.split('?')[0]}?{urlencode(fields)}", "GET", None
    raise RuntimeError("authorization flow: too many hops")


# ---------------------------------------------------------------- token storage and providers
class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class _ScopePolicy:
    """Mixin: --scope replaces the scope of the first token request; --deny-write strips
    files:write from every request. Everything else is the SDK's own scope selection."""

    initial_scope: str | None = None
    deny: set[str] = set()
    authorizations = 0

    async def _perform_authorization(self) -> httpx2.Request:  # type: ignore[override]
        meta = self.context.client_metadata  # type: ignore[attr-defined]
        scope = meta.scope
        if self.authorizations == 0 and self.initial_scope:
            scope = self.initial_scope
        kept = [s for s in (scope or "").split() if s not in self.deny]
        meta.scope = " ".join(kept) or None
        self.authorizations += 1
        return await super()._perform_authorization()  # type: ignore[misc]


class E2EClientCredentialsProvider(_ScopePolicy, ClientCredentialsOAuthProvider):
    pass


class E2EAuthCodeProvider(_ScopePolicy, OAuthClientProvider):
    pass


# ---------------------------------------------------------------- main flow
async def run(args: argparse.Namespace) -> None:
    mcp_url = urlparse(args.url)
    challenges: list[dict[str, Any]] = []
    token_requests = 0
    storage = MemoryStorage()

    def header_param(www: str, name: str) -> str | None:
        m = re.search(rf'{name}=(?:"([^"]*)"|([^\s,]+))', www)
        return (m.group(1) or m.group(2)) if m else None

    async def on_response(res: httpx2.Response) -> None:
        nonlocal token_requests
        req = res.request
        u = urlparse(str(req.url))
        if (u.netloc, u.path) == (mcp_url.netloc, mcp_url.path) and res.status_code in (401, 403):
            www = res.headers.get("www-authenticate", "")
            challenges.append({
                "status": res.status_code,
                "error": header_param(www, "error"),
                "scope": header_param(www, "scope"),
                "resource_metadata": header_param(www, "resource_metadata"),
            })
            emit({"step": "challenge", "ok": True, "status": res.status_code, "www_authenticate": www})
        elif u.path.startswith("/.well-known/oauth-protected-resource"):
            await res.aread()
            body = res.json() if res.status_code == 200 else {}
            emit({"step": "prm", "ok": res.status_code == 200, "url": str(req.url), "status": res.status_code,
                  "resource": body.get("resource"), "authorization_servers": body.get("authorization_servers")})
        elif "/.well-known/oauth-authorization-server" in u.path or "/.well-known/openid-configuration" in u.path:
            await res.aread()
            body = res.json() if res.status_code == 200 else {}
            emit({"step": "as-metadata", "ok": res.status_code == 200, "url": str(req.url),
                  "status": res.status_code, "issuer": body.get("issuer")})
        elif req.method == "POST" and b"grant_type=" in (req.content or b""):
            token_requests += 1
            form = {k: v[0] for k, v in parse_qs(req.content.decode()).items()}
            await res.aread()
            body = res.json() if res.headers.get("content-type", "").startswith("application/json") else {}
            extra = ({"granted_scope": body.get("scope"), "claims": jwt_claims(body.get("access_token"))}
                     if res.status_code == 200 else
                     {"error": body.get("error"), "error_description": body.get("error_description")})
            emit({"step": "token", "ok": res.status_code == 200, "status": res.status_code,
                  "grant_type": form.get("grant_type"), "requested_scope": form.get("scope"),
                  "resource": form.get("resource"), **extra})
        elif req.method == "POST" and re.search(r"/reg(ister)?$", u.path):
            await res.aread()
            body = res.json() if res.status_code in (200, 201) else {}
            emit({"step": "register", "ok": res.status_code in (200, 201), "status": res.status_code,
                  "client_id": body.get("client_id")})

    deny = {"files:write"} if args.deny_write else set()
    # The "browser" for the authorization-code flow: keeps the AS session cookies between
    # authorizations, like a real user agent would.
    browser = httpx2.AsyncClient(follow_redirects=False, timeout=30)
    if args.flow == "client_credentials":
        provider: OAuthClientProvider = E2EClientCredentialsProvider(
            server_url=args.url,
            storage=storage,
            client_id=args.client_id,
            client_secret=args.client_secret,
            issuer=args.expected_issuer,
        )
    else:
        redirect_uri = f"http://127.0.0.1:{20000 + secrets.randbelow(20000)}/callback"
        pending: dict[str, AuthorizationCodeResult] = {}

        async def redirect_handler(authorization_url: str) -> None:
            q = {k: v[0] for k, v in parse_qs(urlparse(authorization_url).query).items()}
            result, pages = await scripted_login(authorization_url, redirect_uri, args.username, browser)
            ok = step("authorize", bool(result.code) and result.state == q.get("state") and bool(result.iss),
                      scope=q.get("scope"), resource=q.get("resource"), pages=pages, iss=result.iss)
            if ok:
                pending["result"] = result

        async def callback_handler() -> AuthorizationCodeResult:
            if "result" not in pending:
                raise RuntimeError("no authorization code captured")
            return pending.pop("result")

        provider = E2EAuthCodeProvider(
            server_url=args.url,
            client_metadata=OAuthClientMetadata(
                client_name="mcp-authz e2e client (Python SDK)",
                redirect_uris=[redirect_uri],
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                token_endpoint_auth_method="none",
            ),
            storage=storage,
            redirect_handler=redirect_handler,
            callback_handler=callback_handler,
        )
    provider.initial_scope = args.scope  # type: ignore[attr-defined]
    provider.deny = deny  # type: ignore[attr-defined]

    def current_scopes() -> set[str]:
        return scopes_of(jwt_claims(storage.tokens.access_token if storage.tokens else None).get("scope"))

    def text_of(result: Any) -> str:
        return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")

    write_path = args.write_path or f"e2e-py-{args.flow}-{os.getpid()}.txt"

    http = httpx2.AsyncClient(
        auth=provider,
        timeout=httpx2.Timeout(30, read=300),
        event_hooks={"response": [on_response]},
    )
    async with browser, http:
        try:
            client_cm = Client(streamable_http_client(args.url, http_client=http), mode=args.mode)
            client = await client_cm.__aenter__()
        except Exception as e:  # noqa: BLE001
            step("connect", False, error=describe(e))
            return
        try:
            first = challenges[0] if challenges else None
            step("discovery", bool(first and first["status"] == 401 and first["resource_metadata"]),
                 first_challenge=first)
            t0 = jwt_claims(storage.tokens.access_token if storage.tokens else None)
            step("initial-token", not t0.get("opaque") and t0.get("aud") is not None and bool(scopes_of(t0.get("scope"))),
                 claims=t0)
            info = client.server_info
            step("connect", True, server=info.model_dump() if info else None, protocol=client.protocol_version)

            tools = [t.name for t in (await client.list_tools()).tools]
            step("tools/list", all(n in tools for n in ("list_files", "read_file", "write_file")), tools=tools)

            r = await client.call_tool("list_files", {})
            files = [f for f in text_of(r).split("\n") if f]
            step("tools/call list_files", not r.is_error and "hello.txt" in files, files=files)

            if args.listen:
                n = len(challenges)
                async with client.listen(tools_list_changed=True,
                                         resource_subscriptions=[args.listen]) as sub:
                    honored = sub.honored.model_dump(by_alias=True, exclude_none=True)
                ups = [c for c in challenges[n:] if c["status"] == 403]
                step("listen", honored.get("resourceSubscriptions") == [args.listen]
                     and honored.get("toolsListChanged") is True,
                     honored=honored, stepped_up=bool(ups), challenges=ups,
                     token_scope=" ".join(sorted(current_scopes())))

            had_read = "files:read" in current_scopes()
            n = len(challenges)
            r = await client.call_tool("read_file", {"path": "hello.txt"})
            ups = [c for c in challenges[n:] if c["status"] == 403 and c["error"] == "insufficient_scope"]
            after = current_scopes()
            step("tools/call read_file", not r.is_error and text_of(r) == "hello from mcp-authz",
                 text=text_of(r), stepped_up=bool(ups))
            if not had_read:
                step("step-up read", len(ups) == 1 and "files:read" in scopes_of(ups[0]["scope"])
                     and {"files:list", "files:read"} <= after,
                     challenge=ups[0] if ups else None, token_scope=" ".join(sorted(after)))

            n = len(challenges)
            if args.deny_write:
                try:
                    w = await client.call_tool("write_file", {"path": write_path, "content": "must not be written"})
                    refused: dict[str, Any] = {"error": f"call succeeded: {text_of(w)}", "is_error": w.is_error}
                except MCPError as e:
                    refused = {"error": describe(e)}
                ch = [c for c in challenges[n:] if c["status"] == 403]
                step("tools/call write_file (denied)",
                     refused.get("is_error") is None and len(ch) > 0
                     and all(c["error"] == "insufficient_scope" and "files:write" in scopes_of(c["scope"]) for c in ch)
                     and "files:write" not in current_scopes(),
                     refused=refused, challenges=ch, token_scope=" ".join(sorted(current_scopes())))
                r = await client.call_tool("list_files", {})
                files = [f for f in text_of(r).split("\n") if f]
                step("tools/call list_files (after denied write)", not r.is_error and write_path not in files, files=files)
            else:
                had_write = "files:write" in current_scopes()
                content = f"written by client.py {args.flow}"
                w = await client.call_tool("write_file", {"path": write_path, "content": content})
                ch = [c for c in challenges[n:] if c["status"] == 403]
                s = current_scopes()
                step("tools/call write_file", not w.is_error, text=text_of(w), stepped_up=bool(ch))
                if not had_write:
                    step("step-up write", len(ch) == 1 and "files:write" in scopes_of(ch[0]["scope"])
                         and {"files:list", "files:read", "files:write"} <= s,
                         challenge=ch[0] if ch else None, token_scope=" ".join(sorted(s)))
                r = await client.call_tool("list_files", {})
                files = [f for f in text_of(r).split("\n") if f]
                step("tools/call list_files (after write)", not r.is_error and write_path in files, files=files)
                back = await client.call_tool("read_file", {"path": write_path})
                step("tools/call read_file (written file)", text_of(back) == content, text=text_of(back))
            step("tokens", token_requests >= 1, token_requests=token_requests, challenges=len(challenges))
        finally:
            await client_cm.__aexit__(None, None, None)


def main() -> None:
    p = argparse.ArgumentParser(description="mcp-authz e2e client (Python SDK v2)")
    p.add_argument("--url", required=True)
    p.add_argument("--flow", required=True, choices=["client_credentials", "authorization_code"])
    p.add_argument("--scope")
    p.add_argument("--client-id", default="demo-cc")
    p.add_argument("--client-secret", default="demo-cc-secret")
    p.add_argument("--expected-issuer")
    p.add_argument("--deny-write", action="store_true")
    p.add_argument("--username", default="alice")
    p.add_argument("--write-path")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--mode", default="auto")
    p.add_argument("--listen")
    args = p.parse_args()
    if args.expected_issuer is None:
        # Without it the SDK warns (MCPDeprecationWarning) that the MCP server picks the AS.
        warnings.simplefilter("default")
    try:
        asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except asyncio.TimeoutError:
        step("timeout", False, seconds=args.timeout)
    except Exception as e:  # noqa: BLE001
        step("error", False, error=describe(e))
    emit({"done": True, "ok": ALL_OK})
    sys.exit(0 if ALL_OK else 1)


if __name__ == "__main__":
    main()
