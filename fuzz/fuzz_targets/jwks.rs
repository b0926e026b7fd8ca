//! Fuzz the JWKS parser (`jwks::parse_jwks`): no panic on any document, and no key it yields
//! verifies a signature the harness did not make — every parsed key refuses a fuzz-chosen
//! message and signature under every algorithm.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_authz::config::Alg;
use mcp_authz::jwks::parse_jwks;

fuzz_target!(|data: &[u8]| {
    // The tail after the last NUL (if any) is the message and signature to try; JSON never
    // contains a raw NUL, so the document part stays whole.
    let (doc, probe) = match data.iter().rposition(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok((keys, _skipped)) = parse_jwks(doc) else {
        return;
    };
    let split = probe.len() / 2;
    let (message, signature) = probe.split_at(split);
    for key in &keys {
        for alg in Alg::ALL {
            assert!(
                !key.verify(alg, message, signature),
                "key {key:?} accepted a garbage signature under {alg:?}"
            );
        }
    }
});
