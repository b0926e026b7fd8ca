//! Wiring: build the shared state from a validated config, bind the listeners (port 0 allowed),
//! start key refreshers, readiness tracking and config reload, and stop it all on request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tonic::service::Routes;

use crate::admin::{self, Readiness};
use crate::authz::{AuthorizationServer, AuthzService, DenyUndecodable};
use crate::cache::TokenCache;
use crate::check::Authorizer;
use crate::config::{Config, ConfigError};
use crate::extproc::{ExternalProcessorServer, SessionProcessor};
use crate::jwks::JwksManager;
use crate::metrics::Metrics;

/// A started service. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics: Metrics,
    pub authorizer: Arc<Authorizer>,
    pub ready: Arc<Readiness>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    workers: Vec<Worker>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stop accepting, report not-serving, let in-flight Checks finish (bounded by `drain`),
    /// stop background tasks.
    pub async fn shutdown(self, drain: Duration) {
        self.ready.set(false);
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + drain;
        for s in self.servers {
            let abort = s.abort_handle();
            if tokio::time::timeout_at(deadline, s).await.is_err() {
                tracing::warn!("drain timeout reached; closing remaining connections");
                abort.abort();
            }
        }
        for w in self.workers {
            if tokio::time::timeout_at(deadline, w.done).await.is_err() {
                tracing::warn!("drain timeout reached; closing remaining Check streams");
                let _ = w.kill.send(());
            }
        }
        for b in self.background {
            b.abort();
        }
        self.authorizer.jwks.shutdown();
    }

    /// Load `path`, validate it and swap it in atomically; on any error keep the running
    /// configuration, log why and count it.
    pub fn reload(&self, path: &Path) -> Result<(), ConfigError> {
        reload(&self.authorizer, &self.metrics, path)
    }

    /// Reload when the file's content changes (polling follows symlinks, so Kubernetes
    /// ConfigMap volumes, which swap a `..data` symlink, work) and on SIGHUP.
    pub fn watch_config(&mut self, path: PathBuf, interval: Duration) -> anyhow::Result<()> {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let authorizer = self.authorizer.clone();
        let metrics = self.metrics.clone();
        let mut last = std::fs::read(&path).ok();
        self.background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let forced = tokio::select! {
                    _ = tick.tick() => false,
                    _ = hup.recv() => true,
                };
                let now = tokio::fs::read(&path).await.ok();
                if forced || (now.is_some() && now != last) {
                    if forced {
                        tracing::info!(path = %path.display(), "SIGHUP: reloading configuration");
                    }
                    let _ = reload(&authorizer, &metrics, &path);
                    last = now;
                }
            }
        }));
        Ok(())
    }
}

fn reload(authorizer: &Authorizer, metrics: &Metrics, path: &Path) -> Result<(), ConfigError> {
    match Config::from_file(path) {
        Ok(mut next) => {
            let current = authorizer.config.load();
            // Worker threads are started once; keep describing what runs.
            next.workers = current.workers;
            if next.grpc_addr != current.grpc_addr || next.admin_addr != current.admin_addr {
                tracing::warn!("listener addresses changed; they take effect after a restart");
            }
            if format!("{:?}", next.jwks) != format!("{:?}", current.jwks) {
                tracing::warn!("jwks settings changed; they take effect after a restart");
            }
            if next.token_cache_entries != current.token_cache_entries {
                tracing::warn!(
                    "limits.token_cache_entries changed; it takes effect after a restart"
                );
            }
            authorizer.jwks.update(&next);
            authorizer.introspect.prepare(&next);
            let ids: Vec<&str> = next.resources.iter().map(|r| r.id.as_str()).collect();
            metrics.init_series(&ids, &authorizer.jwks.issuer_names());
            authorizer.config.store(Arc::new(next));
            // Issuers, audiences or leeway may have changed: re-verify every token once.
            authorizer.cache.clear();
            metrics.reload(true);
            tracing::info!(path = %path.display(), "configuration reloaded");
            Ok(())
        }
        Err(e) => {
            metrics.reload(false);
            tracing::error!(path = %path.display(), error = %e, "configuration reload failed; keeping the running configuration");
            Err(e)
        }
    }
}

/// Start the service on the configured addresses.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let metrics = Metrics::new();
    let jwks = JwksManager::new(&config, metrics.clone()).context("building the JWKS client")?;
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC listener {}", config.grpc_addr))?;
    let admin = TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding admin listener {}", config.admin_addr))?;
    let grpc_addr = grpc.local_addr()?;
    let config_workers = config.workers;
    let admin_addr = admin.local_addr()?;
    metrics.reload(true);
    let resource_ids: Vec<&str> = config.resources.iter().map(|r| r.id.as_str()).collect();
    metrics.init_series(&resource_ids, &jwks.issuer_names());

    let cache = TokenCache::new(config.token_cache_entries, metrics.clone());
    let authorizer = Arc::new(Authorizer {
        config: ArcSwap::from_pointee(config),
        jwks: jwks.clone(),
        cache,
        introspect: crate::introspect::Introspector::new(metrics.clone()),
        dpop: crate::dpop::Dpop::new(metrics.clone()),
    });
    authorizer.introspect.prepare(&authorizer.config.load());
    let ready = Arc::new(Readiness::default());
    let (stop, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_not_serving::<AuthorizationServer<AuthzService>>()
        .await;
    let service = AuthzService {
        authorizer: authorizer.clone(),
        metrics: metrics.clone(),
    };
    // Session binding on the response path (`extproc.rs`); Envoy calls it only when the
    // render installs the ext_proc filter (`sessions:` configured).
    let processor = SessionProcessor {
        authorizer: authorizer.clone(),
    };
    let (acceptor, workers) = start_workers(
        grpc,
        config_workers,
        &stop_rx,
        Routes::new(health_service)
            .add_service(DenyUndecodable::new(
                AuthorizationServer::new(service)
                    .max_decoding_message_size(crate::config::MAX_CHECK_MESSAGE_BYTES),
                authorizer.clone(),
                metrics.clone(),
            ))
            .add_service(ExternalProcessorServer::new(processor)),
    )?;
    let admin_task = tokio::spawn({
        let rx = stop_rx.clone();
        let app = admin::router(metrics.clone(), ready.clone());
        async move {
            if let Err(e) = axum::serve(admin, app)
                .with_graceful_shutdown(stopped(rx))
                .await
            {
                tracing::error!(error = %e, "admin server failed");
            }
        }
    });

    jwks.spawn_refresh();
    // Readiness follows the key state: ready once every issuer has usable keys, and back to
    // not-ready if one goes stale. gRPC health and /readyz read the same flag.
    let readiness = tokio::spawn({
        let ready = ready.clone();
        let metrics = metrics.clone();
        let mut rx = stop_rx;
        async move {
            let mut was = None;
            loop {
                let usable = jwks.usable();
                for (issuer, ok) in &usable {
                    metrics.issuer_usable(issuer, *ok);
                }
                let now = usable.iter().all(|(_, ok)| *ok) && !*rx.borrow();
                ready.set(now);
                if was != Some(now) {
                    if now {
                        health
                            .set_serving::<AuthorizationServer<AuthzService>>()
                            .await;
                        tracing::info!("ready");
                    } else {
                        health
                            .set_not_serving::<AuthorizationServer<AuthzService>>()
                            .await;
                        if *rx.borrow() {
                            tracing::info!("shutting down: not serving");
                        } else if was.is_some() {
                            tracing::warn!("not ready: an issuer has no usable keys");
                        }
                    }
                    was = Some(now);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = rx.changed() => {}
                }
            }
        }
    });
    let sweeper = tokio::spawn({
        let authorizer = authorizer.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                authorizer.cache.sweep(unix_now());
                authorizer.dpop.sweep(unix_now());
            }
        }
    });
    tracing::info!(grpc = %grpc_addr, admin = %admin_addr, "listening");
    Ok(Running {
        grpc_addr,
        admin_addr,
        metrics,
        authorizer,
        ready,
        stop,
        servers: vec![acceptor, admin_task],
        workers,
        background: vec![readiness, sweeper],
    })
}

/// Serve `routes` on `workers` threads exactly as [`start`] serves Check, until the process
/// exits. The benchmarks' null ext_authz server uses it, so it pays the same transport.
pub async fn serve_forever(
    grpc: TcpListener,
    workers: usize,
    routes: Routes,
) -> anyhow::Result<()> {
    let (_stop, stop_rx) = watch::channel(false);
    let (acceptor, _workers) = start_workers(grpc, workers, &stop_rx, routes)?;
    let _ = acceptor.await;
    Ok(())
}

/// A Check-serving thread: a single-threaded tokio runtime running the gRPC server over the
/// connections the acceptor hands it.
struct Worker {
    /// Completes when the worker's server has finished (graceful shutdown done or killed).
    done: oneshot::Receiver<()>,
    /// Drops the worker's remaining connections at once.
    kill: oneshot::Sender<()>,
}

/// Serve Check on `workers` threads, each with its own single-threaded runtime; one acceptor
/// task on the current runtime hands accepted connections out round robin.
///
/// Why not one multi-threaded runtime: Envoy multiplexes every Check of one of its worker
/// threads on one HTTP/2 connection, and a work-stealing runtime bounces that connection's
/// tasks between threads — measured through Envoy 1.40 (benches/BENCHMARKS.md §3, §6), a
/// single-threaded runtime per connection cut mcp-authz's CPU per Check from 115 to 60–67 µs.
/// Several Envoy workers (or proxies) open several connections, which spread over the threads.
fn start_workers(
    grpc: TcpListener,
    workers: usize,
    stop: &watch::Receiver<bool>,
    routes: Routes,
) -> anyhow::Result<(JoinHandle<()>, Vec<Worker>)> {
    let mut handles = Vec::with_capacity(workers);
    let mut queues = Vec::with_capacity(workers);
    for i in 0..workers {
        let (conn_tx, mut conn_rx) = mpsc::channel::<std::net::TcpStream>(64);
        let (done_tx, done) = oneshot::channel();
        let (kill, kill_rx) = oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building a Check worker runtime")?;
        let routes = routes.clone();
        let mut stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("check-worker-{i}"))
            .spawn(move || {
                rt.block_on(async move {
                    // Each connection is re-registered with this runtime's reactor.
                    let incoming = futures_util::stream::poll_fn(move |cx| conn_rx.poll_recv(cx))
                        .map(tokio::net::TcpStream::from_std);
                    let server = tonic::transport::Server::builder()
                        .add_routes(routes)
                        .serve_with_incoming_shutdown(incoming, async move {
                            let _ = stop.wait_for(|s| *s).await;
                        });
                    tokio::select! {
                        result = server => if let Err(e) = result {
                            tracing::error!(error = %e, worker = i, "grpc server failed");
                        },
                        _ = kill_rx => {}
                    }
                });
                // Dropping the runtime closes whatever connections were left.
                drop(rt);
                let _ = done_tx.send(());
            })
            .context("starting a Check worker thread")?;
        queues.push(conn_tx);
        handles.push(Worker { done, kill });
    }
    let mut stop = stop.clone();
    let acceptor = tokio::spawn(async move {
        let mut next = 0usize;
        loop {
            let accepted = tokio::select! {
                a = grpc.accept() => a,
                _ = stop.wait_for(|s| *s) => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a gRPC connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // TCP_NODELAY: with Nagle on, a Check answer written in two pieces waits for
            // Envoy's delayed ACK, ~40 ms per Check at low load (benches/BENCHMARKS.md).
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "setting TCP_NODELAY failed");
            }
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "handing a gRPC connection to a worker failed");
                    continue;
                }
            };
            // Round robin over the workers still running; a stopped one gets nothing more.
            let mut pending = stream;
            let mut handed = false;
            for _ in 0..queues.len() {
                let queue = &queues[next % queues.len()];
                next = next.wrapping_add(1);
                match queue.send(pending).await {
                    Ok(()) => {
                        handed = true;
                        break;
                    }
                    Err(mpsc::error::SendError(back)) => {
                        tracing::error!("a Check worker has stopped; trying the next one");
                        pending = back;
                    }
                }
            }
            if !handed {
                tracing::error!("no Check worker is running; connection dropped");
            }
        }
        // Dropping the queues ends every worker's incoming stream.
    });
    Ok((acceptor, handles))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
