//! The HTTP accept loop. The server runs its own (hyper-util) rather than `axum::serve`,
//! because it needs TLS (tokio-rustls), a connection limit (a semaphore whose permits are
//! also the shutdown barrier), timeouts for handshakes and request heads, and graceful
//! shutdown of every open connection.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::stopped;

/// How long a TLS handshake or an HTTP/1 request head may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts HTTP connections (TLS optional) until told to stop, then lets every open
/// connection finish its requests in flight.
pub(crate) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "Could not set TCP_NODELAY.");
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max_connections, "Connection limit reached: refused a connection.");
            continue;
        };
        let (app, acceptor, mut stop) = (app.clone(), acceptor.clone(), stop.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => serve_connection(TokioIo::new(stream), app, &mut stop).await,
                // A client that never finishes its handshake must not hold a slot forever.
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(TokioIo::new(tls), app, &mut stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed."),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out."),
                    }
                }
            }
        });
    }
    // Every connection holds a slot: having them all back means every connection is done.
    let _ = slots.acquire_many(max_connections as u32).await;
}

/// Serves one connection (HTTP/1.1 with upgrades, or HTTP/2) until it ends or the server
/// stops; on stop it finishes the requests in flight and closes.
async fn serve_connection<I>(io: I, app: axum::Router, stop: &mut watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A client that opens a connection and never sends a request head must not hold a slot.
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HANDSHAKE_TIMEOUT);
    let conn = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "HTTP connection ended with an error.");
            }
        }
        _ = stopped(stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
