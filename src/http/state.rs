//! What handlers share: built once at start, passed as `web::Data`.

use std::sync::Arc;

use crate::actors::WorkspaceRegistry;
use crate::domain::hashing::{KeyHash, KeyHasher};
use crate::metrics::Metrics;
use crate::queue::JobQueue;
use crate::store::SharedStore;
use crate::verify::Verifier;

pub struct AppState {
    pub verifier: Verifier,
    pub store: SharedStore,
    pub queue: Arc<dyn JobQueue>,
    pub registry: Arc<WorkspaceRegistry>,
    pub hasher: KeyHasher,
    pub metrics: Arc<Metrics>,
    /// BLAKE3 of the admin token; the token itself is not kept.
    pub admin_token_hash: KeyHash,
}
