//! DPoP replay across replicas (RFC 9449 §11.1): two mcp-authz instances sharing a real
//! `redis-server` (Debian package `redis-server`; `tests/run-all.sh` installs it) through
//! `dpop.replay_store`. A proof accepted by one is refused by the other; with the store down,
//! proofs are refused with 503 (fail closed). A missing `redis-server` fails the test.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mcp_authz::app;
use mcp_authz::config::Config;
use mcp_authz::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::json;

const URI: &str = "https://mcp.example.com/mcp";

/// `redis-server` on 127.0.0.1:`port`, nothing persisted; stopped by its PID on drop.
struct Redis(Child);

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (Debian package redis-server)");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Redis(child)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn jkt(key: &TestKey) -> String {
    let jwk = key.jwk();
    let text = json!({"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}).to_string();
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref())
}

fn proof(key: &TestKey, token: &str, jti: &str) -> String {
    let ath = b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref());
    key.mint_with_header(
        &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk()}),
        &json!({"jti": jti, "htm": "POST", "htu": URI, "iat": now(), "ath": ath}),
    )
}

fn req(token: &str, proof: &str) -> Req {
    Req::new("POST", "/mcp")
        .header("authorization", &format!("DPoP {token}"))
        .header("dpop", proof)
}

#[tokio::test]
async fn a_proof_replayed_to_another_replica_is_refused_and_a_down_store_fails_closed() {
    let port = free_port();
    let redis = Redis::start(port);
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(
        &idp.issuer,
        "",
        &format!(
            "{ROUTES}    dpop: {{mode: allowed, replay_store: {{url: \"redis://127.0.0.1:{port}\", timeout_ms: 1000}}}}\n"
        ),
    );
    // Replica A (the harness) and replica B, same configuration, same store.
    let mut a = Harness::start(idp, &yaml, true).await;
    let b = app::start(Config::from_yaml(&yaml).unwrap()).await.unwrap();
    let mut b_client = AuthorizationClient::connect(format!("http://{}", b.grpc_addr))
        .await
        .unwrap();
    eventually("replica b is ready", Duration::from_secs(30), async || {
        b.ready.get()
    })
    .await;
    let mut claims = a.claims("files:list");
    claims["cnf"] = json!({"jkt": jkt(&EC)});
    let token = RSA.mint(&claims);

    let p = proof(&EC, &token, "jti-1");
    assert_eq!(a.check(req(&token, &p)).await.status, 200);
    let on_b = Answer::from(
        b_client
            .check(req(&token, &p).into_proto())
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(
        (on_b.status, on_b.reason()),
        (401, "dpop_proof_replayed"),
        "{on_b:?}"
    );
    // A fresh proof is accepted by B, and then refused by A.
    let p2 = proof(&EC, &token, "jti-2");
    let on_b = Answer::from(
        b_client
            .check(req(&token, &p2).into_proto())
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(on_b.status, 200, "{on_b:?}");
    assert_eq!(
        a.check(req(&token, &p2)).await.reason(),
        "dpop_proof_replayed"
    );

    // The store down: fail closed, with 503 and no challenge.
    drop(redis);
    let down = a.check(req(&token, &proof(&EC, &token, "jti-3"))).await;
    assert_eq!(
        (down.status, down.reason()),
        (503, "dpop_replay_store_unavailable"),
        "{down:?}"
    );
    assert_eq!(down.www(), None);
    // Bearer tokens do not need the store.
    let plain = RSA.mint(&a.claims("files:list"));
    assert_eq!(a.bearer("POST", "/mcp", &plain).await.status, 200);
    // The store back: proofs are accepted again (the connection is remade).
    let _redis = Redis::start(port);
    assert_eq!(
        a.check(req(&token, &proof(&EC, &token, "jti-4")))
            .await
            .status,
        200
    );
    b.shutdown(Duration::from_secs(1)).await;
}
