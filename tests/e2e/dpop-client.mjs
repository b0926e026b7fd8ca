#!/usr/bin/env node
// dpop-client.mjs — a DPoP client (RFC 9449) for the end-to-end tests, built on the independent
// npm `dpop` package (panva), so mcp-authz's proof checks are exercised by proofs it did not
// write itself.
//
//   node dpop-client.mjs token --token-endpoint URL --resource URI --scope "files:list"
//       Generates an ES256 key pair, asks the AS (as.mjs --dpop) for a client-credentials token
//       with a DPoP proof (client demo-cc), and prints one JSON line:
//       {"access_token": "...", "token_type": "DPoP", "key": <private JWK>, "jkt": "..."}
//   node dpop-client.mjs key
//       Prints {"key": <private JWK of a fresh ES256 key>}.
//   node dpop-client.mjs proof --key JSON --htm POST --htu URL [--token T] [--iat-offset S]
//                              [--nonce N]
//       Prints one proof (a compact JWS). --token adds `ath`; --iat-offset shifts the clock the
//       proof's `iat` is read from (stale or future proofs); --nonce adds a server nonce.
import { parseArgs } from 'node:util';
import { webcrypto as crypto } from 'node:crypto';
import * as DPoP from 'dpop';

const [command, ...rest] = process.argv.slice(2);
const { values: args } = parseArgs({
  args: rest,
  options: {
    'token-endpoint': { type: 'string' },
    resource: { type: 'string' },
    scope: { type: 'string', default: 'files:list' },
    key: { type: 'string' },
    htm: { type: 'string' },
    htu: { type: 'string' },
    token: { type: 'string' },
    'iat-offset': { type: 'string', default: '0' },
    nonce: { type: 'string' },
  },
  strict: true,
});

const ES256 = { name: 'ECDSA', namedCurve: 'P-256' };

async function exportPair(pair) {
  return crypto.subtle.exportKey('jwk', pair.privateKey);
}

async function importPair(jwk) {
  const privateKey = await crypto.subtle.importKey('jwk', jwk, ES256, false, ['sign']);
  const { d: _d, key_ops: _o, ...pub } = jwk;
  const publicKey = await crypto.subtle.importKey('jwk', pub, ES256, true, ['verify']);
  return { privateKey, publicKey };
}

async function thumbprint(jwk) {
  const canonical = JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y });
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(canonical));
  return Buffer.from(digest).toString('base64url');
}

function out(v) {
  process.stdout.write(`${typeof v === 'string' ? v : JSON.stringify(v)}\n`);
}

if (command === 'key') {
  const pair = await DPoP.generateKeyPair('ES256', { extractable: true });
  out({ key: await exportPair(pair) });
} else if (command === 'token') {
  const pair = await DPoP.generateKeyPair('ES256', { extractable: true });
  const url = args['token-endpoint'];
  const proof = await DPoP.generateProof(pair, url, 'POST');
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from('demo-cc:demo-cc-secret').toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
      dpop: proof,
    },
    body: new URLSearchParams({
      grant_type: 'client_credentials', scope: args.scope, resource: args.resource,
    }),
  });
  const body = await res.json();
  if (res.status !== 200) {
    process.stderr.write(`token request: HTTP ${res.status} ${JSON.stringify(body)}\n`);
    process.exit(1);
  }
  const key = await exportPair(pair);
  out({ ...body, key, jkt: await thumbprint(key) });
} else if (command === 'proof') {
  const pair = await importPair(JSON.parse(args.key));
  const offset = Number(args['iat-offset']) * 1000;
  const realNow = Date.now;
  Date.now = () => realNow() + offset;
  out(await DPoP.generateProof(pair, args.htu, args.htm, args.nonce, args.token));
} else {
  process.stderr.write('usage: node dpop-client.mjs token|key|proof ...\n');
  process.exit(2);
}
