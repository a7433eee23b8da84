//! What handlers share: built once at start, passed as `web::Data`.

use std::sync::Arc;

use crate::actors::WorkspaceRegistry;
use crate::domain::hashing::KeyHasher;
use crate::metrics::Metrics;
use crate::queue::JobQueue;
use crate::secrets::AdminToken;
use crate::store::SharedStore;
use crate::verify::Verifier;

pub struct AppState {
    pub verifier: Verifier,
    pub store: SharedStore,
    pub queue: Arc<dyn JobQueue>,
    pub registry: Arc<WorkspaceRegistry>,
    pub hasher: KeyHasher,
    pub metrics: Arc<Metrics>,
    /// The admin token, by its hash; the token itself is not kept.
    pub admin_token: AdminToken,
}
