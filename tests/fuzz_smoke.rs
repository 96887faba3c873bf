//! A short run of every fuzz target on the stable toolchain, as part of `cargo test`: each
//! target gets its seed corpus (`fuzz/corpus/<target>/`) and byte-level mutations of it
//! (bit flips, byte changes, insertions, deletions, splices of two seeds, dictionary words).
//! The long runs use cargo-fuzz and libFuzzer (nightly); see docs/fuzzing.md.
//!
//! `NMO_FUZZ_CASES` sets the mutations per target (default 300); `NMO_FUZZ_SECS`, when set,
//! runs each target for that many seconds instead (a blind run, without libFuzzer's coverage
//! feedback); `NMO_FUZZ_SEED` sets the seed.

#[path = "../fuzz/src/targets/mod.rs"]
#[allow(dead_code)]
mod targets;

use std::path::Path;

/// A small deterministic generator (xorshift64*), so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Words that matter to the parsers, spliced into inputs.
const WORDS: &[&str] = &[
    "*",
    "?",
    "/",
    "-",
    ",",
    "@weekly",
    "TZ=",
    "7",
    "60",
    "SUN",
    "jan",
    "1h",
    "30m",
    ".5",
    "µs",
    "Europe/Berlin",
    "in (",
    ")",
    "!",
    "!=",
    "==",
    "notin",
    "metadata.name",
    "%",
    "%zz",
    "&",
    "=",
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    "null",
    "$patch",
    "delete",
    "$retainKeys",
    "$setElementOrder/",
    "$deleteFromPrimitiveList/",
    "k8s\0",
    "RAW\n",
    "\n",
    "\r\n",
    "op",
    "replace",
    "remove",
    "path",
    "/metadata/labels",
    "apiVersion",
    "kind",
    "- ",
    "---\n",
];

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.expect("a corpus entry").path()).expect("a seed"))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(7) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            2 => data.insert(at, rng.next() as u8),
            3 if !data.is_empty() => {
                let start = rng.below(data.len());
                let end = (start + 1 + rng.below(8)).min(data.len());
                data.drain(start..end);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                let tail = other[from..].to_vec();
                data.truncate(at);
                data.extend(tail);
            }
            _ => {
                let word = WORDS[rng.below(WORDS.len())].as_bytes();
                data.splice(at..at, word.iter().copied());
            }
        }
    }
    data
}

fn run(target: &str) {
    let (_, body) = targets::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target");
    let cases: usize = std::env::var("NMO_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("NMO_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6e6d_6f5f_6675_7a7a);
    let corpus = seeds(target);
    let mut slowest = (std::time::Duration::ZERO, Vec::new());
    for input in &corpus {
        let started = std::time::Instant::now();
        body(input);
        if started.elapsed() > slowest.0 {
            slowest = (started.elapsed(), input.clone());
        }
    }
    let until = std::env::var("NMO_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(|secs| std::time::Instant::now() + std::time::Duration::from_secs(secs));
    let mut rng = Rng(seed | 1);
    let mut executed = 0usize;
    while until.map_or(executed < cases, |t| std::time::Instant::now() < t) {
        executed += 1;
        let input = mutate(&mut rng, &corpus);
        // A failing input is printed before the panic's message, to reproduce it with
        // `cargo +nightly fuzz run <target> <file>` once written to a file.
        let started = std::time::Instant::now();
        let result = std::panic::catch_unwind(|| body(&input));
        if started.elapsed() > slowest.0 {
            slowest = (started.elapsed(), input.clone());
        }
        if let Err(panic) = result {
            eprintln!("{target}: failing input {input:?}");
            std::panic::resume_unwind(panic);
        }
    }
    println!(
        "{target}: {} seeds and {executed} mutations, no failure; slowest input {:?}: {:?}",
        corpus.len(),
        slowest.0,
        String::from_utf8_lossy(&slowest.1)
    );
}

#[test]
fn cron() {
    run("cron");
}

#[test]
fn duration() {
    run("duration");
}

#[test]
fn manifest() {
    run("manifest");
}

#[test]
fn selectors() {
    run("selectors");
}

#[test]
fn sandbox_bodies() {
    run("sandbox_bodies");
}

#[test]
fn sandbox_http() {
    run("sandbox_http");
}
