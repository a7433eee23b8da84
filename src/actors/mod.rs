//! Per-workspace actors: each owns its workspace's rate limiters and hot key cache.

pub mod rate_journal;
pub mod registry;
pub mod workspace;

pub use registry::{CacheLookup, CacheSettings, WorkspaceHandle, WorkspaceRegistry};
pub use workspace::{CachedKey, WorkspaceActor, WorkspaceState};
