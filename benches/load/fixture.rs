//! What every scenario needs: signing keys and tokens minted here, the mcp-authz configuration,
//! the release `mcp-authz` binary as a child process, and `/proc` readings of CPU and memory.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::http1;

pub const ISSUER: &str = "https://iam.bench.example";
/// The resource without MCP rules (route scopes only).
pub const FILES_URI: &str = "https://mcp.example.com/mcp";
pub const FILES_HOST: &str = "mcp.example.com";
/// The resource with per-tool rules (its POST bodies are inspected).
pub const TOOLS_URI: &str = "https://tools.example.com/mcp";
pub const TOOLS_HOST: &str = "tools.example.com";

pub fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The issuer's signing keys: RSA-2048 (RS256, what most IAMs use) and Ed25519 (cheap to sign,
/// used to fill the cache with 100k tokens quickly; the cache entry does not depend on `alg`).
pub struct Keys {
    rsa: aws_lc_rs::rsa::KeyPair,
    ed: Ed25519KeyPair,
}

impl Keys {
    pub fn generate() -> Keys {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("Ed25519 key");
        Keys {
            rsa: aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).expect("RSA key"),
            ed: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 key"),
        }
    }

    pub fn jwks(&self) -> Value {
        let p = self.rsa.public_key();
        json!({"keys": [
            {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256",
             "n": b64(p.modulus().big_endian_without_leading_zero()),
             "e": b64(p.exponent().big_endian_without_leading_zero())},
            {"kty": "OKP", "kid": "ed-1", "use": "sig", "alg": "EdDSA", "crv": "Ed25519",
             "x": b64(self.ed.public_key().as_ref())},
        ]})
    }

    pub fn rs256(&self, claims: &Value) -> String {
        let input = signing_input("RS256", "rsa-1", claims);
        let mut sig = vec![0u8; self.rsa.public_modulus_len()];
        self.rsa
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .expect("RSA sign");
        format!("{input}.{}", b64(&sig))
    }

    pub fn eddsa(&self, claims: &Value) -> String {
        let input = signing_input("EdDSA", "ed-1", claims);
        let sig = self.ed.sign(input.as_bytes());
        format!("{input}.{}", b64(sig.as_ref()))
    }

    /// `n` distinct RS256 tokens, signed on every core (RSA signing is ~1 ms each).
    pub fn many_rs256(&self, n: usize, scope: &str) -> Vec<String> {
        self.many(n, |i| self.rs256(&claims(i as u64, scope)))
    }

    pub fn many_eddsa(&self, n: usize, scope: &str) -> Vec<String> {
        self.many(n, |i| self.eddsa(&claims(i as u64, scope)))
    }

    fn many(&self, n: usize, mint: impl Fn(usize) -> String + Sync) -> Vec<String> {
        many(n, mint)
    }
}

/// `n` strings minted on every core.
pub fn many(n: usize, mint: impl Fn(usize) -> String + Sync) -> Vec<String> {
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get());
    let chunk = n.div_ceil(threads).max(1);
    let mint = &mint;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                s.spawn(move || {
                    (start..(start + chunk).min(n))
                        .map(mint)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("minting thread"))
            .collect()
    })
}

pub fn signing_input(alg: &str, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": alg, "kid": kid, "typ": "at+jwt"});
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// RFC 9068 access-token claims as an IAM issues them, for both resources (`aud` array);
/// `n` makes `sub` and `jti` (so the token) distinct.
pub fn claims(n: u64, scope: &str) -> Value {
    claims_for(n, scope, ISSUER, &[FILES_URI, TOOLS_URI])
}

/// The same claims from issuer `iss` for the audiences `aud`.
pub fn claims_for(n: u64, scope: &str, iss: &str, aud: &[&str]) -> Value {
    let now = unix_now();
    json!({
        "iss": iss,
        "sub": format!("user-{n:08}-2f4b-4a53-9c1e-5b7f0c7d9e21"),
        "aud": aud,
        "exp": now + 3600,
        "iat": now,
        "jti": format!("{n:016x}"),
        "client_id": "mcp-bench-client",
        "scope": scope,
    })
}

/// A port the OS just handed out (and took back); good enough on a quiet loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Addresses of one bench setup.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub grpc: u16,
    pub admin: u16,
    pub upstream: u16,
    pub envoy_admin: u16,
}

impl Ports {
    pub fn pick() -> Ports {
        Ports {
            grpc: free_port(),
            admin: free_port(),
            upstream: free_port(),
            envoy_admin: free_port(),
        }
    }
}

/// What `identity:` holds with `--lean-answer`: no identity headers, no dynamic metadata, so
/// an allow is a bare OK (what the answer costs Envoy, measured by difference).
pub const LEAN_IDENTITY: &str = "identity: {subject_header: null, client_id_header: null, \
     scopes_header: null, issuer_header: null, dynamic_metadata: false}\n";

/// The mcp-authz configuration every scenario uses: `files` (route scopes only) and `tools`
/// (per-tool rules on the JSON-RPC body), one issuer with a local JWKS file; `identity` is
/// inserted as is (empty for the defaults).
pub fn config_yaml(
    ports: &Ports,
    jwks_file: &Path,
    cache_entries: usize,
    identity: &str,
) -> String {
    let issuer = format!(
        "      - issuer: {ISSUER}\n        jwks_file: {}\n        algorithms: [RS256, EdDSA]\n",
        jwks_file.display()
    );
    format!(
        r#"listen: {{grpc: "127.0.0.1:{grpc}", admin: "127.0.0.1:{admin}"}}
limits:
  token_cache_entries: {cache_entries}
{identity}envoy:
  listen: 127.0.0.1:10000
  admin: 127.0.0.1:{envoy_admin}
  authz_address: 127.0.0.1:{grpc}
  check_timeout_ms: 1000
resources:
  - id: files
    uri: {FILES_URI}
    upstream: 127.0.0.1:{upstream}
    issuers:
{issuer}    routes:
      - {{name: mcp, path: /mcp, methods: [GET, POST, DELETE], scopes: [files:list]}}
  - id: tools
    uri: {TOOLS_URI}
    upstream: 127.0.0.1:{upstream}
    issuers:
{issuer}    routes:
      - name: mcp
        path: /mcp
        methods: [GET, POST, DELETE]
        scopes: [files:list]
        mcp:
          tools: {{read_file: [files:read], write_file: [files:write]}}
"#,
        grpc = ports.grpc,
        admin = ports.admin,
        envoy_admin = ports.envoy_admin,
        upstream = ports.upstream,
    )
}

/// A scratch directory under `target/` for configs, keys and logs.
pub fn work_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-load")
        .join(format!("{}", std::process::id()));
    fs::create_dir_all(&dir).expect("bench work dir");
    dir
}

/// The release `mcp-authz serve` as a child process (so its CPU and memory are its own).
pub struct Service {
    child: Child,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
}

impl Service {
    /// Start with `yaml`; waits until `/readyz` answers 200 (keys loaded).
    pub fn start(
        dir: &Path,
        name: &str,
        yaml: &str,
        env: &[(&str, &str)],
        wrap: Option<&str>,
    ) -> Service {
        let config = dir.join(format!("{name}.yaml"));
        fs::write(&config, yaml).expect("write config");
        let log = fs::File::create(dir.join(format!("{name}.log"))).expect("service log");
        let parsed = mcp_authz::config::Config::from_yaml(yaml).expect("bench config is valid");
        let bin = env!("CARGO_BIN_EXE_mcp-authz");
        let mut cmd = match wrap.map(str::split_whitespace) {
            Some(mut words) => {
                let mut c = Command::new(words.next().expect("--wrap names a command"));
                c.args(words).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start mcp-authz");
        let service = Service {
            child,
            grpc: parsed.grpc_addr,
            admin: parsed.admin_addr,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http1::get_blocking(service.admin, "/readyz").map(|(s, _)| s) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "mcp-authz did not become ready; see {}",
                dir.join(format!("{name}.log")).display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        service
    }

    /// The null ext_authz server (this bench binary in `null-server` mode) as its own process,
    /// on the same kind of tokio runtime as mcp-authz.
    pub fn null(dir: &Path, env: &[(&str, &str)]) -> Service {
        let port = free_port();
        let log = fs::File::create(dir.join("null.log")).expect("null log");
        let mut cmd = Command::new(std::env::current_exe().expect("bench binary"));
        cmd.args(["null-server", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start null server");
        let grpc: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(grpc).is_err() {
            assert!(Instant::now() < deadline, "null server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Service {
            child,
            grpc,
            // Nothing listens there; `metric` reads as 0.
            admin: ([127, 0, 0, 1], free_port()).into(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A gauge or counter from `/metrics` (summed over label sets).
    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = http1::get_blocking(self.admin, "/metrics").unwrap_or_default();
        body.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Service {
    /// SIGTERM first (mcp-authz drains and exits; a profiler wrapping it writes its data),
    /// SIGKILL after 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU time a process (all its threads, live and exited) has used, in µs.
pub fn cpu_us(pid: u32) -> u64 {
    stat_cpu_us(&format!("/proc/{pid}/stat"))
}

/// The calling thread's id, so another thread can read its CPU time later.
pub fn thread_stat_path() -> String {
    let stat = fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let tid = stat.split(' ').next().unwrap_or("0");
    format!("/proc/{}/task/{tid}/stat", std::process::id())
}

pub fn stat_cpu_us(path: &str) -> u64 {
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15 (proc(5)); in clock
    // ticks, which are 10 ms (USER_HZ = 100) on every Linux we run on.
    let Ok(stat) = fs::read_to_string(path) else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0;
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) * 10_000
}

/// `(VmRSS, VmHWM)` in KiB: resident now and at peak.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// One line about the machine and how busy it was (load averages).
pub fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |p| p.get());
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {:.0} GiB RAM, Linux {}",
        mem as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
