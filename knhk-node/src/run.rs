//! `knhk-node run`: loads the configuration, starts the node and its admin endpoint,
//! and on SIGINT or SIGTERM leaves the mesh, stores its state and stops.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use knhk_security::NodeKey;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::admin::{AdminState, router};
use crate::config::{Config, Settings};
use crate::daemon::Daemon;
use crate::error::NodeError;

/// How long a leaving node lets the news of its leave go out.
const LEAVE_LINGER: Duration = Duration::from_millis(500);
/// How long shutdown waits for in-flight requests and the last commit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Reads `config_path` with the environment's overrides applied, and checks it.
///
/// Errors: [`NodeError::Config`] naming the file or field.
pub fn load(config_path: &Path) -> Result<(Config, Settings), NodeError> {
    let mut config = Config::load(config_path)?;
    config.apply_env(|name| std::env::var(name).ok());
    let base = config_path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_owned);
    let settings = config.settings(&base)?;
    Ok((config, settings))
}

/// Runs the node until SIGINT or SIGTERM. Returns once it has left and stopped.
///
/// Errors: anything that keeps the node from starting ([`NodeError::Key`],
/// [`NodeError::Store`], [`NodeError::Certificate`], [`NodeError::AdminBind`],
/// [`NodeError::Topology`]); nothing is left running then.
pub fn run(settings: &Settings) -> Result<(), NodeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("knhk-node")
        .build()
        .map_err(|source| NodeError::File {
            path: PathBuf::from("<tokio runtime>"),
            source,
        })?;
    runtime.block_on(serve(settings))
}

async fn serve(settings: &Settings) -> Result<(), NodeError> {
    let exports = knhk_telemetry::Exports {
        prometheus: settings.admin_bind.is_some(),
    };
    let telemetry = knhk_telemetry::init("knhk-node", exports)
        .map_err(|error| NodeError::Usage(format!("telemetry (OTEL_* variables): {error}")));
    let telemetry = match telemetry {
        Ok(guard) => Some(guard),
        // A subscriber installed already (tests in one process) is not fatal.
        Err(error) => {
            eprintln!("warning: {error}");
            None
        }
    };
    let key = NodeKey::load(&settings.key_file).map_err(|error| {
        NodeError::Usage(format!(
            "{error} (create one with `knhk-node keygen --out {}`)",
            settings.key_file.display()
        ))
    })?;
    let token = crate::token::load_or_create(&settings.token_file, &settings.data_dir)?;
    let listener = match settings.admin_bind {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::AdminBind { addr, source })?,
        ),
        None => None,
    };
    let (daemon, store_thread) = Daemon::start(settings, key)?;
    let (stopping, stopped) = watch::channel(false);
    let admin = match listener {
        Some(listener) => {
            let admin_addr = listener
                .local_addr()
                .map_err(|source| NodeError::AdminBind {
                    addr: settings
                        .admin_bind
                        .unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
                    source,
                })?;
            let state = Arc::new(AdminState::new(
                daemon.clone(),
                token,
                !admin_addr.ip().is_loopback(),
                stopped.clone(),
                telemetry.as_ref().and_then(|guard| guard.prometheus()),
            ));
            let mut until = stopped.clone();
            let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
                let _ = until.wait_for(|stop| *stop).await;
            });
            tracing::info!(admin = %format!("http://{admin_addr}"), "admin endpoint up");
            Some(tokio::spawn(async move { server.await }))
        }
        None => None,
    };
    let info = daemon.info();
    tracing::info!(
        id = %daemon.node().id(),
        quic = %daemon.node().local_addr(),
        cluster = %info.cluster,
        admission = info.admission,
        keys_restored = info.keys_restored,
        store = %info.store_path.display(),
        "knhk-node running"
    );

    let signal_name = wait_for_signal().await;
    tracing::info!(signal = signal_name, "shutting down: leaving the mesh");
    let _ = stopping.send(true);
    // A second signal stops at once.
    tokio::spawn(async {
        let _ = wait_for_signal().await;
        eprintln!("second signal: stopping now");
        std::process::exit(i32::from(crate::error::exit::FAILURE));
    });
    if let Some(admin) = admin {
        match tokio::time::timeout(SHUTDOWN_GRACE, admin).await {
            Ok(Ok(Err(error))) => tracing::warn!(%error, "admin endpoint"),
            Err(_) => tracing::warn!("admin requests still open after the grace period"),
            _ => {}
        }
    }
    let node = daemon.node();
    if let Err(error) = node.topology().leave(node.mesh().node()).await {
        tracing::warn!(%error, "announcing the leave");
    }
    tokio::time::sleep(LEAVE_LINGER).await;
    match daemon.store_everything().await {
        Ok(keys) => tracing::info!(keys, "state stored"),
        Err(error) => tracing::error!(%error, "storing the state at shutdown"),
    }
    shutdown(daemon).await;
    // Every writer handle is gone with the daemon: the thread writes what is queued.
    let joined = tokio::task::spawn_blocking(move || store_thread.join()).await;
    if !matches!(joined, Ok(Ok(()))) {
        tracing::error!("the store writer did not finish cleanly");
    }
    drop(telemetry);
    Ok(())
}

/// Stops the node once the last other holder (the persister, between two batches)
/// has let go of the daemon.
async fn shutdown(mut daemon: Arc<Daemon>) {
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    loop {
        match Arc::try_unwrap(daemon) {
            Ok(daemon) => {
                if let Err(error) = daemon.into_node().shutdown().await {
                    tracing::warn!(%error, "stopping the node");
                }
                return;
            }
            Err(shared) if tokio::time::Instant::now() < deadline => {
                daemon = shared;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => {
                tracing::warn!("the node is still in use; stopping it with the process");
                return;
            }
        }
    }
}

async fn wait_for_signal() -> &'static str {
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without signal handlers, ctrl-c is the only way.
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
