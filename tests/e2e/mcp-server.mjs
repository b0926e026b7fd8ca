#!/usr/bin/env node
// mcp-server.mjs — a real MCP server on the official TypeScript SDK (McpServer +
// StreamableHTTPServerTransport, stateless, JSON responses) over plain node:http. It does no
// authorization itself: it is the upstream that mcp-authz + Envoy protect.
//
//   node mcp-server.mjs --port P --root DIR [--stateful]
//
// --stateful: sessions as the SDK's own example server keeps them (Mcp-Session-Id from
// randomUUID, one transport per session, SSE responses, GET /mcp standalone stream, DELETE
// /mcp ends the session) with the SDK's InMemoryEventStore, so GET with Last-Event-ID replays a
// stream. Like the SDK servers it binds sessions to nothing but their id: exactly what
// mcp-authz's session binding must make safe.
//
// --port 0 picks a free port. DIR is created if missing and seeded with hello.txt
// ("hello from mcp-authz"). Prints exactly one line to stdout when listening:
//   {"ready":true,"port":P,"root":"/abs/DIR","endpoint":"http://127.0.0.1:P/mcp"}
//
// Routes:
//   POST /mcp          MCP Streamable HTTP (GET/DELETE /mcp answer 405: stateless server;
//                      with --stateful GET/DELETE /mcp serve the session, unknown ids 404)
//   GET  /__seen       JSON list of the last 50 requests it received (any path):
//                      [{"method","path","headers":{lowercase name: value}}, ...] oldest first
//   DELETE /__seen     clears that list
// Tools: list_files {} -> names in root; read_file {path}; write_file {path, content}.
// Paths must stay inside root (no "..", no absolute paths, no symlink escapes).
import { createServer } from 'node:http';
import { mkdir, readdir, readFile, writeFile, realpath, lstat } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { InMemoryEventStore } from '@modelcontextprotocol/sdk/examples/shared/inMemoryEventStore.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { randomUUID } from 'node:crypto';
import { z } from 'zod';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    root: { type: 'string' },
    stateful: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});
if (args.help || args.port === undefined || !/^\d+$/.test(args.port) || !args.root) {
  process.stderr.write('usage: node mcp-server.mjs --port P --root DIR [--stateful]\n');
  process.exit(args.help ? 0 : 2);
}

await mkdir(args.root, { recursive: true });
const root = await realpath(args.root);
try {
  await lstat(path.join(root, 'hello.txt'));
} catch {
  await writeFile(path.join(root, 'hello.txt'), 'hello from mcp-authz');
}

const MAX_SEEN = 50;
const MAX_BODY = 1024 * 1024;
const seen = [];

// Resolve a client-supplied relative path inside root, or throw.
async function resolveInRoot(p) {
  if (typeof p !== 'string' || p === '' || p.includes('\0') || path.isAbsolute(p)) {
    throw new Error('path must be a non-empty relative path');
  }
  const full = path.resolve(root, p);
  if (full !== root && !full.startsWith(root + path.sep)) throw new Error('path escapes root');
  // Symlinks must not lead outside either: check the real path of the deepest existing part.
  let probe = full;
  for (;;) {
    try {
      const real = await realpath(probe);
      if (real !== root && !real.startsWith(root + path.sep)) throw new Error('path escapes root');
      break;
    } catch (e) {
      if (e.code !== 'ENOENT') throw e;
      probe = path.dirname(probe);
    }
  }
  return full;
}

const text = (t) => ({ content: [{ type: 'text', text: t }] });
const fail = (t) => ({ content: [{ type: 'text', text: t }], isError: true });

function buildServer() {
  const server = new McpServer({ name: 'mcp-authz-e2e-files', version: '1.0.0' });
  server.registerTool('list_files', {
    title: 'List files',
    description: 'List the names of the files in the scratch folder',
    inputSchema: {},
    annotations: { readOnlyHint: true },
  }, async () => {
    const names = (await readdir(root, { withFileTypes: true })).filter((d) => d.isFile()).map((d) => d.name).sort();
    return text(names.join('\n'));
  });
  server.registerTool('read_file', {
    title: 'Read file',
    description: 'Read a UTF-8 text file from the scratch folder',
    inputSchema: { path: z.string().describe('path relative to the scratch folder') },
    annotations: { readOnlyHint: true },
  }, async ({ path: p }) => {
    try {
      return text(await readFile(await resolveInRoot(p), 'utf8'));
    } catch (e) {
      return fail(`read_file failed: ${e.message}`);
    }
  });
  server.registerTool('write_file', {
    title: 'Write file',
    description: 'Write a UTF-8 text file into the scratch folder',
    inputSchema: { path: z.string(), content: z.string() },
    annotations: { destructiveHint: true },
  }, async ({ path: p, content }) => {
    try {
      const full = await resolveInRoot(p);
      await mkdir(path.dirname(full), { recursive: true });
      await writeFile(full, content);
      return text(`wrote ${Buffer.byteLength(content)} bytes to ${p}`);
    } catch (e) {
      return fail(`write_file failed: ${e.message}`);
    }
  });
  return server;
}

function sendJson(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

async function readBody(req) {
  const chunks = [];
  let n = 0;
  for await (const c of req) {
    n += c.length;
    if (n > MAX_BODY) throw Object.assign(new Error('body too large'), { status: 413 });
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

const http = createServer(async (req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  const rec = { method: req.method, path: req.url, headers: { ...req.headers } };
  if (url.pathname !== '/__seen') {
    seen.push(rec);
    if (seen.length > MAX_SEEN) seen.splice(0, seen.length - MAX_SEEN);
  }
  process.stderr.write(`mcp: ${req.method} ${req.url}\n`);
  try {
    if (url.pathname === '/__seen') {
      if (req.method === 'GET') return sendJson(res, 200, seen);
      if (req.method === 'DELETE') { seen.length = 0; return sendJson(res, 200, []); }
      return sendJson(res, 405, { error: 'method not allowed' });
    }
    if (url.pathname !== '/mcp') return sendJson(res, 404, { error: 'not found' });
    if (args.stateful) return await stateful(req, res, rec);
    if (req.method !== 'POST') {
      // Stateless server: no standalone SSE stream, no sessions to delete.
      res.writeHead(405, { allow: 'POST' });
      return res.end();
    }
    const raw = await readBody(req);
    let body;
    try {
      body = JSON.parse(raw);
    } catch {
      return sendJson(res, 400, { jsonrpc: '2.0', error: { code: -32700, message: 'Parse error' }, id: null });
    }
    rec.body = body; // kept for debugging; /__seen shows it
    const server = buildServer();
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => { transport.close(); server.close(); });
    await server.connect(transport);
    await transport.handleRequest(req, res, body);
  } catch (e) {
    process.stderr.write(`mcp: error: ${e.stack ?? e}\n`);
    if (!res.headersSent) sendJson(res, e.status ?? 500, { error: e.message });
    else res.end();
  }
});

// --stateful: session id -> transport (the SDK example server's shape).
const sessions = new Map();
const rpcError = (res, status, message) =>
  sendJson(res, status, { jsonrpc: '2.0', error: { code: -32000, message }, id: null });

async function stateful(req, res, rec) {
  const sid = req.headers['mcp-session-id'];
  if (req.method === 'POST') {
    const raw = await readBody(req);
    let body;
    try {
      body = JSON.parse(raw);
    } catch {
      return sendJson(res, 400, { jsonrpc: '2.0', error: { code: -32700, message: 'Parse error' }, id: null });
    }
    rec.body = body;
    if (sid !== undefined) {
      const transport = sessions.get(sid);
      if (!transport) return rpcError(res, 404, 'Session not found');
      return await transport.handleRequest(req, res, body);
    }
    if (!isInitializeRequest(body)) return rpcError(res, 400, 'Bad Request: No valid session ID provided');
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      eventStore: new InMemoryEventStore(),
      onsessioninitialized: (id) => { sessions.set(id, transport); },
    });
    transport.onclose = () => { if (transport.sessionId) sessions.delete(transport.sessionId); };
    await buildServer().connect(transport);
    return await transport.handleRequest(req, res, body);
  }
  if (req.method === 'GET' || req.method === 'DELETE') {
    if (sid === undefined) return rpcError(res, 400, 'Bad Request: Mcp-Session-Id header is required');
    const transport = sessions.get(sid);
    if (!transport) return rpcError(res, 404, 'Session not found');
    return await transport.handleRequest(req, res);
  }
  res.writeHead(405, { allow: 'GET, POST, DELETE' });
  return res.end();
}

await new Promise((resolve, reject) => {
  http.once('error', reject);
  http.listen(Number(args.port), '127.0.0.1', resolve);
});
const { port } = http.address();
process.stdout.write(`${JSON.stringify({ ready: true, port, root, endpoint: `http://127.0.0.1:${port}/mcp` })}\n`);

function shutdown(sig) {
  process.stderr.write(`mcp: ${sig}, exiting\n`);
  http.close(() => process.exit(0));
  http.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
