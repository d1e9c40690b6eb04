//! Noticing that the server is shutting down, so consume streams leave it promptly.
//!
//! A graceful shutdown of `switchboard serve` stops accepting connections and waits for the
//! calls in flight, and a consume stream is a call that never ends on its own: left open, it
//! would hold the shutdown back for its whole grace period. The server reports
//! `NOT_SERVING` on the standard health service as soon as shutdown begins, so one task per
//! backend watches it and bumps a counter; every consume stream then ends itself and is
//! reopened (with backoff) on the restarted server.

use std::time::Duration;

use switchboard_policy::Reconnect;
use tokio::sync::watch;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::connection::stopped;

/// The service whose health the server reports.
const SERVICE: &str = "switchboard.v1.Switchboard";
/// The longest wait before watching again; jittered (see [`Reconnect`]) so the watches of
/// many clients do not all hit a restarted server at once.
const MAX_BACKOFF: Duration = Duration::from_millis(1500);

/// Starts the watch; the counter moves each time the server is seen shutting down. The task
/// ends when the backend closes, or at once if the server has no health service.
pub(crate) fn watch_shutdowns(channel: Channel, mut closed: watch::Receiver<bool>) -> watch::Receiver<u64> {
    let (shutdowns, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        let mut reconnect = Reconnect::up_to(MAX_BACKOFF);
        loop {
            let watched = async {
                let request = HealthCheckRequest { service: SERVICE.to_owned() };
                let mut updates = HealthClient::new(channel.clone()).watch(request).await?.into_inner();
                while let Some(update) = updates.message().await? {
                    if update.status == ServingStatus::NotServing as i32 {
                        // Dropping `updates` here ends this stream too, so the watch itself
                        // does not hold the shutdown back.
                        shutdowns.send_modify(|n| *n += 1);
                        return Ok(true);
                    }
                }
                Ok::<_, tonic::Status>(false)
            };
            let outcome = tokio::select! {
                outcome = watched => outcome,
                () = stopped(&mut closed) => return,
            };
            match outcome {
                // Watched until a shutdown: the server is going; wait before looking again.
                Ok(true) => reconnect.reset(),
                Ok(false) => {}
                Err(s) if matches!(s.code(), Code::Unimplemented | Code::NotFound) => {
                    tracing::debug!(status = %s, "The server reports no health; restarts are noticed when streams break.");
                    return;
                }
                Err(_) => {}
            }
            tokio::select! {
                () = tokio::time::sleep(reconnect.next_delay()) => {}
                () = stopped(&mut closed) => return,
            }
        }
    });
    rx
}
