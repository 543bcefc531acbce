//! Property tests: the manifest encoding round-trips and ids ignore input order; path
//! validation agrees with a plain statement of the rules.

use proptest::prelude::*;

use execroot::store::manifest::{validate_path, Entry, Manifest, Node};
use execroot::Hash;

fn name() -> impl Strategy<Value = Vec<u8>> {
    // Any bytes but NUL and '/', including newlines and invalid UTF-8; never "." or "..".
    proptest::collection::vec(any::<u8>().prop_filter("no NUL or /", |b| *b != 0 && *b != b'/'), 1..12)
        .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

fn node() -> impl Strategy<Value = Node> {
    prop_oneof![
        Just(Node::Dir),
        (any::<u64>(), any::<[u8; 32]>()).prop_map(|(size, h)| Node::File { size, hash: Hash(h) }),
        // Any bytes but NUL, at least one: what symlink(2) accepts (the 4095-byte limit is tested in bad_input.rs).
        proptest::collection::vec(1..=255u8, 1..40).prop_map(|target| Node::Symlink { target }),
    ]
}

/// A random valid tree: each entry's parent is a directory chosen among earlier directories.
fn tree() -> impl Strategy<Value = Vec<Entry>> {
    proptest::collection::vec((name(), node(), any::<usize>(), 0u32..0o10000, any::<i64>(), 0u32..1_000_000_000), 0..40)
        .prop_map(|specs| {
            let mut entries = vec![Entry { path: vec![], mode: 0o755, mtime_sec: 0, mtime_nsec: 0, node: Node::Dir }];
            let mut dirs: Vec<Vec<u8>> = vec![vec![]];
            let mut seen = std::collections::HashSet::new();
            for (n, node, pick, mode, sec, nsec) in specs {
                let parent = &dirs[pick % dirs.len()];
                let path = if parent.is_empty() { n } else { [parent.as_slice(), b"/", &n].concat() };
                if !seen.insert(path.clone()) {
                    continue;
                }
                if node == Node::Dir {
                    dirs.push(path.clone());
                }
                entries.push(Entry { path, mode, mtime_sec: sec, mtime_nsec: nsec, node });
            }
            entries
        })
}

proptest! {
    #[test]
    fn encoding_round_trips_and_ignores_order(entries in tree(), parents in proptest::collection::vec(any::<[u8; 32]>(), 0..3), seed in any::<u64>()) {
        let parents: Vec<Hash> = parents.into_iter().map(Hash).collect();
        let m = Manifest::new(parents.clone(), entries.clone()).unwrap();
        let bytes = m.encode();
        prop_assert_eq!(Manifest::decode(&bytes).unwrap(), m.clone());
        // Any permutation of the input gives the same id.
        let mut shuffled = entries;
        let n = shuffled.len();
        let mut s = seed;
        for i in (1..n).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        prop_assert_eq!(Manifest::new(parents, shuffled).unwrap().id(), m.id());
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Manifest::decode(&bytes);
        let mut with_magic = execroot::store::manifest::MAGIC.to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = Manifest::decode(&with_magic);
    }

    #[test]
    fn path_validation_matches_the_rules(path in proptest::collection::vec(prop_oneof![Just(b'/'), Just(b'.'), Just(0u8), Just(b'a'), Just(b'\n'), Just(0xffu8)], 0..12)) {
        let comps: Vec<&[u8]> = path.split(|&c| c == b'/').collect();
        let expected = !path.is_empty()
            && !path.contains(&0)
            && comps.iter().all(|c| !c.is_empty() && *c != b"." && *c != b"..");
        prop_assert_eq!(validate_path(&path).is_ok(), expected, "path {:?}", path);
    }
}
