"""The differential bed's Python upstream (tests/e2e/test_differential.py): the official Python
SDK's `MCPServer` and its Streamable HTTP Starlette app (case-sensitive routing; JSON by the
standard library), stateless with JSON responses, under uvicorn. It does no authorization; it
records what it *executed*, so the test can check that against the policy.

    python sdk_server.py --port P

Prints one line when listening: {"ready": true, "port": P}
Besides MCP at /mcp: GET /__executed, DELETE /__executed, GET /__arrived — the same shapes as
sdk-express-server.mjs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.types import Completion, PromptReference, ResourceTemplateReference
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

executed: list[dict] = []
arrived: list[dict] = []
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    app = build().streamable_http_app(json_response=True, stateless_http=True)

    async def executed_view(request: Request) -> Response:
        global executed, arrived
        if request.method == "DELETE":
            executed.clear()
            arrived.clear()
            return Response(status_code=204)
        return JSONResponse(executed)

    async def arrived_view(request: Request) -> Response:
        return JSONResponse(arrived)

    app.add_route("/__executed", executed_view, methods=["GET", "DELETE"])
    app.add_route("/__arrived", arrived_view, methods=["GET"])

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
        await inner(scope, receive, send)

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
