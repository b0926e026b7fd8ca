#!/usr/bin/env node
// as-check.mjs — self-test of a running as.mjs (no MCP server or gateway needed).
//
//   node as-check.mjs --issuer http://127.0.0.1:P --resource URI [--scopes "files:read files:write files:list"]
//
// Checks, one JSON line each, then {"done":true,"ok":...}; exit 0 only if all pass:
//   - /.well-known/oauth-authorization-server and /.well-known/openid-configuration both
//     answer 200 with the same issuer; JWKS holds an RS256 signing key with a kid;
//   - client_credentials (demo-cc) with `resource`: RS256 JWT, header typ at+jwt + known kid,
//     signature valid, iss/aud/client_id right, requested files:* scopes kept in `scope`;
//   - unknown resource -> 400 invalid_target; no `resource` -> token for the default resource;
//   - DCR + authorization code + PKCE (scripted devInteractions login), with offline_access:
//     access token for the resource + refresh token; refresh_token grant returns a token with
//     the same aud and scope; a second authorization asking for more scopes (step-up) returns
//     a token carrying the old and the new scopes.
import { createHash, createPublicKey, randomBytes, verify } from 'node:crypto';
import { parseArgs } from 'node:util';
import { scriptedLogin, CookieJar } from './devlogin.mjs';

const { values: args } = parseArgs({
  options: {
    issuer: { type: 'string' },
    resource: { type: 'string' },
    scopes: { type: 'string', default: 'files:read files:write files:list' },
  },
  strict: true,
});
if (!args.issuer || !args.resource) {
  process.stderr.write('usage: node as-check.mjs --issuer URL --resource URI [--scopes "..."]\n');
  process.exit(2);
}
const ISS = args.issuer.replace(/\/+$/, '');
const RES = args.resource;
const SCOPES = args.scopes.split(/\s+/).filter(Boolean);

let allOk = true;
function check(step, ok, extra = {}) {
  if (!ok) allOk = false;
  process.stdout.write(`${JSON.stringify({ step, ok: Boolean(ok), ...extra })}\n`);
  return ok;
}
const getJson = async (url) => { const r = await fetch(url); return { status: r.status, body: await r.json().catch(() => ({})) }; };
const form = (o) => new URLSearchParams(Object.entries(o).filter(([, v]) => v !== undefined));
async function token(params, basic) {
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  if (basic) headers.authorization = `Basic ${Buffer.from(basic).toString('base64')}`;
  const r = await fetch(`${meta.token_endpoint}`, { method: 'POST', headers, body: form(params) });
  return { status: r.status, body: await r.json() };
}
let jwks;
function inspect(jwt) {
  const [h, p, s] = String(jwt).split('.');
  if (!s) return { opaque: true };
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  const claims = JSON.parse(Buffer.from(p, 'base64url'));
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  const valid = Boolean(jwk) && header.alg === 'RS256'
    && verify('RSA-SHA256', Buffer.from(`${h}.${p}`), createPublicKey({ key: jwk, format: 'jwk' }), Buffer.from(s, 'base64url'));
  return { header, claims, valid };
}
const scopeSet = (s) => new Set((s ?? '').split(' ').filter(Boolean));

// --- metadata
const oauthMeta = await getJson(`${ISS}/.well-known/oauth-authorization-server`);
const oidcMeta = await getJson(`${ISS}/.well-known/openid-configuration`);
const meta = oauthMeta.body;
check('metadata', oauthMeta.status === 200 && oidcMeta.status === 200 && meta.issuer === ISS && oidcMeta.body.issuer === ISS
  && meta.registration_endpoint && meta.code_challenge_methods_supported?.includes('S256')
  && ['authorization_code', 'client_credentials', 'refresh_token'].every((g) => meta.grant_types_supported?.includes(g)),
{ issuer: meta.issuer, oidc_issuer: oidcMeta.body.issuer, scopes_supported: meta.scopes_supported });
jwks = (await getJson(meta.jwks_uri)).body;
check('jwks', jwks.keys?.some((k) => k.kty === 'RSA' && k.alg === 'RS256' && k.kid && !k.d), { kids: jwks.keys?.map((k) => k.kid) });

// --- client credentials
const want = SCOPES.slice(0, 2).join(' ');
const cc = await token({ grant_type: 'client_credentials', scope: want, resource: RES }, 'demo-cc:demo-cc-secret');
const ccJwt = inspect(cc.body.access_token);
check('client_credentials', cc.status === 200 && ccJwt.valid && ccJwt.header.typ === 'at+jwt'
  && ccJwt.claims.iss === ISS && ccJwt.claims.aud === RES && ccJwt.claims.client_id === 'demo-cc'
  && ccJwt.claims.scope === want, { header: ccJwt.header, claims: ccJwt.claims });
const bad = await token({ grant_type: 'client_credentials', scope: want, resource: 'http://127.0.0.1:1/not-configured' }, 'demo-cc:demo-cc-secret');
check('unknown resource', bad.status === 400 && bad.body.error === 'invalid_target', { status: bad.status, error: bad.body.error });
const noRes = await token({ grant_type: 'client_credentials', scope: want }, 'demo-cc:demo-cc-secret');
const noResJwt = inspect(noRes.body.access_token);
check('no resource -> default resource', noRes.status === 200 && (noResJwt.opaque || noResJwt.claims.aud !== undefined),
  { aud: noResJwt.claims?.aud, opaque: noResJwt.opaque });

// --- DCR + authorization code + PKCE + refresh + step-up
const redirectUri = 'http://127.0.0.1:53682/callback';
const regRes = await fetch(meta.registration_endpoint, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({
    client_name: 'as-check', redirect_uris: [redirectUri], grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'], token_endpoint_auth_method: 'none', scope: SCOPES[0],
  }),
});
const reg = await regRes.json();
check('register', regRes.status === 201 && reg.client_id, { client_id: reg.client_id, scope: reg.scope });

const jar = new CookieJar();
async function authorize(scope) {
  const verifier = randomBytes(32).toString('base64url');
  const state = randomBytes(8).toString('hex');
  const u = new URL(meta.authorization_endpoint);
  u.search = form({
    response_type: 'code', client_id: reg.client_id, redirect_uri: redirectUri, scope, resource: RES, state,
    code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256',
    prompt: scope.includes('offline_access') ? 'consent' : undefined,
  }).toString();
  const r = await scriptedLogin(u, { redirectUri, jar, username: 'as-check-user' });
  const t = await token({ grant_type: 'authorization_code', code: r.code, code_verifier: verifier, redirect_uri: redirectUri, client_id: reg.client_id, resource: RES });
  return { r, t, state };
}
const first = await authorize(`${SCOPES[2] ?? SCOPES[0]} offline_access`);
const firstJwt = inspect(first.t.body.access_token);
check('authorization_code', first.r.state === first.state && first.r.iss === ISS && first.t.status === 200 && firstJwt.valid
  && firstJwt.claims.aud === RES && firstJwt.claims.sub === 'as-check-user' && Boolean(first.t.body.refresh_token),
{ pages: first.r.pages, claims: firstJwt.claims, refresh_token: Boolean(first.t.body.refresh_token) });

const ref = await token({ grant_type: 'refresh_token', refresh_token: first.t.body.refresh_token, client_id: reg.client_id, resource: RES });
const refJwt = inspect(ref.body.access_token);
check('refresh_token', ref.status === 200 && refJwt.valid && refJwt.claims.aud === RES && refJwt.claims.scope === firstJwt.claims.scope,
  { claims: refJwt.claims });

const stepUpScope = [...new Set([SCOPES[2] ?? SCOPES[0], SCOPES[0]])].join(' ');
const second = await authorize(stepUpScope);
const secondJwt = inspect(second.t.body.access_token);
check('step-up authorization', second.t.status === 200 && secondJwt.valid
  && [...scopeSet(stepUpScope)].every((s) => scopeSet(secondJwt.claims.scope).has(s)),
{ pages: second.r.pages, requested: stepUpScope, scope: secondJwt.claims.scope });

process.stdout.write(`${JSON.stringify({ done: true, ok: allOk })}\n`);
process.exit(allOk ? 0 : 1);
