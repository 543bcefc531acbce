//! Other local users (issue 9, section 2): a store made by root, roots owned by two
//! unprivileged uids (without passwd entries), each run as that user through setpriv. Each user
//! uses its own root fully and reaches nothing else: not the store's objects, layers, variants,
//! idmapped views or records, not the other user's root, and no layer inode for writing through
//! any path it can find, including the layer paths /proc/self/mountinfo shows.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

const U1: u32 = 40001;
const U2: u32 = 40002;

/// Quote a path for a shell snippet (test paths hold no single quote).
fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// An environment whose temporary directory every user may search (not list), so that only
/// the store's own modes decide what other users reach.
fn open_env() -> Env {
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    env
}

/// A tree with a world-writable file and directory and a private file, ingested as `base`.
fn base_with_open_modes(env: &Env) -> PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("open")).unwrap();
    std::fs::write(src.join("shared.txt"), b"base\n").unwrap();
    std::fs::write(src.join("open/inner.txt"), b"inner\n").unwrap();
    std::fs::write(src.join("secret.txt"), b"secret\n").unwrap();
    std::fs::set_permissions(src.join("shared.txt"), std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(src.join("open"), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(src.join("secret.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "base"]);
    src
}

/// Every attempt in `attempts` (shell commands) fails when run as `uid`.
fn all_fail(uid: u32, attempts: &[String]) {
    for a in attempts {
        let (ok, out) = as_user(uid, a);
        assert!(!ok, "uid {uid} succeeded at `{a}`: {out}");
    }
}

#[test]
fn each_user_reaches_its_own_root_and_nothing_else() {
    if !can_mount() {
        return;
    }
    let env = open_env();
    base_with_open_modes(&env);
    let store = env.store();
    let r1 = env.root(&["--class", "routine", "--from", "base", "--owner", &U1.to_string()]);
    let r2 = env.root(&["--class", "routine", "--from", "base", "--owner", &U2.to_string()]);
    let r1c = env.root(&["--class", "routine", "--from", "base", "--owner", &U1.to_string(), "--backend", "copy"]);
    assert_eq!(r1["backend"], "overlay");
    assert!(r1["warnings"].as_array().unwrap().is_empty(), "{r1}");
    let (c1, c2, c1c) = (cwd(&r1), cwd(&r2), cwd(&r1c));

    // Each user reads, writes, creates and deletes in its own root.
    for (uid, c) in [(U1, &c1), (U2, &c2), (U1, &c1c)] {
        let script = format!(
            "set -e; cd {c}; cat shared.txt secret.txt open/inner.txt >/dev/null; echo mine-{uid} >> shared.txt; \
             echo new > open/new.txt; mkdir made; touch made/f; rm -r made; rm secret.txt; mv open opened; \
             chmod 0700 opened; echo done",
            c = q(c)
        );
        let (ok, out) = as_user(uid, &script);
        assert!(ok && out.contains("done"), "uid {uid} could not use its root {}: {out}", c.display());
    }
    assert_eq!(std::fs::read_to_string(c1.join("shared.txt")).unwrap(), format!("base\nmine-{U1}\n"));
    assert_eq!(std::fs::read_to_string(c2.join("shared.txt")).unwrap(), format!("base\nmine-{U2}\n"));

    // The store's own directories: not listable, nothing in them readable or writable.
    let snap = r1["snapshots"][0].as_str().unwrap().to_string();
    let hash = execroot::hash::Hash::of(b"base\n").to_hex();
    let object = store.join("objects").join(&hash[..2]).join(&hash[2..]);
    let layer = store.join("layers").join(&snap);
    let link = store.join("l").join(&snap[..12]);
    let variant = store.join("variants").join("0666").join(&hash);
    let view = store.join("idmap").join(format!("{U1}-{U1}")).join(&snap[..12]);
    assert!(variant.is_file() && view.is_dir() && layer.join("shared.txt").is_file(), "store layout changed");
    let mut attempts = Vec::new();
    for d in ["objects", "layers", "variants", "l", "idmap", "snapshots", "refs", "keys", "locks", "tmp", "quarantine"]
    {
        attempts.push(format!("ls {}", q(&store.join(d))));
    }
    for f in [
        object.clone(),
        layer.join("secret.txt"),
        variant.clone(),
        link.join("shared.txt"),
        view.join("secret.txt"),
        store.join("snapshots").join(&snap).join("manifest"),
        store.join("refs/base"),
        store.join("lock"),
    ] {
        attempts.push(format!("cat {}", q(&f)));
    }
    attempts.push(format!("ls {}", q(&store)));
    attempts.push(format!("ls {}", q(&store.join("roots"))));
    all_fail(U1, &attempts);
    all_fail(U2, &attempts);

    // The other user's root: neither its working directory nor its upper or work directory.
    let show = |r: &serde_json::Value| env.ok(&["root", "show", r["id"].as_str().unwrap()]);
    let (s1, s2) = (show(&r1), show(&r2));
    for (uid, c, s) in [(U2, &c1, &s1), (U1, &c2, &s2)] {
        let (upper, work) = (PathBuf::from(s["upper"].as_str().unwrap()), PathBuf::from(s["work"].as_str().unwrap()));
        let dir = c.parent().unwrap().to_path_buf();
        all_fail(
            uid,
            &[
                format!("ls {}", q(c)),
                format!("cat {}", q(&c.join("shared.txt"))),
                format!("touch {}", q(&c.join("planted"))),
                format!("ls {}", q(&upper)),
                format!("cat {}", q(&upper.join("shared.txt"))),
                format!("ls {}", q(&work)),
                format!("ls {}", q(&dir)),
                format!("cat {}", q(&dir.join("state.json"))),
            ],
        );
    }
    all_fail(U2, &[format!("ls {}", q(&c1c)), format!("touch {}", q(&c1c.join("planted")))]);
    // Its owner reaches its working directory but cannot list or write the root's directory:
    // the state file and work directory are root's.
    let dir1 = c1.parent().unwrap().to_path_buf();
    all_fail(
        U1,
        &[
            format!("ls {}", q(&dir1)),
            format!("touch {}", q(&dir1.join("planted"))),
            format!("echo '{{}}' > {}", q(&dir1.join("state.json"))),
            format!("mv {} {}", q(&c1), q(&dir1.join("moved"))),
            format!("ls {}", q(&PathBuf::from(s1["work"].as_str().unwrap()))),
        ],
    );

    // No layer inode is writable through any path: the store's, and the lower directories
    // mountinfo shows every user.
    let lowers: Vec<PathBuf> = execroot::sys::mount::mounts_under(&c1)
        .unwrap()
        .iter()
        .find(|m| m.target == c1)
        .and_then(|m| m.option("lowerdir"))
        .expect("the root is an overlay mount")
        .split(':')
        .map(PathBuf::from)
        .collect();
    let (ok, info) = as_user(U1, "cat /proc/self/mountinfo");
    assert!(ok && info.contains(&lowers[0].display().to_string()), "{info}");
    let mut dirs = vec![layer.clone(), link.clone(), view.clone(), store.join("idmap").join(format!("{U2}-{U2}"))];
    dirs.extend(lowers);
    let mut writes = vec![
        format!("echo evil >> {}", q(&object)),
        format!("echo evil >> {}", q(&variant)),
        format!("chmod 0777 {}", q(&variant)),
    ];
    for d in &dirs {
        writes.push(format!("echo evil >> {}", q(&d.join("shared.txt"))));
        writes.push(format!("echo evil > {}", q(&d.join("open/inner.txt"))));
        writes.push(format!("touch {}", q(&d.join("open/planted"))));
        writes.push(format!("touch {}", q(&d.join("planted"))));
        writes.push(format!("chmod 0777 {}", q(&d.join("shared.txt"))));
        writes.push(format!("rm -f {}", q(&d.join("open/inner.txt"))));
    }
    all_fail(U1, &writes);
    all_fail(U2, &writes);
    assert_eq!(std::fs::read_to_string(layer.join("shared.txt")).unwrap(), "base\n");
    assert_eq!(std::fs::read_to_string(layer.join("open/inner.txt")).unwrap(), "inner\n");
    assert!(!layer.join("planted").exists() && !layer.join("open/planted").exists());
    // A new root of either owner sees the base untouched.
    let r3 = env.root(&["--class", "routine", "--from", "base", "--owner", &U2.to_string()]);
    assert_eq!(std::fs::read_to_string(cwd(&r3).join("shared.txt")).unwrap(), "base\n");
    assert!(cwd(&r3).join("secret.txt").exists());

    // Nobody ingests into or checks out from someone else's store.
    let bin = assert_cmd::cargo::cargo_bin("execroot");
    let mine = env.path("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("f"), b"mine\n").unwrap();
    for e in walkdir::WalkDir::new(&mine) {
        std::os::unix::fs::lchown(e.unwrap().path(), Some(U1), Some(U1)).unwrap();
    }
    let dest = mine.join("checkout");
    let run = |args: String| as_user(U1, &format!("{} --store {} --json {args}", bin.display(), q(&store)));
    let before = env.ok(&["snapshot", "list"]);
    let (ok, out) = run(format!("snapshot create {} --name stolen", q(&mine)));
    assert!(!ok, "{out}");
    let (ok, out) = run(format!("snapshot checkout base {}", q(&dest)));
    assert!(!ok, "{out}");
    assert!(std::fs::read_dir(&dest).map(|d| d.count() == 0).unwrap_or(true), "the checkout wrote files");
    assert_eq!(env.ok(&["snapshot", "list"]), before);
    assert_eq!(env.ok(&["verify"])["ok"], true);

    for r in [&r1, &r2, &r1c, &r3] {
        assert_eq!(env.ok(&["root", "destroy", r["id"].as_str().unwrap()])["cleaned"], true);
    }
    assert_eq!(env.ok(&["doctor"])["ok"], true);
}

#[test]
fn an_owner_who_cannot_reach_the_store_is_refused() {
    if !needs_root("needs root to create roots for other users") {
        return;
    }
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    env.fixture("small", 5, "src");
    env.ok(&["snapshot", "create", env.path("src").to_str().unwrap(), "--name", "base"]);
    for backend in ["copy", "overlay"] {
        if backend == "overlay" && !can_mount() {
            continue;
        }
        let v = env.fails(
            &[
                "root",
                "create",
                "--class",
                "routine",
                "--from",
                "base",
                "--owner",
                &U1.to_string(),
                "--backend",
                backend,
            ],
            2,
        );
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("{}", env.dir.path().display())) && msg.contains("40001"), "{msg}");
    }
    assert_eq!(std::fs::read_dir(env.store().join("roots")).unwrap().count(), 0);
    // Opened to everybody for search, the same request works.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let r = env.root(&["--class", "routine", "--from", "base", "--owner", &U1.to_string(), "--backend", "copy"]);
    let (ok, out) = as_user(U1, &format!("cd {} && touch mine", q(&cwd(&r))));
    assert!(ok, "{out}");
}

#[test]
fn a_new_store_has_the_table_modes_whatever_the_umask() {
    let env = Env::new();
    let store = env.store();
    // An existing empty directory given as the store is initialised with the table's modes.
    std::fs::create_dir(&store).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).unwrap();
    let src = env.fixture("small", 6, "src");
    let bin = assert_cmd::cargo::cargo_bin("execroot");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; {} --store {} --json snapshot create {} --name base",
            bin.display(),
            q(&store),
            q(&src)
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(mode(&store), 0o711);
    for &(name, _, want) in execroot::store::perms::TABLE {
        let p = store.join(name);
        if p.exists() {
            assert_eq!(mode(&p), want, "{name}");
        } else {
            // The administrator's config and the service's socket are not the layout's.
            assert!(name == "config.json" || name == execroot::store::perms::SOCKET_NAME, "{name} was not created");
        }
    }
    assert_eq!(env.ok(&["doctor"])["findings"], serde_json::json!([]));
}

#[test]
fn doctor_finds_unsafe_modes_and_repairs_them() {
    if !needs_root("needs root to give roots and store entries to other users") {
        return;
    }
    let env = open_env();
    base_with_open_modes(&env);
    let store = env.store();
    let r = env.root(&["--class", "routine", "--from", "base", "--owner", &U1.to_string(), "--backend", "copy"]);
    let rdir = cwd(&r).parent().unwrap().to_path_buf();
    // A store as an older execroot (and a careless administrator) left it.
    for (p, m) in [("", 0o755), ("objects", 0o755), ("snapshots", 0o777), ("roots", 0o755), ("lock", 0o644)] {
        std::fs::set_permissions(store.join(p), std::fs::Permissions::from_mode(m)).unwrap();
    }
    std::fs::write(store.join("config.json"), b"{}").unwrap();
    std::fs::set_permissions(store.join("config.json"), std::fs::Permissions::from_mode(0o666)).unwrap();
    std::os::unix::fs::lchown(store.join("refs"), Some(U2), Some(U2)).unwrap();
    execroot::sys::acl::remove(&rdir).unwrap();
    std::fs::set_permissions(&rdir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, _) = as_user(U2, &format!("ls {}", q(&rdir)));
    assert!(ok, "the widened root directory should be open before the repair");

    let found = |v: &serde_json::Value| -> Vec<PathBuf> {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == "unsafe-mode")
            .map(|f| PathBuf::from(f["path"].as_str().unwrap()))
            .collect()
    };
    let want: Vec<PathBuf> = ["", "objects", "snapshots", "roots", "lock", "config.json", "refs"]
        .iter()
        .map(|p| if p.is_empty() { store.clone() } else { store.join(p) })
        .chain([rdir.clone()])
        .collect();
    let v = env.fails(&["doctor"], 3);
    let mut got = found(&v);
    got.sort();
    let mut sorted = want.clone();
    sorted.sort();
    assert_eq!(got, sorted, "{v}");
    // Without --repair nothing changed.
    assert_eq!(mode(&store.join("objects")), 0o755);

    let v = env.ok(&["doctor", "--repair"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(found(&v).len(), want.len(), "{v}");
    assert!(v["findings"].as_array().unwrap().iter().all(|f| f["repaired"] == true), "{v}");
    assert_eq!(env.ok(&["doctor"])["findings"], serde_json::json!([]));
    assert_eq!(mode(&store), 0o711);
    for (p, m) in [("objects", 0o700), ("snapshots", 0o700), ("roots", 0o711), ("lock", 0o600), ("config.json", 0o600)]
    {
        assert_eq!(mode(&store.join(p)), m, "{p}");
    }
    assert_eq!(std::fs::metadata(store.join("refs")).unwrap().uid(), 0);
    // The root is its owner's again, and nobody else's.
    let (ok, out) = as_user(U1, &format!("cd {} && touch after-repair", q(&cwd(&r))));
    assert!(ok, "{out}");
    all_fail(U2, &[format!("ls {}", q(&rdir)), format!("ls {}", q(&cwd(&r)))]);
    all_fail(U1, &[format!("ls {}", q(&rdir))]);
    assert_eq!(env.ok(&["root", "destroy", r["id"].as_str().unwrap()])["cleaned"], true);
}

#[test]
fn a_worktree_root_is_its_owners_alone() {
    if !needs_root("needs root to create roots for other users") {
        return;
    }
    let env = open_env();
    let repo = env.repo();
    let r = env.repo_root("worktree", repo.to_str().unwrap(), &["--owner", &U1.to_string()]);
    let wt = cwd(&r);
    let (ok, out) = as_user(U1, &format!("set -e; cd {}; echo x >> .gitignore; touch mine; rm mine", q(&wt)));
    assert!(ok, "{out}");
    let dir = env.store().join("roots").join(r["id"].as_str().unwrap());
    all_fail(U2, &[format!("ls {}", q(&wt)), format!("ls {}", q(&dir))]);
    all_fail(U1, &[format!("ls {}", q(&dir)), format!("touch {}", q(&dir.join("planted")))]);
    assert_eq!(env.ok(&["doctor"])["findings"], serde_json::json!([]));
    assert_eq!(env.ok(&["root", "destroy", r["id"].as_str().unwrap(), "--force"])["cleaned"], true);
}
