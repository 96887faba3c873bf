//! The fuzz targets' bodies, shared by the cargo-fuzz binaries (`fuzz/fuzz_targets/`, nightly,
//! libFuzzer) and the stable smoke test (`tests/fuzz_smoke.rs`, run by `cargo test`).
//!
//! Each target takes arbitrary bytes, must not panic, and asserts properties of what it
//! parses (round trips, agreement between implementations, errors that say what is wrong).
//! See `docs/fuzzing.md`.

pub mod input;
pub mod sandbox_bodies;
pub mod sandbox_http;
pub mod schedule;
pub mod selectors;

use nmo::sandbox::resources::{self, ResourceType};
use std::sync::OnceLock;

pub use sandbox_bodies::sandbox_bodies;
pub use sandbox_http::sandbox_http;
pub use schedule::{cron, duration, manifest};
pub use selectors::selectors;

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target by name: the name is also its directory under `fuzz/corpus/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("cron", cron),
    ("duration", duration),
    ("manifest", manifest),
    ("selectors", selectors),
    ("sandbox_bodies", sandbox_bodies),
    ("sandbox_http", sandbox_http),
];

/// The sandbox's built-in resource types.
pub fn builtin_types() -> &'static [ResourceType] {
    static TYPES: OnceLock<Vec<ResourceType>> = OnceLock::new();
    TYPES.get_or_init(resources::builtins)
}

/// The built-in types and nmo's two CRDs.
pub fn all_types() -> &'static [ResourceType] {
    static TYPES: OnceLock<Vec<ResourceType>> = OnceLock::new();
    TYPES.get_or_init(|| {
        let mut types = resources::builtins();
        for crd in nmo::api::crds() {
            let v = serde_json::to_value(&crd).expect("a CRD as JSON");
            types.push(resources::from_crd(&v).expect("nmo's CRDs are valid"));
        }
        types
    })
}
