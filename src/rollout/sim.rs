//! Proptest simulator (filled in next).
