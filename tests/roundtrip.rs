//! Ingest then checkout gives the source back exactly; ids are deterministic; content dedups;
//! tar streams ingest like directories.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

/// A tree with every odd thing the format must keep: odd names, modes, symlinks, hardlinks,
/// empty files and directories, nanosecond mtimes.
fn odd_tree(root: &Path) {
    std::fs::create_dir_all(root.join("dir/sub")).unwrap();
    std::fs::create_dir(root.join("empty")).unwrap();
    std::fs::create_dir(root.join("private")).unwrap();
    std::fs::write(root.join("plain.txt"), b"hello\n").unwrap();
    std::fs::write(root.join("empty-file"), b"").unwrap();
    std::fs::write(root.join("dir/sub/tool.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(root.join("new\nline"), b"newline in name").unwrap();
    std::fs::write(root.join(OsStr::from_bytes(b"bad-\xff\xfe-utf8")), b"latin").unwrap();
    std::fs::write(root.join("private/secret"), b"s").unwrap();
    std::fs::write(root.join("dir/same-a"), b"same content").unwrap();
    std::fs::write(root.join("dir/same-b"), b"same content").unwrap();
    std::fs::hard_link(root.join("plain.txt"), root.join("dir/hardlink")).unwrap();
    std::os::unix::fs::symlink("../plain.txt", root.join("dir/rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
    let chmod = |p: &str, m: u32| std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(m)).unwrap();
    chmod("dir/sub/tool.sh", 0o755);
    chmod("private/secret", 0o600);
    chmod("private", 0o700);
    chmod("empty", 0o1777);
    chmod("plain.txt", 0o4755);
    for (i, p) in ["plain.txt", "dir/sub/tool.sh", "dir/rel-link", "empty", "dir/sub", "dir", ""].iter().enumerate() {
        set_mtime(&root.join(p), 1_600_000_000 + i as i64, 123_456_789);
    }
}

#[test]
fn ingest_then_checkout_is_exact() {
    let env = Env::new();
    let src = env.path("src");
    odd_tree(&src);
    let report = env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "odd", "--label", "k=v"]);
    assert_eq!(report["files"], 9);
    assert_eq!(report["symlinks"], 3);
    assert_eq!(report["dirs"], 5);
    assert_eq!(report["entries"], 17);
    // Two files share "same content" and the hardlink shares plain.txt's object.
    assert_eq!(report["newObjects"], 7);
    assert_eq!(report["reusedObjects"], 2);
    let out = env.path("out");
    env.ok(&["snapshot", "checkout", "odd", out.to_str().unwrap()]);
    assert_trees_equal(&src, &out);
    // A hardlink comes back as a separate file with the same content.
    std::fs::write(out.join("dir/hardlink"), b"changed").unwrap();
    assert_eq!(std::fs::read(out.join("plain.txt")).unwrap(), b"hello\n");

    let show = env.ok(&["snapshot", "show", "odd", "--entries"]);
    assert_eq!(show["labels"]["k"], "v");
    let names: Vec<&serde_json::Value> = show["entryList"].as_array().unwrap().iter().map(|e| &e["path"]).collect();
    assert!(names.contains(&&serde_json::json!("new\nline")));
    // Non-UTF-8 names use the documented base64 object form.
    assert!(names.contains(&&serde_json::json!({ "base64": "YmFkLf/+LXV0Zjg=" })), "{names:?}");
}

#[test]
fn checkout_is_writable_and_never_shares_object_inodes() {
    let env = Env::new();
    let src = env.fixture("small", 3, "src");
    let id = env.ingest(&src);
    let out = env.path("out");
    env.ok(&["snapshot", "checkout", &id[..12], out.to_str().unwrap()]);
    for e in walkdir::WalkDir::new(&out).into_iter().map(Result::unwrap).filter(|e| e.file_type().is_file()) {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(e.metadata().unwrap().nlink(), 1, "{} is hardlinked", e.path().display());
        std::fs::OpenOptions::new().append(true).open(e.path()).unwrap();
    }
    // DEST must be absent or empty.
    let v = env.fails(&["snapshot", "checkout", &id, out.to_str().unwrap()], 5);
    assert!(v["error"]["message"].as_str().unwrap().contains("not empty"));
    assert!(env.ok(&["verify"])["ok"].as_bool().unwrap());
}

#[test]
fn same_tree_same_id_whatever_the_walk_order() {
    let env = Env::new();
    let a = env.fixture("small", 7, "a");
    let b = env.fixture("small", 7, "b");
    assert_eq!(env.ingest(&a), env.ingest(&a));
    assert_eq!(env.ingest(&a), env.ingest(&b));

    // The same content created in opposite orders (so directory order on disk differs).
    let mk = |root: &Path, names: &[&str]| {
        std::fs::create_dir(root).unwrap();
        for n in names {
            std::fs::write(root.join(n), n.as_bytes()).unwrap();
            set_mtime(&root.join(n), 5, 0);
        }
        set_mtime(root, 5, 0);
    };
    let names: Vec<String> = (0..200).map(|i| format!("f{i}")).collect();
    let fwd: Vec<&str> = names.iter().map(String::as_str).collect();
    let rev: Vec<&str> = fwd.iter().rev().copied().collect();
    mk(&env.path("fwd"), &fwd);
    mk(&env.path("rev"), &rev);
    assert_eq!(env.ingest(&env.path("fwd")), env.ingest(&env.path("rev")));
}

#[test]
fn shared_content_is_stored_once() {
    let env = Env::new();
    let a = env.fixture("small", 11, "a");
    let first = env.ok(&["snapshot", "create", a.to_str().unwrap()]);
    let objects = env.object_count();
    assert_eq!(objects as u64, first["newObjects"].as_u64().unwrap());
    // A second tree with the same files plus one new one adds exactly one object.
    let b = env.fixture("small", 11, "b");
    std::fs::write(b.join("extra-unique-file"), b"only here").unwrap();
    let second = env.ok(&["snapshot", "create", b.to_str().unwrap()]);
    assert_ne!(first["id"], second["id"]);
    assert_eq!(second["newObjects"], 1);
    assert_eq!(second["newBytes"], 9);
    assert_eq!(second["reusedObjects"].as_u64().unwrap(), first["files"].as_u64().unwrap());
    assert_eq!(env.object_count(), objects + 1);
    // Re-ingest writes nothing new.
    let again = env.ok(&["snapshot", "create", a.to_str().unwrap()]);
    assert_eq!(again["newObjects"], 0);
    assert_eq!(again["id"], first["id"]);
}

#[test]
fn tar_stream_ingests_like_the_directory() {
    let env = Env::new();
    let src = env.path("src");
    odd_tree(&src);
    // tar keeps whole-second mtimes only; make the tree's mtimes whole seconds.
    for e in walkdir::WalkDir::new(&src).contents_first(true) {
        let e = e.unwrap();
        set_mtime(e.path(), 1_650_000_000, 0);
    }
    let dir_id = env.ingest(&src);
    let tar = env.path("t.tar");
    let st = std::process::Command::new("tar")
        .args(["--format=gnu", "-C", src.to_str().unwrap(), "-cf", tar.to_str().unwrap(), "."])
        .status()
        .unwrap();
    assert!(st.success());
    let tar_id = env.ok(&["snapshot", "create", "--tar", tar.to_str().unwrap()])["id"].as_str().unwrap().to_string();
    assert_eq!(dir_id, tar_id, "tar ingest differs from directory ingest");
    // And from stdin.
    let out = env.cmd(&["snapshot", "create", "--tar", "-"]).pipe_stdin(&tar).unwrap().output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(parse(&out)["id"].as_str().unwrap(), dir_id);
}

#[test]
fn git_archive_snapshots_a_commit() {
    let env = Env::new();
    let repo = env.fixture("small", 5, "repo");
    git_out(&repo, &["init", "-q"]);
    git_out(&repo, &["add", "-A"]);
    git_out(&repo, &["commit", "-qm", "base"]);
    let tar = git_out(&repo, &["archive", "HEAD"]);
    let tar_path = env.path("head.tar");
    std::fs::write(&tar_path, tar).unwrap();
    let out = env
        .cmd(&["snapshot", "create", "--tar", "-", "--name", "head"])
        .pipe_stdin(&tar_path)
        .unwrap()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let co = env.path("co");
    env.ok(&["snapshot", "checkout", "head", co.to_str().unwrap()]);
    // Contents, symlinks and executable bits match the commit (git does not keep mtimes).
    for e in walkdir::WalkDir::new(&repo).into_iter().filter_entry(|e| e.file_name() != ".git") {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(&repo).unwrap();
        let other = co.join(rel);
        if e.file_type().is_file() {
            assert_eq!(std::fs::read(e.path()).unwrap(), std::fs::read(&other).unwrap(), "{}", rel.display());
        } else if e.file_type().is_symlink() {
            assert_eq!(std::fs::read_link(e.path()).unwrap(), std::fs::read_link(&other).unwrap());
        }
    }
}

#[test]
fn refs_and_prefixes_resolve() {
    let env = Env::new();
    let src = env.fixture("small", 1, "src");
    let id = env.ingest(&src);
    env.ok(&["ref", "set", "base", &id[..8]]);
    assert_eq!(env.ok(&["ref", "list"])["refs"][0]["id"], id.as_str());
    assert_eq!(env.ok(&["snapshot", "show", "base"])["id"], id.as_str());
    // snapshot rm refuses while a ref names it, --force removes both.
    let v = env.fails(&["snapshot", "rm", "base"], 5);
    assert!(v["error"]["message"].as_str().unwrap().contains("base"));
    env.ok(&["snapshot", "rm", &id, "--force"]);
    env.fails(&["snapshot", "show", &id], 4);
    assert_eq!(env.ok(&["ref", "list"])["refs"].as_array().unwrap().len(), 0);
    assert_eq!(env.ok(&["snapshot", "list"])["snapshots"].as_array().unwrap().len(), 0);
}
