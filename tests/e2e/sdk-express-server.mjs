#!/usr/bin/env node
// sdk-express-server.mjs — the differential bed's TypeScript upstream (tests/e2e/test_differential.py):
// the official SDK's McpServer on its own Express app (`createMcpExpressApp`, Express 5:
// case-insensitive, trailing-slash-tolerant routing; body-parser JSON with gzip/deflate/br
// inflation), stateless Streamable HTTP with JSON responses. It does no authorization; it
// records what it *executed*, so the test can check that against the policy.
//
//   node sdk-express-server.mjs --port P
//
// Prints one line when listening: {"ready":true,"port":P}
// Routes (besides MCP at `app.all('/mcp')`, which Express also dispatches /MCP and /mcp/ to):
//   GET    /__executed   [{"case": x-case-id header, "kind": tool|resource|prompt|complete,
//                          "target": what was executed}, ...] since the last DELETE
//   DELETE /__executed   clears it
//   GET    /__arrived    [{"case", "method", "path"}] every request that reached the app
// Every other path answers 404 after being recorded in /__arrived.
import { parseArgs } from 'node:util';
import { McpServer, ResourceTemplate } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { completable } from '@modelcontextprotocol/sdk/server/completable.js';
import { z } from 'zod';

const { values: args } = parseArgs({ options: { port: { type: 'string', default: '0' } }, strict: true });

let executed = [];
let arrived = [];
// Requests are sent one at a time by the test, so the case id of the request being served is
// the one its handlers run under.
let currentCase = null;
const record = (kind, target) => executed.push({ case: currentCase, kind, target });
const text = (t) => ({ content: [{ type: 'text', text: t }] });

function buildServer() {
  const server = new McpServer({ name: 'mcp-authz-differential-ts', version: '1.0.0' });
  for (const name of ['public_echo', 'admin_wipe']) {
    server.registerTool(name, { description: name, inputSchema: {} }, async () => {
      record('tool', name);
      return text(name);
    });
  }
  for (const uri of ['file:///public/readme', 'file:///secret/key', 'config://secret/app']) {
    server.registerResource(uri, uri, { mimeType: 'text/plain' }, async (u) => {
      record('resource', uri);
      return { contents: [{ uri: u.href, text: uri }] };
    });
  }
  for (const [name, tmpl] of [['public_docs', 'file:///public/docs/{name}'],
    ['secret_vault', 'file:///secret/vault/{name}']]) {
    server.registerResource(name, new ResourceTemplate(tmpl, {
      list: undefined,
      complete: { name: async (value) => { record('complete', `resource:${tmpl}`); return [`${value}x`]; } },
    }), { mimeType: 'text/plain' }, async (u) => {
      record('resource', `template:${tmpl}`);
      return { contents: [{ uri: u.href, text: tmpl }] };
    });
  }
  for (const name of ['greet', 'admin_report']) {
    server.registerPrompt(name, {
      description: name,
      argsSchema: { who: completable(z.string(), async (value) => { record('complete', `prompt:${name}`); return [`${value}x`]; }) },
    }, async () => {
      record('prompt', name);
      return { messages: [{ role: 'user', content: { type: 'text', text: name } }] };
    });
  }
  return server;
}

const app = createMcpExpressApp();
app.use((req, res, next) => {
  currentCase = req.headers['x-case-id'] ?? null;
  // /__ paths are the harness's own, read directly (not through Envoy).
  if (!req.path.startsWith('/__')) arrived.push({ case: currentCase, method: req.method, path: req.originalUrl });
  next();
});
app.get('/__executed', (req, res) => res.json(executed));
app.delete('/__executed', (req, res) => { executed = []; arrived = []; res.status(204).end(); });
app.get('/__arrived', (req, res) => res.json(arrived));
app.all('/mcp', async (req, res) => {
  const server = buildServer();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  res.on('close', () => { transport.close(); server.close(); });
  try {
    await server.connect(transport);
    await transport.handleRequest(req, res, req.body);
  } catch (e) {
    if (!res.headersSent) res.status(500).json({ error: String(e) });
  }
});
// body-parser errors (bad JSON, unsupported encoding) answer as JSON, not an HTML page.
app.use((err, req, res, next) => {
  res.status(err.status ?? 500).json({ error: err.type ?? 'error' });
});

const listener = app.listen(Number(args.port), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ ready: true, port: listener.address().port }) + '\n');
});
