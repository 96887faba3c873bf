//! Names of the NodeMaintenances a window generates.

use sha2::{Digest, Sha256};

/// Longest Kubernetes object name for a DNS subdomain.
pub const MAX_NAME_LEN: usize = 253;

/// Hex characters of the hash suffix.
const HASH_LEN: usize = 8;

/// The name of the NodeMaintenance that `window` creates for `node`:
/// `<window>-<node>-<hash>`, where `<hash>` is 8 hex characters of SHA-256 over
/// `window`, a NUL byte and `node`.
///
/// The plain join `<window>-<node>` is ambiguous because both names may contain `-` (and
/// `.`): window `gpu` with node `pool-a-1` and window `gpu-pool` with node `a-1` would both
/// give `gpu-pool-a-1`. DNS-1123 names have no character left to use as an unambiguous
/// separator, so the pair itself is hashed: two different (window, node) pairs get the same
/// name only if their hashes collide as well. The readable part stays in front.
///
/// When the result would be longer than 253 characters, the readable part is cut (and any
/// trailing `-` or `.` dropped) so that the whole name is exactly 253 characters; the hash
/// still covers the full pair, so the name is stable and distinct between nodes sharing a
/// prefix.
pub fn nm_name(window: &str, node: &str) -> String {
    let digest = Sha256::digest(format!("{window}\0{node}").as_bytes());
    let hash: String = digest
        .iter()
        .take(HASH_LEN / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    let full = format!("{window}-{node}");
    let room = MAX_NAME_LEN - HASH_LEN - 1;
    if full.len() <= room {
        return format!("{full}-{hash}");
    }
    // Cut on a char boundary, then drop separators so that no "-." or "--" style
    // empty label appears in front of the suffix.
    let mut cut = room;
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
    fn a_short_name_is_window_dash_node_dash_hash() {
        let name = nm_name("weekly", "worker-1");
        let (readable, hash) = name.rsplit_once('-').unwrap();
        assert_eq!(readable, "weekly-worker-1");
        assert_eq!(hash.len(), HASH_LEN);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
        assert!(is_dns_subdomain(&name), "{name}");
    }

    #[test]
    fn pairs_whose_plain_join_is_the_same_get_different_names() {
        assert_ne!(nm_name("gpu", "pool-a-1"), nm_name("gpu-pool", "a-1"));
        assert_ne!(nm_name("a.b", "c"), nm_name("a", "b.c"));
    }

    #[test]
    fn the_name_is_stable() {
        assert_eq!(nm_name("weekly", "worker-1"), nm_name("weekly", "worker-1"));
    }

    #[test]
    fn a_name_that_fits_keeps_the_whole_pair() {
        let node = "n".repeat(MAX_NAME_LEN - "w-".len() - HASH_LEN - 1);
        let name = nm_name("w", &node);
        assert_eq!(name.len(), MAX_NAME_LEN);
        assert!(name.starts_with(&format!("w-{node}-")), "{name}");
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
