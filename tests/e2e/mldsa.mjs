// ML-DSA test signer: an implementation independent of the code under test (@noble/post-quantum,
// not aws-lc-rs), used by tests/common/mod.rs (Rust integration tests) and tests/e2e/test_pq.py.
//
//   node mldsa.mjs [--level=44|65|87] SEED_HEX [SIGNING_INPUT]
//
// The parameter set is ML-DSA-65 unless --level names another (keys of 1,312 / 1,952 / 2,592
// bytes, signatures of 2,420 / 3,309 / 4,627 bytes; FIPS 204 Table 2).
// Derives the key pair from the 32-byte seed (FIPS 204 Algorithm 1, ML-DSA.KeyGen with the seed
// given, so a test's key is the same in every process) and prints one JSON line:
// {"x": base64url of the 1,952-byte raw public key, "sig": base64url of the 3,309-byte
// signature over SIGNING_INPUT (UTF-8), or null}. The signature is "pure" ML-DSA (FIPS 204
// Algorithm 2, ML-DSA.Sign) with an empty context string, as Hanzo IAM signs its MLDSA65 access
// tokens and as draft-ietf-cose-dilithium specifies for JOSE's ML-DSA-65.
import { ml_dsa44, ml_dsa65, ml_dsa87 } from '@noble/post-quantum/ml-dsa.js';

const args = process.argv.slice(2);
const levelArg = args[0]?.startsWith('--level=') ? args.shift().slice('--level='.length) : '65';
const ml = { 44: ml_dsa44, 65: ml_dsa65, 87: ml_dsa87 }[levelArg];
if (!ml) {
  console.error('usage: --level must be 44, 65 or 87');
  process.exit(2);
}
const [seedHex, input] = args;
if (!/^[0-9a-f]{64}$/.test(seedHex ?? '')) {
  console.error('usage: node mldsa.mjs [--level=44|65|87] SEED_HEX(64 hex digits) [SIGNING_INPUT]');
  process.exit(2);
}
const b64url = (b) => Buffer.from(b).toString('base64url');
const { publicKey, secretKey } = ml.keygen(Uint8Array.from(Buffer.from(seedHex, 'hex')));
let sig = null;
if (input !== undefined) {
  const s = ml.sign(new TextEncoder().encode(input), secretKey);
  if (!ml.verify(s, new TextEncoder().encode(input), publicKey)) {
    throw new Error('noble could not verify its own signature');
  }
  sig = b64url(s);
}
process.stdout.write(JSON.stringify({ x: b64url(publicKey), sig }) + '\n');
