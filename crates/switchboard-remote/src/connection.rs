//! The one HTTP/2 connection to the server, shared by every publish and subscription.
//!
//! A tonic [`Channel`] multiplexes concurrent calls over one connection and reconnects on
//! its own after the connection drops, so clones of [`Shared::client`] are all a caller needs.

use std::sync::OnceLock;
use std::time::Duration;

use switchboard_core::contract::BusError;
use switchboard_proto::switchboard::v1::switchboard_client::SwitchboardClient;
use tokio::sync::watch;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::error::BACKEND;
use crate::url::Target;

/// How long a TCP connect (and a TLS handshake) may take: an unreachable server must fail
/// fast, not after the OS's minute-long default.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings on idle connections find a server that vanished without closing the socket
/// (a crashed host, a dropped route), which would otherwise leave a consume stream waiting
/// forever.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response accepted. The server splits deliveries into responses of about 3 MiB,
/// but one large message travels alone, so this follows the largest message the server may
/// hold rather than gRPC's 4 MiB default.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Adds `authorization: Bearer <token>` and `switchboard-service: <name>` to every call.
#[derive(Clone)]
pub(crate) struct Auth {
    authorization: Option<AsciiMetadataValue>,
    service: Option<AsciiMetadataValue>,
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        if let Some(value) = &self.service {
            request.metadata_mut().insert(crate::url::SERVICE_KEY, value.clone());
        }
        Ok(request)
    }
}

/// The generated client over the shared channel, with the token.
pub(crate) type Client = SwitchboardClient<InterceptedService<Channel, Auth>>;

/// What every part of the backend shares.
pub(crate) struct Shared {
    /// Cheap to clone; every clone uses the same connection.
    pub(crate) client: Client,
    /// The channel itself, for the health watch.
    channel: Channel,
    /// `host:port`, for errors.
    pub(crate) endpoint: String,
    /// Set once by [`close`](crate::RemoteBackend); consumers stop when it flips.
    pub(crate) closed: watch::Sender<bool>,
    /// Counts the server's shutdowns (see [`crate::health`]); started with the first
    /// subscription, since only consume streams need it.
    shutdowns: OnceLock<watch::Receiver<u64>>,
}

impl Shared {
    /// A client for one call.
    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    /// A receiver that changes when the server begins shutting down.
    pub(crate) fn shutdowns(&self) -> watch::Receiver<u64> {
        self.shutdowns
            .get_or_init(|| crate::health::watch_shutdowns(self.channel.clone(), self.closed.subscribe()))
            .clone()
    }

    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// [`BusError::Closed`] once the backend is closed.
    pub(crate) fn check_open(&self) -> Result<(), BusError> {
        if self.is_closed() { Err(BusError::Closed) } else { Ok(()) }
    }
}

fn unreachable(target: &Target, source: impl std::error::Error + Send + Sync + 'static) -> BusError {
    BusError::Unreachable { backend: BACKEND, endpoint: target.endpoint.clone(), source: Box::new(source) }
}

/// Connects to `target` now, so that a wrong address fails here rather than on first use.
///
/// # Errors
/// [`BusError::InvalidUrl`] for an unreadable CA file, [`BusError::Unreachable`] when the
/// server cannot be reached within [`CONNECT_TIMEOUT`].
pub(crate) async fn connect(target: Target, url: &str) -> Result<Shared, BusError> {
    let invalid = |reason: String| BusError::InvalidUrl { url: crate::url::redact(url), reason };
    let mut endpoint = Endpoint::from_shared(target.uri.clone())
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if target.tls {
        let tls = ClientTlsConfig::new().domain_name(target.host.clone()).timeout(CONNECT_TIMEOUT);
        let tls = match &target.ca {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| invalid(format!("cannot read the CA file {}: {e}", path.display())))?;
                tls.ca_certificate(Certificate::from_pem(pem))
            }
            None => tls.with_webpki_roots(),
        };
        endpoint = endpoint.tls_config(tls).map_err(|e| invalid(format!("TLS setup failed: {e}")))?;
    }
    let channel = match tokio::time::timeout(CONNECT_TIMEOUT * 2, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => return Err(unreachable(&target, e)),
        Err(elapsed) => return Err(unreachable(&target, elapsed)),
    };
    let client = SwitchboardClient::with_interceptor(
        channel.clone(),
        Auth { authorization: target.authorization, service: target.service },
    )
    .max_decoding_message_size(MAX_RESPONSE_BYTES);
    let (closed, _) = watch::channel(false);
    Ok(Shared { client, channel, endpoint: target.endpoint, closed, shutdowns: OnceLock::new() })
}

/// Resolves once the flag is set or its sender is gone. (A function of its own because the
/// guard `wait_for` returns must not be held across an await in a spawned task.)
pub(crate) async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}
