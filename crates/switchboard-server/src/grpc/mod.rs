//! gRPC API (`switchboard.v1`). Filled in by the gRPC work.

use tonic::service::Routes;

use crate::state::AppState;

/// Every gRPC service: the API, health checking and reflection.
pub(crate) fn routes(_state: AppState) -> Routes {
    let (_reporter, health) = tonic_health::server::health_reporter();
    Routes::new(health)
}
