#!/usr/bin/env node
// as.mjs — a real OAuth 2.1 authorization server (oidc-provider 9.x), the IAM stand-in for
// mcp-authz end-to-end tests. In-memory state; every start is a clean slate with a fresh key.
//
//   node as.mjs --port P [--issuer URL] --resource URI [--resource URI ...]
//               [--scopes "files:read files:write files:list"] [--default-resource URI|none]
//               [--access-token-ttl SECONDS] [--access-token-format jwt|opaque] [--proxy]
//               [--dpop]
//
// --port 0 picks a free port; the ready line tells which one.
// Prints exactly one line to stdout when listening:
//   {"ready":true,"issuer":"http://127.0.0.1:P","port":P,"jwks_uri":"http://127.0.0.1:P/jwks","kid":"..."}
// Logs one line per request to stderr. Exits 0 on SIGTERM/SIGINT.
//
// What it implements (see README.md for the reasoning):
// - RFC 8707 resource indicators: tokens for a configured --resource are RS256 JWTs
//   (header typ "at+jwt", kid) with aud = the resource, scope, client_id, iss, sub, exp, iat, jti.
//   Unknown resources -> invalid_target.
// - No `resource` in a request: the token is for --default-resource (default: the first
//   --resource); with --default-resource none such a request gets an opaque token instead.
// - RFC 7591 DCR (open, at /reg), client_credentials, authorization_code + PKCE (S256),
//   refresh_token (issued when offline_access is granted), introspection, revocation.
// - devInteractions: any username/password logs in; consent is auto-granted for the requested
//   scopes and resource (loadExistingGrant), so login can be scripted with plain HTTP.
// - --access-token-format opaque: tokens for the resources are opaque (introspect them) instead
//   of JWTs. oidc-provider introspects and revokes only opaque tokens (a JWT gets
//   400 unsupported_token_type at both endpoints).
// - Static client for client credentials: demo-cc / demo-cc-secret (client_secret_basic),
//   allowed the resource scopes.
// - Static confidential client for the resource server's introspection calls (RFC 7662 §2.1):
//   mcp-authz-rs / mcp-authz-rs-secret (client_secret_basic).
// - --dpop: RFC 9449 DPoP at the token endpoint (oidc-provider's `features.dPoP`): a token
//   request with a `DPoP` proof gets a DPoP-bound token (`token_type: DPoP`, `cnf.jkt` in the
//   JWT). Without the flag the AS issues bearer tokens only.
import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

// oidc-provider prints an "unsupported runtime" notice on Node 20; it works. Keep stdout for
// the ready line only: the library's notices go to stderr via console.warn/console.info.
console.info = (...a) => console.error(...a);
console.log = (...a) => console.error(...a);

const { default: Provider, errors } = await import('oidc-provider');

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    issuer: { type: 'string' },
    resource: { type: 'string', multiple: true },
    scopes: { type: 'string', default: 'files:read files:write files:list' },
    'default-resource': { type: 'string' },
    'access-token-ttl': { type: 'string', default: '3600' },
    'access-token-format': { type: 'string', default: 'jwt' },
    proxy: { type: 'boolean', default: false },
    dpop: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});

function usage(code) {
  process.stderr.write(`usage: node as.mjs --port P [--issuer URL] --resource URI [--resource URI ...]
         [--scopes "files:read files:write files:list"] [--default-resource URI|none]
         [--access-token-ttl SECONDS] [--access-token-format jwt|opaque] [--proxy]
         [--dpop]\n`);
  process.exit(code);
}
if (args.help) usage(0);
if (args.port === undefined || !/^\d+$/.test(args.port)) usage(2);
if (!args.resource?.length) {
  process.stderr.write('as.mjs: at least one --resource is required\n');
  usage(2);
}

const resources = args.resource;
for (const r of resources) {
  if (!URL.canParse(r) || r.includes('#')) {
    process.stderr.write(`as.mjs: --resource must be an absolute URI without fragment: ${r}\n`);
    process.exit(2);
  }
}
const resourceScopes = [...new Set(args.scopes.split(/\s+/).filter(Boolean))];
const allScopes = ['openid', 'offline_access', ...resourceScopes];
const defaultResourceArg = args['default-resource'] ?? resources[0];
const defaultResource = defaultResourceArg === 'none' ? undefined : defaultResourceArg;
if (defaultResource !== undefined && !resources.includes(defaultResource)) {
  process.stderr.write('as.mjs: --default-resource must be one of the --resource values (or "none")\n');
  process.exit(2);
}
const accessTokenTtl = Number(args['access-token-ttl']);
if (!Number.isInteger(accessTokenTtl) || accessTokenTtl <= 0) usage(2);
const accessTokenFormat = args['access-token-format'];
if (!['jwt', 'opaque'].includes(accessTokenFormat)) usage(2);

// RS256 signing key generated at startup.
const kid = `e2e-${randomBytes(6).toString('hex')}`;
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };

// Listen first so --port 0 works: the issuer needs the real port.
let handler = (_req, res) => { res.statusCode = 503; res.end(); };
const server = createServer((req, res) => handler(req, res));
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(args.port), '127.0.0.1', resolve);
});
const port = server.address().port;
const issuer = (args.issuer ?? `http://127.0.0.1:${port}`).replace(/\/+$/, '');

const configuration = {
  clients: [{
    client_id: 'demo-cc',
    client_secret: 'demo-cc-secret',
    client_name: 'mcp-authz e2e client-credentials client',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: resourceScopes.join(' '),
  }, {
    client_id: 'mcp-authz-rs',
    client_secret: 'mcp-authz-rs-secret',
    client_name: 'mcp-authz introspection client',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [signingJwk] },
  scopes: allScopes,
  responseTypes: ['code'], // OAuth 2.1: no implicit / hybrid
  // Discovery advertises these; every client auth method a test might use.
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'none'],
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true, initialAccessToken: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    dPoP: { enabled: args.dpop },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf ?? defaultResource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator) => {
        if (!resources.includes(resourceIndicator)) {
          throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
        }
        return {
          scope: resourceScopes.join(' '),
          audience: resourceIndicator,
          accessTokenTTL: accessTokenTtl,
          accessTokenFormat,
          ...(accessTokenFormat === 'jwt' ? { jwt: { sign: { alg: 'RS256' } } } : {}),
        };
      },
    },
  },
  // DCR clients that send `scope` would be restricted to it by oidc-provider, and a later
  // step-up (files:list -> files:list files:read) would fail with invalid_scope. MCP SDKs
  // register with the first challenge's scope, so widen every dynamically registered client
  // to all configured scopes (what Casdoor-like IAMs effectively do).
  extraClientMetadata: {
    properties: ['x_e2e_scope_widening'],
    validator(ctx, key, _value, metadata) {
      if (key === 'x_e2e_scope_widening' && ctx?.oidc?.route === 'registration') {
        metadata.scope = allScopes.join(' ');
      }
    },
  },
  // Consent is auto-granted: the grant covers exactly the requested scopes and resource(s).
  async loadExistingGrant(ctx) {
    const { oidc } = ctx;
    const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
    let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
    if (!grant) {
      grant = new oidc.provider.Grant({ accountId: oidc.session.accountId, clientId: oidc.client.clientId });
    }
    const requested = [...oidc.requestParamScopes];
    const oidcScopes = requested.filter((s) => allScopes.includes(s));
    if (oidcScopes.length) grant.addOIDCScope(oidcScopes.join(' '));
    for (const [indicator, rs] of Object.entries(oidc.resourceServers)) {
      const s = requested.filter((x) => rs.scopes.has(x));
      if (s.length) grant.addResourceScope(indicator, s.join(' '));
    }
    await grant.save();
    return grant;
  },
  ttl: {
    AccessToken: accessTokenTtl,
    ClientCredentials: accessTokenTtl,
    Grant: 86400,
    Interaction: 600,
    RefreshToken: 86400,
    Session: 86400,
  },
  // Any login is a user; `sub` is the login name.
  async findAccount(_ctx, sub) {
    return { accountId: sub, async claims() { return { sub }; } };
  },
  // Random cookie signing keys per run; plain http on loopback works (cookies are only
  // marked Secure when the request is https).
  cookies: { keys: [randomBytes(32).toString('hex')] },
  renderError(ctx, out, _error) {
    ctx.type = 'json';
    ctx.body = out;
  },
};

const provider = new Provider(issuer, configuration);
provider.proxy = args.proxy;

provider.use(async (ctx, next) => {
  const t0 = process.hrtime.bigint();
  try {
    await next();
  } finally {
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    process.stderr.write(`as: ${ctx.method} ${ctx.path} -> ${ctx.status} (${ms.toFixed(1)} ms)\n`);
  }
});
for (const ev of ['grant.error', 'registration_create.error', 'server_error', 'authorization.error']) {
  provider.on(ev, (...a) => {
    const err = a.find((x) => x instanceof Error);
    process.stderr.write(`as: ${ev}: ${err ? `${err.name}: ${err.message} ${err.error_description ?? ''}` : ''}\n`);
  });
}

handler = provider.callback();

process.stdout.write(`${JSON.stringify({ ready: true, issuer, port, jwks_uri: `${issuer}/jwks`, kid })}\n`);

function shutdown(sig) {
  process.stderr.write(`as: ${sig}, exiting\n`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
