//! Names of the NodeMaintenances a window generates.

use sha2::{Digest, Sha256};

/// Longest Kubernetes object name for a DNS subdomain.
pub const MAX_NAME_LEN: usize = 253;

/// Hex characters of the hash suffix used when `<window>-<node>` is too long.
const HASH_LEN: usize = 10;

/// The name of the NodeMaintenance that `window` creates for `node`: `<window>-<node>`.
///
/// Both parts are already valid object names, so the join is a valid DNS subdomain unless it
/// is longer than 253 characters. Then it is cut and ends with `-` and a hash of the full
/// pair, which keeps it stable across reconciles and distinct between nodes sharing a prefix.
pub fn nm_name(window: &str, node: &str) -> String {
    let full = format!("{window}-{node}");
    if full.len() <= MAX_NAME_LEN {
        return full;
    }
    let digest = Sha256::digest(format!("{window}\0{node}").as_bytes());
    let hash: String = digest
        .iter()
        .take(HASH_LEN / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    // Cut on a char boundary, then drop separators so that no "-." or "--" style
    // empty label appears in front of the suffix.
    let mut cut = MAX_NAME_LEN - HASH_LEN - 1;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    let prefix = full[..cut].trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns_subdomain(name: &str) -> bool {
        let label = regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap();
        name.len() <= MAX_NAME_LEN && name.split('.').all(|l| label.is_match(l))
    }

    #[test]
    fn a_short_name_is_window_dash_node() {
        assert_eq!(nm_name("weekly", "worker-1"), "weekly-worker-1");
    }

    #[test]
    fn a_name_of_exactly_253_characters_is_kept() {
        let node = "n".repeat(253 - "w-".len());
        assert_eq!(nm_name("w", &node).len(), 253);
        assert_eq!(nm_name("w", &node), format!("w-{node}"));
    }

    #[test]
    fn a_long_name_is_shortened_to_a_valid_stable_name() {
        let node = format!("{}.example.com", "a".repeat(250));
        let name = nm_name("window", &node);
        assert_eq!(name.len(), 253);
        assert!(is_dns_subdomain(&name), "{name}");
        assert_eq!(name, nm_name("window", &node));
    }

    #[test]
    fn long_names_sharing_a_prefix_get_different_names() {
        let a = format!("{}-a", "x".repeat(260));
        let b = format!("{}-b", "x".repeat(260));
        assert_ne!(nm_name("w", &a), nm_name("w", &b));
    }

    #[test]
    fn a_cut_landing_on_a_dot_or_dash_still_gives_a_valid_name() {
        for pad in 0..20 {
            let node = format!(
                "{}{}",
                "a".repeat(230 + pad),
                ".b-c.d-e.f-g.h-i.j-k.l-m.n-o.p"
            );
            let name = nm_name("w", &node);
            assert!(is_dns_subdomain(&name), "{name}");
        }
    }
}
