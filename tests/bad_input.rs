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
        ("long symlink target", vec![root(), entry(b"l", Node::Symlink { target: vec![b'a'; 4096] })]),
        ("empty symlink target", vec![root(), entry(b"l", Node::Symlink { target: vec![] })]),
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

/// `verify` finds nothing wrong.
fn assert_verify_clean(env: &Env) {
    let v = env.ok(&["verify"]);
    assert!(v.to_string().len() < 100_000, "{v}");
}

/// A tar of `members` written to `name` in the scratch area.
fn tar_file(env: &Env, name: &str, members: &[Member]) -> String {
    let tar = env.path(name);
    std::fs::write(&tar, raw_tar(members)).unwrap();
    tar.to_str().unwrap().to_string()
}

/// A tar with one member named by a pax `path`: a symlink to `target` (a pax `linkpath`) if
/// given, else a one-byte file. The tar crate's setters would refuse such names and targets.
fn pax_tar(path: &[u8], target: Option<&[u8]>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut exts = vec![("path", path)];
    exts.extend(target.map(|t| ("linkpath", t)));
    b.append_pax_extensions(exts).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("short").unwrap();
    let data: &[u8] = if target.is_some() { b"" } else { b"x" };
    h.set_entry_type(if target.is_some() { tar::EntryType::Symlink } else { tar::EntryType::Regular });
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
    b.into_inner().unwrap()
}

fn pax_symlink_tar(target: &[u8]) -> Vec<u8> {
    pax_tar(b"l", Some(target))
}

#[test]
fn what_the_kernel_cannot_hold_is_refused_at_ingest() {
    let env = Env::new();
    env.ok(&["snapshot", "list"]);
    // symlink(2) refuses a target of PATH_MAX (4096) bytes or more: 4095 is the limit.
    for len in [5000, 4096] {
        let tar = env.path(&format!("target-{len}.tar"));
        std::fs::write(&tar, pax_symlink_tar(&vec![b'a'; len])).unwrap();
        let v = env.fails(&["snapshot", "create", "--tar", tar.to_str().unwrap()], 2);
        assert!(message(&v).contains("symlink target longer than 4095 bytes"), "{len}: {v}");
    }
    std::fs::write(env.path("name.tar"), pax_tar(&[b'n'; 256], None)).unwrap();
    let v = env.fails(&["snapshot", "create", "--tar", env.path("name.tar").to_str().unwrap()], 2);
    assert!(message(&v).contains("longer than 255 bytes"), "{v}");
    // A path over 4095 bytes.
    let deep = vec!["d".repeat(200); 21].join("/");
    std::fs::write(env.path("deep.tar"), pax_tar(deep.as_bytes(), None)).unwrap();
    let v = env.fails(&["snapshot", "create", "--tar", env.path("deep.tar").to_str().unwrap()], 2);
    assert!(message(&v).contains("longer than 4095 bytes") && message(&v).len() < 1000, "{v}");
    // A directory tree deeper than 4095 bytes: made through handles, as the kernel allows.
    let src = env.path("deep-src");
    std::fs::create_dir(&src).unwrap();
    let mut dir = std::fs::File::open(&src).unwrap();
    for _ in 0..21 {
        let comp = "d".repeat(200);
        nix::sys::stat::mkdirat(
            Some(std::os::fd::AsRawFd::as_raw_fd(&dir)),
            comp.as_str(),
            nix::sys::stat::Mode::from_bits_truncate(0o755),
        )
        .unwrap();
        let fd = nix::fcntl::openat(
            Some(std::os::fd::AsRawFd::as_raw_fd(&dir)),
            comp.as_str(),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        dir = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    }
    let v = env.fails(&["snapshot", "create", src.to_str().unwrap()], 2);
    assert!(message(&v).contains("too long") && message(&v).len() < 1000, "{v}");
    assert_store_empty(&env);
    assert_verify_clean(&env);

    // At the limit, everything goes through: ingest, verify, checkout.
    let target = vec![b'a'; 4095];
    std::fs::write(env.path("t4095.tar"), pax_symlink_tar(&target)).unwrap();
    let id = env.ok(&["snapshot", "create", "--tar", env.path("t4095.tar").to_str().unwrap()])["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_verify_clean(&env);
    env.ok(&["snapshot", "checkout", &id, env.path("out").to_str().unwrap()]);
    assert_eq!(std::fs::read_link(env.path("out/l")).unwrap().as_os_str().len(), 4095);
}

#[test]
fn manifests_cannot_hold_what_the_kernel_cannot() {
    let target = |len: usize| Node::Symlink { target: vec![b'a'; len] };
    let root = || entry(b"", Node::Dir);
    for (len, ok) in [(4095, true), (4096, false), (5000, false), (0, false)] {
        let r = Manifest::new(vec![], vec![root(), entry(b"l", target(len))]);
        assert_eq!(r.is_ok(), ok, "{len}: {r:?}");
    }
    let nul = Manifest::new(vec![], vec![root(), entry(b"l", Node::Symlink { target: b"a\0b".to_vec() })]);
    assert!(nul.is_err());
    let long = vec!["d".repeat(200); 20].join("/") + "/" + &"f".repeat(4095 - 20 * 201);
    assert_eq!(long.len(), 4095);
    let mut entries = vec![root()];
    let mut p = String::new();
    for _ in 0..20 {
        p = if p.is_empty() { "d".repeat(200) } else { format!("{p}/{}", "d".repeat(200)) };
        entries.push(entry(p.as_bytes(), Node::Dir));
    }
    entries.push(entry(long.as_bytes(), Node::Dir));
    assert!(Manifest::new(vec![], entries.clone()).is_ok());
    entries.push(entry(format!("{long}x").as_bytes(), Node::Dir));
    assert!(Manifest::new(vec![], entries).is_err());
}

#[test]
fn a_top_that_is_not_a_directory_is_bad_input() {
    use tar::EntryType::{Regular, Symlink};
    let env = Env::new();
    for (name, m) in [("file", (&b"."[..], Regular, &b"x"[..], &b""[..])), ("symlink", (b"./", Symlink, b"", b"/etc"))]
    {
        let tar = tar_file(&env, &format!("top-{name}.tar"), &[m]);
        let v = env.fails(&["snapshot", "create", "--tar", &tar], 2);
        assert!(message(&v).contains("top of the tree is not a directory"), "{name}: {v}");
    }
    assert_store_empty(&env);
    assert_verify_clean(&env);
}

/// GNU tar, or `None` (with a note) where there is none.
fn gnu_tar() -> Option<&'static str> {
    let out = std::process::Command::new("tar").arg("--version").output().ok()?;
    if String::from_utf8_lossy(&out.stdout).contains("GNU tar") {
        Some("tar")
    } else {
        eprintln!("skipped: needs GNU tar to write sparse archives");
        None
    }
}

#[test]
fn sparse_archives_are_expanded_or_refused() {
    let Some(tar) = gnu_tar() else { return };
    let env = Env::new();
    let src = env.path("sparse-src");
    std::fs::create_dir(&src).unwrap();
    {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::create(src.join("holes")).unwrap();
        // More data islands than one GNU header lists, so extension headers are read too.
        for i in 0..40u64 {
            f.seek(SeekFrom::Start(i * 65536)).unwrap();
            f.write_all(format!("island {i}").as_bytes()).unwrap();
        }
        f.set_len(40 * 65536 + 100_000).unwrap();
    }
    std::fs::write(src.join("plain"), b"plain").unwrap();
    let make = |name: &str, args: &[&str]| {
        let out = env.path(name);
        let st = std::process::Command::new(tar)
            .args(args)
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(&out)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        out.to_str().unwrap().to_string()
    };
    for v in ["0.0", "0.1", "1.0"] {
        let t = make(&format!("pax-{v}.tar"), &["--format=posix", "--sparse", &format!("--sparse-version={v}")]);
        let e = env.fails(&["snapshot", "create", "--tar", &t], 2);
        assert!(message(&e).contains("pax-format sparse file") && message(&e).contains("holes"), "{v}: {e}");
    }
    assert_eq!(env.ok(&["snapshot", "list"])["snapshots"].as_array().unwrap().len(), 0);
    assert_verify_clean(&env);
    // GNU sparse members ('S') are read with their holes as zeros: the tree is the same.
    let t = make("gnu.tar", &["--format=gnu", "--sparse"]);
    let raw = std::fs::read(&t).unwrap();
    assert!(raw.chunks(512).any(|h| h.len() == 512 && h[156] == b'S' && h.starts_with(b"./holes")), "no 'S' member");
    let id = env.ok(&["snapshot", "create", "--tar", &t])["id"].as_str().unwrap().to_string();
    assert_verify_clean(&env);
    let out = env.path("out");
    env.ok(&["snapshot", "checkout", &id, out.to_str().unwrap()]);
    for f in ["holes", "plain"] {
        assert!(std::fs::read(out.join(f)).unwrap() == std::fs::read(src.join(f)).unwrap(), "{f} differs");
    }
}

#[test]
fn messages_never_echo_raw_bytes() {
    use tar::EntryType::Regular;
    let env = Env::new();
    let hostile: &[u8] = b"\x1b]0;owned\x07\x1b[2J\xff\xfe\x9b/../x";
    let tar = tar_file(&env, "esc.tar", &[(hostile, Regular, b"x", b"")]);
    for json in [false, true] {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("execroot"));
        c.arg("--store").arg(env.store());
        if json {
            c.arg("--json");
        }
        let out = c.args(["snapshot", "create", "--tar", &tar]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        for stream in [&out.stdout, &out.stderr] {
            let bad = stream.iter().any(|&b| (b < 0x20 && b != b'\n') || b == 0x7f || b == 0xff || b == 0x9b);
            assert!(!bad, "raw bytes in output: {:?}", String::from_utf8_lossy(stream));
            std::str::from_utf8(stream).expect("output is UTF-8");
        }
        let text = String::from_utf8_lossy(if json { &out.stdout } else { &out.stderr }).into_owned();
        assert!(text.contains("u{1b}") && text.contains("xff") && text.contains("'.' or '..'"), "{text}");
    }
    assert_store_empty(&env);
}

#[test]
fn git_never_takes_a_ref_for_an_option() {
    let env = Env::new();
    let repo = env.repo();
    let rs = repo.to_str().unwrap();
    git(&repo, &["branch", "existing"]);
    let planted = env.path("written-by-git");
    let output = format!("--base-ref=--output={}", planted.display());
    let create = |extra: &[&str]| {
        let mut args = vec!["root", "create", "--class", "repo-edit", "--backend", "worktree", "--repo", rs];
        args.extend_from_slice(extra);
        env.fails(&args, 2)
    };
    let v = create(&[&output, "--branch", "existing"]);
    assert!(message(&v).contains("cannot start with '-'"), "{v}");
    for branch in ["--branch=-evil", "--branch=@{-1}", "--branch=a..b", "--branch=x.lock"] {
        let v = create(&["--base-ref", "main", branch]);
        assert!(message(&v).contains("not a valid branch name"), "{branch}: {v}");
    }
    let v = create(&["--base-ref", "no-such-ref", "--branch", "fresh"]);
    assert!(message(&v).contains("not a commit"), "{v}");
    let not_repo = env.path("not-a-repo");
    std::fs::create_dir(&not_repo).unwrap();
    let args = [
        "root",
        "create",
        "--class",
        "repo-edit",
        "--backend",
        "worktree",
        "--base-ref",
        "main",
        "--branch",
        "fresh",
        "--repo",
    ];
    let v = env.fails(&[&args[..], &[not_repo.to_str().unwrap()]].concat(), 2);
    assert!(message(&v).contains("not a git repository"), "{v}");
    assert_eq!(env.ok(&["root", "list"])["roots"].as_array().unwrap().len(), 0);
    assert!(!git(&repo, &["branch", "--list"]).contains("-evil"));

    // A root recorded before this check: git still never reads its base as an option.
    let r = env.repo_root("worktree", rs, &["--branch", "existing"]);
    let id = r["id"].as_str().unwrap();
    let state = env.store().join("roots").join(id).join("state.json");
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("\"main\""), "{text}");
    let hostile = format!("--output={}", planted.display());
    std::fs::write(&state, text.replace("\"baseRef\": \"main\"", &format!("\"baseRef\": {hostile:?}"))).unwrap();
    assert!(std::fs::read_to_string(&state).unwrap().contains(&hostile), "baseRef not replaced");
    let out = env.cmd(&["root", "diff", id]).output().unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    env.ok(&["root", "show", id]);
    assert!(!planted.exists(), "git wrote a file named by a ref");
    env.ok(&["root", "destroy", id]);
    assert!(!planted.exists());
}
