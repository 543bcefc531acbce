//! Bad input gets a clear error naming the problem and leaves the store as it was.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use execroot::store::{Entry, Manifest, Node};
use execroot::Hash;

/// The store holds no snapshot and no object.
fn assert_store_empty(env: &Env) {
    assert_eq!(env.ok(&["snapshot", "list"])["snapshots"].as_array().unwrap().len(), 0);
    assert_eq!(env.object_count(), 0, "objects were written");
}

fn message(v: &serde_json::Value) -> String {
    v["error"]["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn special_files_are_refused_or_skipped() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("ok"), b"fine").unwrap();
    nix::unistd::mkfifo(&src.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let v = env.fails(&["snapshot", "create", src.to_str().unwrap()], 2);
    assert!(message(&v).contains("fifo") && message(&v).contains("FIFO"), "{v}");
    assert_store_empty(&env);

    let _sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    let mut expected = 2;
    if is_root() {
        nix::sys::stat::mknod(
            &src.join("null-dev"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        expected = 3;
    }
    std::fs::remove_file(src.join("fifo")).unwrap();
    let v = env.fails(&["snapshot", "create", src.to_str().unwrap()], 2);
    assert!(message(&v).contains("socket") || message(&v).contains("device"), "{v}");
    nix::unistd::mkfifo(&src.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();

    let v = env.ok(&["snapshot", "create", src.to_str().unwrap(), "--skip-special"]);
    let warnings = v["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), expected, "{v}");
    assert!(warnings.iter().any(|w| w.as_str().unwrap().contains("fifo")));
    assert_eq!(v["files"], 1);
    assert_eq!(v["entries"], 2);
}

#[test]
fn missing_or_non_directory_source() {
    let env = Env::new();
    let v = env.fails(&["snapshot", "create", env.path("nope").to_str().unwrap()], 2);
    assert!(message(&v).contains("nope") && message(&v).contains("no such directory"), "{v}");
    std::fs::write(env.path("file"), b"x").unwrap();
    let v = env.fails(&["snapshot", "create", env.path("file").to_str().unwrap()], 2);
    assert!(message(&v).contains("not a directory"), "{v}");
    let v = env.fails(&["snapshot", "create", "--tar", env.path("missing.tar").to_str().unwrap()], 2);
    assert!(message(&v).contains("missing.tar"), "{v}");
    assert_store_empty(&env);
}

#[test]
fn unreadable_file_is_named() {
    if !needs_root("needs root to run the binary as another user") {
        return;
    }
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("readable"), b"r").unwrap();
    std::fs::write(src.join("locked"), b"secret").unwrap();
    std::fs::set_permissions(src.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::create_dir(src.join("closed")).unwrap();
    std::fs::set_permissions(src.join("closed"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let store = env.path("nobody-store");
    std::fs::create_dir(&store).unwrap();
    nix::unistd::chown(&store, Some(65534.into()), Some(65534.into())).unwrap();
    for target in ["locked", "closed"] {
        let dir = env.path(&format!("src-{target}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::rename(src.join(target), dir.join(target)).unwrap();
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(assert_cmd::cargo::cargo_bin("execroot"))
            .arg("--store")
            .arg(&store)
            .args(["--json", "snapshot", "create"])
            .arg(&dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let v = parse(&out);
        assert!(message(&v).contains(target) && message(&v).contains("Permission denied"), "{v}");
    }
    let snaps = std::fs::read_dir(store.join("snapshots")).unwrap().count();
    assert_eq!(snaps, 0);
}

#[test]
fn file_changing_while_hashed_fails_the_ingest() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    // Large enough to take the streaming path, so reading it takes a while.
    std::fs::write(src.join("growing.log"), vec![b'x'; 24 << 20]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let writer = {
        let stop = stop.clone();
        let path = src.join("growing.log");
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            f.write_all(b"first\n").unwrap();
            started_tx.send(()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.write_all(b"more\n").unwrap();
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        })
    };
    started_rx.recv().unwrap();
    let v = env.fails(&["snapshot", "create", src.to_str().unwrap()], 2);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(message(&v).contains("growing.log") && message(&v).contains("changed"), "{v}");
    assert_eq!(env.ok(&["snapshot", "list"])["snapshots"].as_array().unwrap().len(), 0);
}

fn entry(path: &[u8], node: Node) -> Entry {
    Entry { path: path.to_vec(), mode: 0o755, mtime_sec: 0, mtime_nsec: 0, node }
}

/// Write an unvalidated manifest straight into the store, as an attacker or a disk fault would.
fn plant(env: &Env, m: &Manifest) -> String {
    let bytes = m.encode();
    let id = Hash::of(&bytes).to_hex();
    let dir = env.store().join("snapshots").join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest"), bytes).unwrap();
    id
}

#[test]
fn hostile_manifests_are_rejected_before_anything_is_written() {
    let env = Env::new();
    env.ok(&["snapshot", "list"]);
    let outside = env.path("outside");
    std::fs::create_dir(&outside).unwrap();
    let f = |s: &[u8]| Node::File { size: s.len() as u64, hash: Hash::of(s) };
    let root = || entry(b"", Node::Dir);
    let cases: Vec<(&str, Vec<Entry>)> = vec![
        ("absolute", vec![root(), entry(b"/etc/evil", f(b"x"))]),
        ("dotdot", vec![root(), entry(b"..", Node::Dir), entry(b"../evil", f(b"x"))]),
        ("inner dotdot", vec![root(), entry(b"a", Node::Dir), entry(b"a/../../evil", f(b"x"))]),
        ("duplicate", vec![root(), entry(b"a", f(b"x")), entry(b"a", f(b"y"))]),
        ("unordered", vec![root(), entry(b"b", f(b"x")), entry(b"a", f(b"y"))]),
        (
            "symlink parent",
            vec![
                root(),
                entry(b"link", Node::Symlink { target: outside.to_str().unwrap().as_bytes().to_vec() }),
                entry(b"link/evil", f(b"x")),
            ],
        ),
        ("missing parent", vec![root(), entry(b"a/b", f(b"x"))]),
        ("no root", vec![entry(b"a", f(b"x"))]),
        ("whiteout in base", vec![root(), entry(b"a", Node::Whiteout)]),
    ];
    for (name, entries) in cases {
        let id = plant(&env, &Manifest { parents: vec![], entries });
        let dest = env.path(&format!("dest-{}", name.replace(' ', "-")));
        let v = env.fails(&["snapshot", "checkout", &id, dest.to_str().unwrap()], 6);
        assert!(!message(&v).is_empty(), "{name}: {v}");
        assert!(!dest.exists(), "{name}: checkout created DEST");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{name}: wrote outside DEST");
        std::fs::remove_dir_all(env.store().join("snapshots").join(&id)).unwrap();
    }
    // A truncated manifest is rejected too.
    let good = Manifest::new(vec![], vec![root(), entry(b"a", Node::Dir)]).unwrap();
    let mut bytes = good.encode();
    bytes.truncate(bytes.len() - 3);
    let id = Hash::of(&bytes).to_hex();
    std::fs::create_dir_all(env.store().join("snapshots").join(&id)).unwrap();
    std::fs::write(env.store().join("snapshots").join(&id).join("manifest"), bytes).unwrap();
    let v = env.fails(&["snapshot", "checkout", &id, env.path("d").to_str().unwrap()], 6);
    assert!(message(&v).contains("truncated") || message(&v).contains("exceeds its size"), "{v}");
}

/// A tar member: raw name, type, data, raw link target.
type Member<'a> = (&'a [u8], tar::EntryType, &'a [u8], &'a [u8]);

/// Build a tar with raw member names the `tar` crate's safe setters would refuse.
fn raw_tar(members: &[Member]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in members {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        if !link.is_empty() {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_archives_are_rejected_and_add_nothing() {
    use tar::EntryType::{Block, Directory, Regular, Symlink};
    let env = Env::new();
    let cases: Vec<(&str, Vec<Member>)> = vec![
        ("absolute", vec![(b"/etc/evil", Regular, b"x", b"")]),
        ("dotdot", vec![(b"../evil", Regular, b"x", b"")]),
        ("inner dotdot", vec![(b"a/../../evil", Regular, b"x", b"")]),
        ("symlink parent", vec![(b"l", Symlink, b"", b"/tmp"), (b"l/evil", Regular, b"x", b"")]),
        ("duplicate", vec![(b"f", Regular, b"one", b""), (b"f", Regular, b"two", b"")]),
        ("dir over file", vec![(b"f", Regular, b"one", b""), (b"f/", Directory, b"", b"")]),
        ("device", vec![(b"dev", Block, b"", b"")]),
    ];
    for (name, members) in cases {
        let tar = env.path(&format!("{}.tar", name.replace(' ', "-")));
        std::fs::write(&tar, raw_tar(&members)).unwrap();
        let v = env.fails(&["snapshot", "create", "--tar", tar.to_str().unwrap()], 2);
        assert!(message(&v).contains("entry"), "{name}: {v}");
        assert!(env.object_count() <= 1, "{name}: stored more than the first member");
    }
    assert_eq!(env.ok(&["snapshot", "list"])["snapshots"].as_array().unwrap().len(), 0);
    assert!(!Path::new("/etc/evil").exists());
}

#[test]
fn ref_names_and_labels_are_validated() {
    let env = Env::new();
    let src = env.fixture("small", 1, "src");
    let id = env.ingest(&src);
    for bad in ["a/b", "..", "x..y", ".hidden", "new\nline", "tab\there", ""] {
        let v = env.fails(&["ref", "set", bad, &id], 2);
        assert!(message(&v).contains("invalid ref name"), "{bad:?}: {v}");
    }
    env.fails(&["snapshot", "create", src.to_str().unwrap(), "--name", "a/b"], 2);
    env.fails(&["snapshot", "create", src.to_str().unwrap(), "--label", "novalue"], 2);
    env.ok(&["ref", "set", "release-1.2_rc+x", &id]);
    env.fails(&["ref", "set", "other", "0000000000"], 4);
    env.fails(&["ref", "rm", "absent"], 4);
    env.fails(&["snapshot", "show", "zzzz"], 4);
}
