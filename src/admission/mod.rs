//! Admission rules (pure) shared by the webhook and `nmo validate`.
