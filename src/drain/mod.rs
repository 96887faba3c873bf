//! Draining: which pods to evict (pure, [`filter`]) and the eviction/wait loop (I/O, [`evict`]).
//!
//! A drain watches the pods of one node (fieldSelector `spec.nodeName`), evicts the evictable
//! ones concurrently through the policy/v1 Eviction API, treats PodDisruptionBudget refusals as
//! expected and retries them with backoff, and ends once nothing evictable is left.

pub mod evict;
pub mod filter;

pub use evict::{
    BlockedEviction, DrainContext, DrainError, DrainReport, DrainSeed, DrainSettings, DrainState,
    EvictionOutcome, drain_node, evict_pod, eviction_outcome,
};
pub use filter::{
    DrainPlan, EvictReason, PodDisposition, PodKey, SkipReason, classify, drain_progress, origin,
    plan_drain, tolerates_unschedulable,
};
