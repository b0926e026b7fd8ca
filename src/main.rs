//! The `mcp-authz` command line: parse, set up logging, hand over to the library.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use mcp_authz::config::{Access, Config, KeySource};
use mcp_authz::render;

// The commands print reports meant for pipes (`mcp-authz render envoy … | head`). std's
// `print!`/`println!` panic when the reader has gone (EPIPE: Rust ignores SIGPIPE), so these
// shadow them for the whole file: a closed stdout ends the process quietly with success, any
// other write error with a message and failure.
macro_rules! print {
    ($($arg:tt)*) => { write_stdout(format_args!($($arg)*)) };
}
macro_rules! println {
    () => { write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("mcp-authz: writing to standard output: {e}");
        std::process::exit(1);
    }
}

#[derive(Parser)]
#[command(
    name = "mcp-authz",
    version,
    about = "Envoy ext_authz service for OAuth-protected MCP servers"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "MCP_AUTHZ_LOG_FORMAT",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the ext_authz gRPC service.
    Serve {
        /// Configuration file (YAML).
        #[arg(long, short, env = "MCP_AUTHZ_CONFIG")]
        config: PathBuf,
        /// Override `listen.grpc`.
        #[arg(long)]
        grpc_addr: Option<SocketAddr>,
        /// Override `listen.admin`.
        #[arg(long)]
        admin_addr: Option<SocketAddr>,
        /// Override `listen.workers`: Check-serving threads (default: one per available CPU).
        #[arg(long, env = "MCP_AUTHZ_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: Option<u16>,
        /// How long in-flight Checks may take to finish on shutdown, in seconds.
        #[arg(long, default_value_t = 10)]
        drain_seconds: u64,
    },
    /// Validate a configuration file and print a summary.
    CheckConfig {
        /// Configuration file (YAML).
        config: PathBuf,
    },
    /// Show how one request would be decided: every validation step and the exact response.
    Explain {
        /// Configuration file (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// Bearer token to validate (keys are fetched from the configured issuers).
        #[arg(long, conflicts_with_all = ["token_file", "claims"])]
        token: Option<String>,
        /// File holding the bearer token.
        #[arg(long, conflicts_with = "claims")]
        token_file: Option<PathBuf>,
        /// Claims JSON file, checked offline (no signature).
        #[arg(long)]
        claims: Option<PathBuf>,
        /// HTTP method.
        #[arg(long, short = 'X', default_value = "POST")]
        method: String,
        /// Request path (default: the resource's path).
        #[arg(long)]
        path: Option<String>,
        /// Request host (default: the resource's host).
        #[arg(long)]
        host: Option<String>,
        /// Request header `name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Request body (a JSON-RPC message).
        #[arg(long, conflicts_with = "body_file")]
        body: Option<String>,
        /// File holding the request body.
        #[arg(long)]
        body_file: Option<PathBuf>,
        /// Resource id, as Envoy's context_extensions would name it.
        #[arg(long)]
        resource: Option<String>,
        /// The receiving workload's SPIFFE id, as Istio's sidecar sends it as the destination
        /// principal (checked against `istio.workloads` bindings).
        #[arg(long)]
        destination: Option<String>,
    },
    /// Check every issuer: discovery documents, JWKS and keys, algorithms, scopes, audience.
    Doctor {
        /// Configuration file (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// Client id for a test token request (checks RFC 8707 audience support).
        #[arg(long, requires = "client_secret")]
        client_id: Option<String>,
        /// Client secret for the test token request.
        #[arg(long, env = "MCP_AUTHZ_DOCTOR_CLIENT_SECRET")]
        client_secret: Option<String>,
    },
    /// Print configuration derived from the same file: an Envoy bootstrap or a PRM document.
    Render {
        #[command(subcommand)]
        what: RenderWhat,
    },
}

#[derive(Subcommand)]
enum RenderWhat {
    /// A complete Envoy v3 bootstrap: PRM by direct_response, ext_authz, path hardening, CORS.
    Envoy {
        /// Configuration file (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// Override `envoy.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Override `envoy.authz_address` (host:port of mcp-authz as Envoy reaches it).
        #[arg(long)]
        authz_address: Option<String>,
        /// Override a resource's upstream: `ID=host:port` (repeatable).
        #[arg(long = "upstream", value_name = "ID=HOST:PORT")]
        upstreams: Vec<String>,
    },
    /// The RFC 9728 Protected Resource Metadata JSON, byte for byte what Envoy serves.
    Prm {
        /// Configuration file (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// Resource id (default: the only resource).
        #[arg(long)]
        resource: Option<String>,
    },
    /// Istio: the meshConfig ext_authz provider, CUSTOM AuthorizationPolicies, PRM VirtualServices.
    Istio {
        /// Configuration file (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// What to print: `mesh-config` (istiod Helm values), `resources` (kubectl apply), or both.
        #[arg(long, default_value = "all", value_parser = render::istio::IstioPart::NAMES)]
        part: String,
    },
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.fmt_fields(mcp_authz::logfmt::text_fields()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let result = match cli.command {
        Command::Serve {
            config,
            grpc_addr,
            admin_addr,
            workers,
            drain_seconds,
        } => serve(
            config,
            grpc_addr,
            admin_addr,
            workers,
            Duration::from_secs(drain_seconds),
        ),
        Command::CheckConfig { config } => check_config(&config),
        Command::Render { what } => render(what),
        Command::Explain {
            config,
            token,
            token_file,
            claims,
            method,
            path,
            host,
            headers,
            body,
            body_file,
            resource,
            destination,
        } => (|| {
            let c = Config::from_file(&config)?;
            let r = match &resource {
                Some(id) => c
                    .resource(id)
                    .ok_or_else(|| anyhow::anyhow!("no resource with id {id:?}"))?,
                None => &c.resources[0],
            };
            let token = match (token, token_file) {
                (Some(t), _) => Some(t),
                (None, Some(f)) => Some(std::fs::read_to_string(&f)?.trim().to_owned()),
                (None, None) => None,
            };
            let mut parsed_headers = Vec::new();
            for h in headers {
                let (k, v) = h
                    .split_once(':')
                    .ok_or_else(|| anyhow::anyhow!("--header {h:?}: expected 'name: value'"))?;
                parsed_headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            let body = match (body, body_file) {
                (Some(b), _) => b.into_bytes(),
                (None, Some(f)) => std::fs::read(&f)?,
                (None, None) => Vec::new(),
            };
            let req = mcp_authz::explain::Request {
                method: method.to_ascii_uppercase(),
                path: path.unwrap_or_else(|| r.path.clone()),
                host: host.unwrap_or_else(|| r.host.clone()),
                headers: parsed_headers,
                body,
                token,
                claims: claims.map(std::fs::read).transpose()?,
                resource,
                destination,
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (report, _) = rt.block_on(mcp_authz::explain::run(c, req, now))?;
            print!("{report}");
            Ok(())
        })(),
        Command::Doctor {
            config,
            client_id,
            client_secret,
        } => (|| {
            let c = Config::from_file(&config)?;
            let probe = mcp_authz::doctor::Probe {
                client_id,
                client_secret,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (report, worst) = rt.block_on(mcp_authz::doctor::run(&c, &probe))?;
            print!("{report}");
            anyhow::ensure!(
                worst < mcp_authz::doctor::Level::Error,
                "doctor found problems"
            );
            Ok(())
        })(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-authz: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    path: PathBuf,
    grpc_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    workers: Option<u16>,
    drain: Duration,
) -> anyhow::Result<()> {
    let mut config = Config::from_file(&path)?;
    if let Some(a) = grpc_addr {
        config.grpc_addr = a;
    }
    if let Some(a) = admin_addr {
        config.admin_addr = a;
    }
    if let Some(n) = workers {
        config.workers = usize::from(n);
    }
    // The control runtime: acceptor, admin listener, key refresh, reload, signals. Checks are
    // served on `config.workers` threads of their own (app::start).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut running = mcp_authz::app::start(config).await?;
        running.watch_config(path.clone(), Duration::from_secs(2))?;
        wait_for_signal().await?;
        tracing::info!("shutting down");
        running.shutdown(drain).await;
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let (h, p) = s
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("{s:?} is not host:port"))?;
    let port: u16 = p
        .parse()
        .map_err(|_| anyhow::anyhow!("{s:?} has no valid port"))?;
    anyhow::ensure!(!h.is_empty() && port != 0, "{s:?} is not host:port");
    Ok((
        h.trim_start_matches('[').trim_end_matches(']').to_owned(),
        port,
    ))
}

fn render(what: RenderWhat) -> anyhow::Result<()> {
    match what {
        RenderWhat::Envoy {
            config,
            listen,
            authz_address,
            upstreams,
        } => {
            let c = Config::from_file(&config)?;
            let mut opts = render::EnvoyOptions {
                listen,
                authz_address: authz_address.as_deref().map(host_port).transpose()?,
                upstreams: vec![],
            };
            for u in upstreams {
                let (id, addr) = u
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--upstream {u:?}: expected ID=HOST:PORT"))?;
                anyhow::ensure!(
                    c.resource(id).is_some(),
                    "--upstream {u:?}: no resource with id {id:?}"
                );
                opts.upstreams.push((id.to_owned(), host_port(addr)?));
            }
            print!("{}", render::envoy_bootstrap(&c, &opts)?);
        }
        RenderWhat::Prm { config, resource } => {
            let c = Config::from_file(&config)?;
            let r = match resource {
                Some(id) => c
                    .resource(&id)
                    .ok_or_else(|| anyhow::anyhow!("no resource with id {id:?}"))?,
                None if c.resources.len() == 1 => &c.resources[0],
                None => anyhow::bail!("the config has several resources; name one with --resource"),
            };
            // Exactly the bytes Envoy serves (no trailing newline).
            print!("{}", render::prm_json(r));
        }
        RenderWhat::Istio { config, part } => {
            let c = Config::from_file(&config)?;
            let part = part
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--part: {e}"))?;
            print!("{}", render::istio::istio(&c, part)?);
        }
    }
    Ok(())
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let c = Config::from_file(path)?;
    println!("config OK: {}", path.display());
    println!(
        "  grpc listener:  {} ({} Check workers)",
        c.grpc_addr, c.workers
    );
    println!("  admin listener: {}", c.admin_addr);
    for r in &c.resources {
        println!("  resource {} = {}", r.id, r.uri);
        println!("    realm: {}", r.realm);
        println!("    protected resource metadata: {}", r.prm_url);
        println!("    scopes_supported: {}", r.scopes_supported.join(" "));
        if let Some(w) = c.istio.workloads.get(&r.id)
            && !w.principals.is_empty()
        {
            println!(
                "    mesh binding (destination principal): {}",
                w.principals.join(" ")
            );
        }
        if let Some(w) = c.istio.workloads.get(&r.id)
            && !w.principals.is_empty()
        {
            println!(
                "    mesh binding (destination principal): {}",
                w.principals.join(" ")
            );
        }
        for i in &r.issuers {
            let source = c
                .issuers
                .iter()
                .find(|k| k.issuer == i.issuer)
                .map(|k| &k.source);
            let keys = match source {
                Some(KeySource::Discovery) => "discovery".to_owned(),
                Some(KeySource::JwksUri(u)) => format!("jwks_uri {u}"),
                Some(KeySource::File(p)) => format!("jwks_file {}", p.display()),
                None => "?".to_owned(),
            };
            let algs: Vec<_> = i.algorithms.iter().map(|a| a.as_str()).collect();
            println!(
                "    issuer {} (keys: {keys}; algorithms: {})",
                i.issuer,
                algs.join(" ")
            );
        }
        for route in &r.routes {
            let access = match &route.access {
                Access::Public => "public".to_owned(),
                Access::Scopes(s) if s.is_empty() => "any valid token".to_owned(),
                Access::Scopes(s) => format!("scopes: {}", s.joined()),
            };
            println!("    route {}: {:?} -> {access}", route.name, route.path);
        }
        match &r.default_scopes {
            None => println!("    unmatched requests: denied (403)"),
            Some(s) => println!("    unmatched requests: scopes: {}", s.joined()),
        }
    }
    Ok(())
}
