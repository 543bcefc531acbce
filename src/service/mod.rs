//! `execroot serve`: the library over HTTP/1.1 and JSON on a unix socket (docs/api.md). A front
//! end like the CLI, with no logic of its own: the routes call the library, which also holds
//! the rules of who may do what (`execroot::root::caller`).
//!
//! - [`socket`]: binding the socket, and each connection's caller from `SO_PEERCRED`;
//! - [`auth`]: the caller of a request;
//! - [`routes`]: the route table and its handlers;
//! - [`errors`]: the error document and its statuses.

pub mod auth;
pub mod errors;
pub mod routes;
pub mod socket;

use std::path::PathBuf;
use std::sync::Arc;

use execroot::error::{Error, Result};
use execroot::Store;

/// Overlay root skeletons kept ready (`execroot::root::pool`): enough for a burst of creates
/// from a few callers; past it, creates make their directories themselves.
const POOL_SIZE: usize = 16;

/// How to serve.
pub struct ServeOptions {
    /// The socket (default `STORE/execroot.sock`).
    pub socket: Option<PathBuf>,
    /// Its mode.
    pub mode: u32,
    /// Its group.
    pub group: Option<u32>,
}

/// Serve `store` until SIGTERM or SIGINT: repair what a crash or reboot left (doctor), bind the
/// socket, answer; on the signal stop accepting, finish the requests in flight, remove the
/// socket and return, leaving every root as it is.
pub fn serve(store: Store, opts: ServeOptions) -> Result<()> {
    let path = opts.socket.unwrap_or_else(|| store.path().join(execroot::store::perms::SOCKET_NAME));
    socket::check_free(&path)?;
    let report = store.doctor(true)?;
    for f in &report.findings {
        tracing::warn!(kind = f.kind.as_str(), path = %f.path.display(), action = %f.action, repaired = f.repaired, "doctor at startup");
    }
    // After doctor (which sweeps the skeletons a killed service left): creates on the request
    // path then make no directory of their own. Without it creates still work, making them.
    let pool = match execroot::root::pool::RootPool::start(&store, POOL_SIZE) {
        Ok(p) => Some(Arc::new(p)),
        Err(e) => {
            tracing::warn!("no root skeletons made ahead: {e}");
            None
        }
    };
    let std_listener = socket::bind(&path, opts.mode, opts.group)?;
    let _socket = socket::SocketFile::new(&path);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("execroot-serve")
        .build()
        .map_err(|e| Error::io(&path, e))?;
    let served = pool.clone();
    rt.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(std_listener).map_err(|e| Error::io(&path, e))?;
        let app = routes::App { store: Arc::new(store), pool: served };
        let router = routes::router(app);
        tracing::info!(socket = %path.display(), "serving");
        axum::serve(listener, router.into_make_service_with_connect_info::<socket::Peer>())
            .with_graceful_shutdown(stop_signal())
            .await
            .map_err(|e| Error::io(&path, e))
    })?;
    // Requests still on the blocking pool have been answered; nothing else is waited for.
    rt.shutdown_background();
    // A connection task shut down in the background may still hold the pool: its mounts ahead
    // are unmounted now, not left to a drop that may never come before the process exits.
    if let Some(p) = &pool {
        p.close();
    }
    Ok(())
}

/// SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the service is stopped by SIGKILL only: doctor at the next
        // start repairs what that leaves.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping: finishing the requests in flight");
}
