//! The bodies of nmo's fuzz targets; see `targets`.
pub mod targets;
