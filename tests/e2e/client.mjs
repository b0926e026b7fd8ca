#!/usr/bin/env node
// client.mjs — end-to-end MCP client on the official TypeScript SDK (1.32.x). Given only the
// MCP URL it discovers everything from the 401 challenge, gets a token, calls tools, follows
// 403 insufficient_scope step-ups, and checks every step.
//
//   node client.mjs --url http://127.0.0.1:10000/mcp --flow client_credentials|authorization_code
//                   [--scope "files:list"] [--client-id demo-cc --client-secret demo-cc-secret]
//                   [--expected-issuer URL] [--deny-write] [--username alice]
//                   [--write-path NAME] [--timeout SECONDS]
//
// Output: one JSON line per step on stdout, e.g. {"step":"tools/list","ok":true,...}, ending
// with {"done":true,"ok":true}. Exit 0 only if every check passed; 1 on any deviation; 2 on
// bad usage. SDK diagnostics go to stderr.
//
// Steps and checks:
//   1. connect: the first MCP request must get 401 with resource_metadata (and scope) in
//      WWW-Authenticate; the SDK then fetches PRM and AS metadata, registers (DCR, for
//      authorization_code) and gets a token for the PRM `resource`.
//      authorization_code: devInteractions login/consent is scripted with plain fetch
//      (devlogin.mjs); the code is taken from the redirect to a loopback redirect_uri that is
//      never contacted.
//   2. tools/list must list list_files, read_file, write_file.
//   3. tools/call list_files must show hello.txt.
//   4. tools/call read_file {path:"hello.txt"} must return "hello from mcp-authz". If the token
//      lacks files:read, a 403 insufficient_scope naming files:read must come first, and the
//      re-authorized token must carry files:list AND files:read.
//   5. tools/call write_file: without --deny-write it must succeed (after a step-up to
//      files:write if needed) and the file must then be listed. With --deny-write the client
//      never asks for files:write (as a user refusing consent would): the call must be refused
//      with 403 insufficient_scope naming files:write, and the file must not appear.
//
// Every token obtained is printed (decoded claims, never the token itself) as a "token" step.
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError, extractWWWAuthenticateParams } from '@modelcontextprotocol/sdk/client/auth.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';
import { scriptedLogin, CookieJar } from './devlogin.mjs';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    flow: { type: 'string' },
    scope: { type: 'string' },
    'client-id': { type: 'string', default: 'demo-cc' },
    'client-secret': { type: 'string', default: 'demo-cc-secret' },
    'expected-issuer': { type: 'string' },
    'deny-write': { type: 'boolean', default: false },
    username: { type: 'string', default: 'alice' },
    'write-path': { type: 'string' },
    timeout: { type: 'string', default: '60' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});
if (args.help || !args.url || !['client_credentials', 'authorization_code'].includes(args.flow)) {
  process.stderr.write(`usage: node client.mjs --url URL --flow client_credentials|authorization_code
       [--scope "files:list"] [--client-id demo-cc --client-secret demo-cc-secret]
       [--expected-issuer URL] [--deny-write] [--username alice] [--write-path NAME] [--timeout S]\n`);
  process.exit(args.help ? 0 : 2);
}

// ---------------------------------------------------------------- output and checks
let allOk = true;
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
function step(name, ok, extra = {}) {
  if (!ok) allOk = false;
  emit({ step: name, ok, ...extra });
  return ok;
}
function finish() {
  emit({ done: true, ok: allOk });
  process.exit(allOk ? 0 : 1);
}
setTimeout(() => { step('timeout', false, { seconds: Number(args.timeout) }); finish(); }, Number(args.timeout) * 1000).unref();

const scopesOf = (s) => new Set((s ?? '').split(' ').filter(Boolean));
const denyScopes = args['deny-write'] ? new Set(['files:write']) : new Set();
const withoutDenied = (s) => [...scopesOf(s)].filter((x) => !denyScopes.has(x)).join(' ') || undefined;
function jwtClaims(token) {
  const parts = String(token).split('.');
  if (parts.length !== 3) return { opaque: true };
  const c = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  return { iss: c.iss, aud: c.aud, sub: c.sub, client_id: c.client_id, scope: c.scope, exp: c.exp };
}

// ---------------------------------------------------------------- HTTP tracing
// Every request the SDK makes (MCP and OAuth) goes through this fetch. It reports the
// challenges, metadata, registration and token responses as steps, and remembers the last
// challenge so the client-credentials provider can request the challenged scope.
const mcpUrl = new URL(args.url);
const challenges = [];
let lastChallenge;
let tokenResponses = 0;
const tracingFetch = async (input, init) => {
  const req = new Request(input, init);
  const url = new URL(req.url);
  const reqBody = init?.body instanceof URLSearchParams ? init.body : undefined;
  const res = await fetch(input, init);
  const www = res.headers.get('www-authenticate');
  if (url.origin === mcpUrl.origin && url.pathname === mcpUrl.pathname && (res.status === 401 || res.status === 403)) {
    const p = extractWWWAuthenticateParams(res);
    lastChallenge = { status: res.status, error: p.error, scope: p.scope, resource_metadata: p.resourceMetadataUrl?.href };
    challenges.push(lastChallenge);
    emit({ step: 'challenge', ok: true, status: res.status, www_authenticate: www });
  } else if (url.pathname.startsWith('/.well-known/oauth-protected-resource')) {
    const body = res.ok ? await res.clone().json().catch(() => undefined) : undefined;
    emit({ step: 'prm', ok: res.ok, url: url.href, status: res.status, resource: body?.resource, authorization_servers: body?.authorization_servers });
  } else if (url.pathname.startsWith('/.well-known/oauth-authorization-server') || url.pathname.includes('/.well-known/openid-configuration')) {
    const body = res.ok ? await res.clone().json().catch(() => undefined) : undefined;
    emit({ step: 'as-metadata', ok: res.ok, url: url.href, status: res.status, issuer: body?.issuer });
  } else if (req.method === 'POST' && reqBody?.has('grant_type')) {
    tokenResponses += 1;
    const body = await res.clone().json().catch(() => ({}));
    emit({
      step: 'token', ok: res.ok, status: res.status, grant_type: reqBody.get('grant_type'),
      requested_scope: reqBody.get('scope') ?? undefined, resource: reqBody.get('resource') ?? undefined,
      ...(res.ok ? { granted_scope: body.scope, claims: jwtClaims(body.access_token) } : { error: body.error, error_description: body.error_description }),
    });
  } else if (req.method === 'POST' && /\/reg(ister)?$/.test(url.pathname)) {
    const body = await res.clone().json().catch(() => ({}));
    emit({ step: 'register', ok: res.ok, status: res.status, client_id: body.client_id, error: body.error });
  }
  return res;
};

// ---------------------------------------------------------------- auth providers
// TS SDK 1.32's ClientCredentialsProvider always requests the scope it was constructed with
// (fetchToken passes clientMetadata.scope, never the challenged one), so a 403
// insufficient_scope would loop. This subclass requests the scope of the last challenge
// instead (the initial --scope wins for the very first token).
class ChallengeScopedClientCredentialsProvider extends ClientCredentialsProvider {
  constructor(opts, initialScope) {
    super(opts);
    this.initialScope = initialScope;
    this.issued = 0;
  }

  prepareTokenRequest(scope) {
    let s = scope;
    if (this.issued === 0 && this.initialScope) s = this.initialScope;
    else if (lastChallenge?.scope) s = lastChallenge.scope;
    this.issued += 1;
    return super.prepareTokenRequest(withoutDenied(s));
  }
}

// Authorization code + PKCE with a public DCR client. redirectToAuthorization scripts the
// devInteractions login/consent at once and keeps the code; the SDK then throws
// UnauthorizedError, and withAuth() below finishes with transport.finishAuth(code).
class ScriptedAuthCodeProvider {
  constructor({ username, initialScope }) {
    this._redirectUrl = `http://127.0.0.1:${20000 + Math.floor(Math.random() * 20000)}/callback`;
    this.username = username;
    this.initialScope = initialScope;
    this.authorizations = 0;
    this.pendingCode = undefined;
    this.jar = new CookieJar(); // the "browser": its AS session survives between authorizations
  }

  get redirectUrl() { return this._redirectUrl; }

  get clientMetadata() {
    return {
      client_name: 'mcp-authz e2e client (TypeScript SDK)',
      redirect_uris: [this._redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }

  state() { this._state = randomBytes(16).toString('base64url'); return this._state; }
  clientInformation() { return this._client; }
  saveClientInformation(info) { this._client = info; }
  tokens() { return this._tokens; }
  saveTokens(t) { this._tokens = t; }
  saveCodeVerifier(v) { this._verifier = v; }
  codeVerifier() { return this._verifier; }
  discoveryState() { return this._discovery; }
  saveDiscoveryState(s) { this._discovery = s; }
  invalidateCredentials(what) {
    if (what === 'all' || what === 'client') this._client = undefined;
    if (what === 'all' || what === 'tokens') this._tokens = undefined;
    if (what === 'all' || what === 'verifier') this._verifier = undefined;
    if (what === 'all' || what === 'discovery') this._discovery = undefined;
  }

  async redirectToAuthorization(authorizationUrl) {
    const url = new URL(authorizationUrl);
    const sdkScope = url.searchParams.get('scope') ?? undefined;
    let scope = sdkScope;
    if (this.authorizations === 0 && this.initialScope) scope = this.initialScope;
    scope = withoutDenied(scope);
    if (scope) url.searchParams.set('scope', scope); else url.searchParams.delete('scope');
    this.authorizations += 1;
    const r = await scriptedLogin(url, { redirectUri: this._redirectUrl, username: this.username, jar: this.jar });
    const ok = step('authorize', Boolean(r.code) && r.state === this._state && Boolean(r.iss), {
      scope, sdk_scope: sdkScope, resource: url.searchParams.get('resource'), pages: r.pages, iss: r.iss,
    });
    if (ok) this.pendingCode = r.code;
  }
}

const provider = args.flow === 'client_credentials'
  ? new ChallengeScopedClientCredentialsProvider({
    clientId: args['client-id'],
    clientSecret: args['client-secret'],
    scope: undefined,
    ...(args['expected-issuer'] ? { expectedIssuer: args['expected-issuer'] } : {}),
  }, args.scope)
  : new ScriptedAuthCodeProvider({ username: args.username, initialScope: args.scope });

// ---------------------------------------------------------------- MCP session
let transport;
let client;
const newTransport = () => new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider, fetch: tracingFetch });

// Runs fn; if the SDK stopped for an interactive authorization (auth-code flow), finish it
// with the captured code and run fn once more.
async function withAuth(fn, onRetry) {
  try {
    return await fn();
  } catch (e) {
    if (!(e instanceof UnauthorizedError) || !provider.pendingCode) throw e;
    const code = provider.pendingCode;
    provider.pendingCode = undefined;
    await transport.finishAuth(code);
    if (onRetry) await onRetry();
    return await fn();
  }
}

async function connect() {
  transport = newTransport();
  client = new Client({ name: 'mcp-authz-e2e-ts', version: '1.0.0' });
  // A failed connect closes the transport, so the retry needs fresh ones.
  await withAuth(() => client.connect(transport), async () => {
    transport = newTransport();
    client = new Client({ name: 'mcp-authz-e2e-ts', version: '1.0.0' });
  });
}

const toolText = (r) => (r.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');
const currentScopes = () => scopesOf(jwtClaims(provider.tokens()?.access_token ?? '').scope);
const writePath = args['write-path'] ?? `e2e-ts-${args.flow}-${process.pid}.txt`;

async function listFiles(label) {
  const r = await withAuth(() => client.callTool({ name: 'list_files', arguments: {} }));
  const files = toolText(r).split('\n').filter(Boolean);
  return { r, files, label };
}

async function main() {
  // 1. connect (401 -> discovery -> token)
  try {
    await connect();
  } catch (e) {
    step('connect', false, { error: String(e) });
    return;
  }
  const first = challenges[0];
  step('discovery', first?.status === 401 && Boolean(first.resource_metadata), {
    first_challenge: first, note: !first ? 'no 401 challenge seen' : (first.scope ? undefined : 'challenge had no scope'),
  });
  const t0 = jwtClaims(provider.tokens()?.access_token ?? '');
  step('initial-token', !t0.opaque && t0.aud !== undefined && scopesOf(t0.scope).size > 0, { claims: t0 });
  step('connect', true, { server: client.getServerVersion(), protocol: transport.protocolVersion });

  // 2. tools/list
  const tools = (await withAuth(() => client.listTools())).tools.map((t) => t.name);
  step('tools/list', ['list_files', 'read_file', 'write_file'].every((n) => tools.includes(n)), { tools });

  // 3. list_files
  const l1 = await listFiles('list_files');
  step('tools/call list_files', !l1.r.isError && l1.files.includes('hello.txt'), { files: l1.files });

  // 4. read_file, stepping up to files:read if needed
  const hadRead = currentScopes().has('files:read');
  const nChallenges = challenges.length;
  const r = await withAuth(() => client.callTool({ name: 'read_file', arguments: { path: 'hello.txt' } }));
  const stepUps = challenges.slice(nChallenges).filter((c) => c.status === 403 && c.error === 'insufficient_scope');
  const after = currentScopes();
  step('tools/call read_file', !r.isError && toolText(r) === 'hello from mcp-authz', { text: toolText(r), stepped_up: stepUps.length > 0 });
  if (!hadRead) {
    step('step-up read', stepUps.length === 1 && scopesOf(stepUps[0].scope).has('files:read')
      && after.has('files:list') && after.has('files:read'), { challenge: stepUps[0], token_scope: [...after].join(' ') });
  }

  // 5. write_file
  const nc = challenges.length;
  if (args['deny-write']) {
    let refused;
    try {
      const w = await withAuth(() => client.callTool({ name: 'write_file', arguments: { path: writePath, content: 'must not be written' } }));
      refused = { error: `call succeeded: ${toolText(w)}` };
    } catch (e) {
      refused = { status: e instanceof StreamableHTTPError ? e.code : undefined, error: String(e.message ?? e) };
    }
    const ch = challenges.slice(nc).filter((c) => c.status === 403);
    step('tools/call write_file (denied)', refused.status === 403 && ch.length > 0
      && ch.every((c) => c.error === 'insufficient_scope' && scopesOf(c.scope).has('files:write'))
      && !currentScopes().has('files:write'), { refused, challenges: ch, token_scope: [...currentScopes()].join(' ') });
    const l2 = await listFiles('after denied write');
    step('tools/call list_files (after denied write)', !l2.r.isError && !l2.files.includes(writePath), { files: l2.files });
  } else {
    const hadWrite = currentScopes().has('files:write');
    const w = await withAuth(() => client.callTool({ name: 'write_file', arguments: { path: writePath, content: `written by client.mjs ${args.flow}` } }));
    const ch = challenges.slice(nc).filter((c) => c.status === 403);
    const s = currentScopes();
    step('tools/call write_file', !w.isError, { text: toolText(w), stepped_up: ch.length > 0 });
    if (!hadWrite) {
      step('step-up write', ch.length === 1 && scopesOf(ch[0].scope).has('files:write')
        && ['files:list', 'files:read', 'files:write'].every((x) => s.has(x)), { challenge: ch[0], token_scope: [...s].join(' ') });
    }
    const l2 = await listFiles('after write');
    step('tools/call list_files (after write)', !l2.r.isError && l2.files.includes(writePath), { files: l2.files });
    const back = await withAuth(() => client.callTool({ name: 'read_file', arguments: { path: writePath } }));
    step('tools/call read_file (written file)', toolText(back) === `written by client.mjs ${args.flow}`, { text: toolText(back) });
  }
  step('tokens', tokenResponses >= 1, { token_requests: tokenResponses, challenges: challenges.length });
  await client.close().catch(() => {});
}

main().then(finish, (e) => {
  step('error', false, { error: String(e?.stack ?? e) });
  finish();
});
