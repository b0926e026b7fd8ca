"""The differential bed's Python upstream (tests/e2e/test_differential.py): the official Python
SDK's `MCPServer` and its Streamable HTTP Starlette app (case-sensitive routing; JSON by the
standard library), stateless with JSON responses, under uvicorn. It does no authorization; it
records what it *executed*, so the test can check that against the policy.

    python sdk_server.py --port P [--root DIR]

Prints one line when listening: {"ready": true, "port": P}
Besides MCP at /mcp: GET /__executed, DELETE /__executed, GET /__arrived — the same shapes as
sdk-express-server.mjs — and GET/DELETE /__seen: every request received at /mcp, oldest first,
as {"method", "path", "headers": {lowercase name: value}, "body": parsed JSON or null}.

--root DIR: instead of the differential bed's tools, the files server of mcp-server.mjs (the
same tools, texts and hello.txt seed: list_files, read_file, write_file) plus a resource
file:///hello.txt, for tests/e2e/test_revisions.py. The SDK's stateless Streamable HTTP app is
dual-era: MCP-Protocol-Version 2026-07-28 (server/discover, subscriptions/listen, per-request
envelope, Mcp-Method/Mcp-Name checked against the body) and the initialize-handshake revisions
(2025-06-18, 2025-11-25) side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.types import Completion, PromptReference, ResourceTemplateReference
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

executed: list[dict] = []
arrived: list[dict] = []
seen: list[dict] = []
# The test sends one request at a time: the case id of the request being served is the one
# its handlers run under.
current_case: list[str | None] = [None]


def record(kind: str, target: str) -> None:
    executed.append({"case": current_case[0], "kind": kind, "target": target})


def build() -> MCPServer:
    mcp = MCPServer("mcp-authz-differential-py")

    def tool(name: str):
        def fn() -> str:
            record("tool", name)
            return name
        mcp.tool(name=name)(fn)

    for name in ("public_echo", "admin_wipe"):
        tool(name)

    def fixed(uri: str):
        def fn() -> str:
            record("resource", uri)
            return uri
        mcp.resource(uri, name=uri)(fn)

    for uri in ("file:///public/readme", "file:///secret/key", "config://secret/app"):
        fixed(uri)

    def template(name: str, tmpl: str):
        def fn(name: str) -> str:  # noqa: ARG001 - the template variable
            record("resource", f"template:{tmpl}")
            return tmpl
        mcp.resource(tmpl, name=name)(fn)

    template("public_docs", "file:///public/docs/{name}")
    template("secret_vault", "file:///secret/vault/{name}")

    def prompt(name: str):
        def fn(who: str) -> str:  # noqa: ARG001
            record("prompt", name)
            return name
        mcp.prompt(name=name)(fn)

    for name in ("greet", "admin_report"):
        prompt(name)

    # The SDK leaves completion dispatch to the server: this one looks the reference up exactly,
    # as the TypeScript SDK's McpServer does (a template by its URI template string).
    prompts = {"greet", "admin_report"}
    templates = {"file:///public/docs/{name}", "file:///secret/vault/{name}"}

    @mcp.completion()
    async def complete(ref, argument, context):  # noqa: ARG001
        if isinstance(ref, PromptReference) and ref.name in prompts:
            record("complete", f"prompt:{ref.name}")
        elif isinstance(ref, ResourceTemplateReference) and ref.uri in templates:
            record("complete", f"resource:{ref.uri}")
        else:
            return None
        return Completion(values=["x"])

    return mcp


def build_files(root: Path) -> MCPServer:
    """The files server of mcp-server.mjs, on the Python SDK."""
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    hello = root / "hello.txt"
    if not hello.exists():
        hello.write_text("hello from mcp-authz")
    mcp = MCPServer("mcp-authz-e2e-files-py")

    def inside(p: str) -> Path:
        if not isinstance(p, str) or not p or "\0" in p or os.path.isabs(p):
            raise ValueError("path must be a non-empty relative path")
        full = (root / p).resolve()
        if full != root and root not in full.parents:
            raise ValueError("path escapes root")
        return full

    @mcp.tool(name="list_files", description="List the names of the files in the scratch folder")
    def list_files() -> str:
        record("tool", "list_files")
        return "\n".join(sorted(e.name for e in root.iterdir() if e.is_file()))

    @mcp.tool(name="read_file", description="Read a UTF-8 text file from the scratch folder")
    def read_file(path: str) -> str:
        record("tool", "read_file")
        return inside(path).read_text()

    @mcp.tool(name="write_file", description="Write a UTF-8 text file into the scratch folder")
    def write_file(path: str, content: str) -> str:
        record("tool", "write_file")
        full = inside(path)
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(content)
        return f"wrote {len(content.encode())} bytes to {path}"

    @mcp.resource("file:///hello.txt", name="hello")
    def hello_resource() -> str:
        record("resource", "file:///hello.txt")
        return hello.read_text()

    return mcp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--root", type=Path)
    a = ap.parse_args()
    server = build_files(a.root) if a.root else build()
    app = server.streamable_http_app(json_response=True, stateless_http=True)

    async def executed_view(request: Request) -> Response:
        global executed, arrived
        if request.method == "DELETE":
            executed.clear()
            arrived.clear()
            return Response(status_code=204)
        return JSONResponse(executed)

    async def arrived_view(request: Request) -> Response:
        return JSONResponse(arrived)

    async def seen_view(request: Request) -> Response:
        if request.method == "DELETE":
            seen.clear()
            return Response(status_code=204)
        return JSONResponse(seen)

    app.add_route("/__executed", executed_view, methods=["GET", "DELETE"])
    app.add_route("/__arrived", arrived_view, methods=["GET"])
    app.add_route("/__seen", seen_view, methods=["GET", "DELETE"])

    inner = app

    async def recorder(scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            case = headers.get(b"x-case-id")
            current_case[0] = case.decode() if case is not None else None
            if not scope["path"].startswith("/__"):
                raw = scope.get("raw_path") or scope["path"].encode()
                arrived.append({"case": current_case[0], "method": scope["method"],
                                "path": raw.decode(errors="replace")})
                receive = _seen_recorder(scope, receive, raw.decode(errors="replace"))
        await inner(scope, receive, send)

    def _seen_recorder(scope, receive, path: str):
        """Record the request (headers as received, body once complete) in /__seen."""
        entry = {"method": scope["method"], "path": path,
                 "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
                 "body": None}
        seen.append(entry)
        chunks: list[bytes] = []

        async def wrapped():
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    try:
                        entry["body"] = json.loads(b"".join(chunks))
                    except ValueError:
                        entry["body"] = b"".join(chunks).decode(errors="replace")
            return message

        return wrapped

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", a.port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(recorder, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)

    async def run():
        serve = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.02)
        sys.stdout.write(json.dumps({"ready": True, "port": port}) + "\n")
        sys.stdout.flush()
        await serve

    asyncio.run(run())


if __name__ == "__main__":
    main()
