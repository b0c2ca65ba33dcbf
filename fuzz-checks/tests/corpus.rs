//! Every fuzz target over its committed seeds (`fuzz/corpus/TARGET/`) and a bounded
//! number of mutations of them: the smoke test CI always runs, on stable. Longer runs
//! with coverage guidance are `scripts/fuzz.sh TARGET SECONDS` (cargo-fuzz, nightly).

use std::path::PathBuf;

/// Mutated inputs per target: a few seconds in a debug build on two cores.
const MUTATIONS: u64 = 4000;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// xorshift64: the same mutations every run, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four edits of the kinds libFuzzer makes first: flip, set, insert, delete,
/// duplicate a run, splice in part of another seed.
fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        let last = out.len().saturating_sub(1);
        match rng.below(6) {
            0 if !out.is_empty() => out[at.min(last)] ^= 1 << rng.below(8),
            1 if !out.is_empty() => {
                let interesting = [0u8, 0xff, 0x7f, 0x80, b'+', b'-', b'.', b':', b'/', b'['];
                out[at.min(last)] = interesting[rng.below(interesting.len())];
            }
            2 => out.insert(at, rng.next() as u8),
            3 if at < out.len() => {
                let end = (at + 1 + rng.below(8)).min(out.len());
                out.drain(at..end);
            }
            4 if at < out.len() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                let run = out[at..end].to_vec();
                out.splice(at..at, run);
            }
            _ => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                let to = (from + rng.below(32)).min(other.len());
                out.splice(at..at, other[from..to].iter().copied());
            }
        }
    }
    out
}

#[test]
fn every_target_survives_its_seeds_and_their_mutations() {
    for (name, check) in labssh_fuzz_checks::TARGETS {
        let seeds = seeds(name);
        for seed in &seeds {
            check(seed);
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        for _ in 0..MUTATIONS {
            let seed = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, seed, &seeds);
            check(&input);
        }
    }
}

#[test]
fn every_target_has_a_fuzz_binary_and_seeds() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
    for (name, _) in labssh_fuzz_checks::TARGETS {
        assert!(
            fuzz.join(format!("fuzz_targets/{name}.rs")).is_file(),
            "{name}"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} in fuzz/Cargo.toml"
        );
        assert!(!seeds(name).is_empty());
    }
}
