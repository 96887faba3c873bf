//! Draining: which pods to evict (pure) and the eviction/wait loop (I/O).
