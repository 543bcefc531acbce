//! Trees that change under execroot while it walks them (docs/security.md, "A hostile process
//! inside a root"). A failpoint (`EXECROOT_FAILPOINT_RUN=NAME:COMMAND`) swaps a directory for a
//! symlink to a directory outside the tree at the worst moment of each walk: ingest, diff,
//! commit, export (directory and tar) and checkout. Whatever the operation then does (fail, or
//! record the symlink as a symlink), nothing outside is read into the store or the output and
//! nothing outside is written.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const SECRET: &[u8] = b"TOPSECRET-outside-the-tree";

/// A directory outside every tree with a private file only it holds, and an empty one that
/// must stay empty.
struct Outside {
    secret_dir: PathBuf,
    empty_dir: PathBuf,
}

fn outside(env: &Env) -> Outside {
    let secret_dir = env.path("outside");
    std::fs::create_dir(&secret_dir).unwrap();
    // The same names as inside, so that a followed symlink would be read as if it were the tree.
    std::fs::write(secret_dir.join("f"), SECRET).unwrap();
    std::fs::write(secret_dir.join("only-outside"), SECRET).unwrap();
    std::fs::set_permissions(secret_dir.join("f"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let empty_dir = env.path("must-stay-empty");
    std::fs::create_dir(&empty_dir).unwrap();
    Outside { secret_dir, empty_dir }
}

impl Outside {
    fn untouched(&self) {
        assert_eq!(std::fs::read_dir(&self.empty_dir).unwrap().count(), 0, "something was written outside");
        let mut names: Vec<_> = std::fs::read_dir(&self.secret_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["f", "only-outside"], "the outside directory changed");
        assert_eq!(std::fs::read(self.secret_dir.join("f")).unwrap(), SECRET);
    }
}

/// `mv DIR DIR.moved && ln -s TARGET DIR`, as a failpoint command.
fn swap(dir: &Path, target: &Path) -> String {
    format!("mv '{0}' '{0}.moved' && ln -s '{1}' '{0}'", dir.display(), target.display())
}

/// True when some file under `dir` holds the secret.
fn holds_secret(dir: &Path) -> bool {
    walkdir::WalkDir::new(dir).into_iter().filter_map(Result::ok).any(|e| {
        e.file_type().is_file() && std::fs::read(e.path()).is_ok_and(|b| b.windows(SECRET.len()).any(|w| w == SECRET))
    })
}

/// Run `args` with the failpoint command armed at `point`; returns the output.
fn raced(env: &Env, point: &str, cmd: &str, args: &[&str]) -> std::process::Output {
    env.spawnable(args).env("EXECROOT_FAILPOINT_RUN", format!("{point}:{cmd}")).output().unwrap()
}

/// The store is verify-clean and holds no object with the secret.
fn store_clean(env: &Env) {
    env.ok(&["verify"]);
    assert!(!holds_secret(&env.store().join("objects")), "the secret reached the store");
}

fn tree_with_d(env: &Env, rel: &str) -> PathBuf {
    let src = env.path(rel);
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), b"inside").unwrap();
    std::fs::write(src.join("top.txt"), b"top").unwrap();
    src
}

#[test]
fn ingest_never_reads_through_a_swapped_directory() {
    for point in ["walk.descend", "ingest.walked"] {
        let env = Env::new();
        let out = outside(&env);
        let src = tree_with_d(&env, "src");
        let r =
            raced(&env, point, &swap(&src.join("d"), &out.secret_dir), &["snapshot", "create", src.to_str().unwrap()]);
        if r.status.success() {
            // The walk saw the symlink as a symlink.
            let id = parse(&r)["id"].as_str().unwrap().to_string();
            let co = env.path("co");
            env.ok(&["snapshot", "checkout", &id, co.to_str().unwrap()]);
            assert!(std::fs::symlink_metadata(co.join("d")).unwrap().file_type().is_symlink(), "{point}");
            assert!(!holds_secret(&co), "{point}");
        } else {
            assert!(describe(&r).contains("src/d"), "{point}: the error names the path: {}", describe(&r));
        }
        assert!(src.join("d").is_symlink(), "{point}: the failpoint ran");
        store_clean(&env);
        out.untouched();
    }
}

fn commit_and_diff_race(backend: &str, points: &[&str]) {
    for point in points {
        let env = Env::new();
        let out = outside(&env);
        let src = tree_with_d(&env, "src");
        env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "base"]);
        let v = env.root(&["--class", "routine", "--from", "base", "--backend", backend]);
        let id = v["id"].as_str().unwrap().to_string();
        let cwd = cwd(&v);
        std::fs::create_dir(cwd.join("new")).unwrap();
        std::fs::write(cwd.join("new/f"), b"changed by the run").unwrap();
        std::fs::write(cwd.join("d/f"), b"changed by the run").unwrap();
        let race = swap(&cwd.join("new"), &out.secret_dir);
        let (what, args): (&str, Vec<&str>) = if point.starts_with("change.") || *point == "commit" {
            ("commit", vec!["root", "commit", &id, "--name", "after"])
        } else {
            ("diff", vec!["root", "diff", &id])
        };
        let r = raced(&env, if *point == "commit" { "walk.descend" } else { point }, &race, &args);
        assert!(cwd.join("new").is_symlink(), "{backend} {point}: the failpoint ran");
        if r.status.success() {
            let doc = String::from_utf8_lossy(&r.stdout);
            assert!(!doc.contains("only-outside"), "{backend} {point} {what}: listed a file outside: {doc}");
            if what == "commit" {
                let co = env.path("co");
                env.ok(&["snapshot", "checkout", "after", co.to_str().unwrap()]);
                assert!(!holds_secret(&co), "{backend} {point}: committed the secret");
            }
        }
        store_clean(&env);
        out.untouched();
        env.ok(&["root", "destroy", &id, "--force"]);
    }
}

#[test]
fn copy_root_commit_and_diff_never_follow_a_swapped_directory() {
    commit_and_diff_race("copy", &["walk.descend", "change.reading", "commit"]);
}

#[test]
fn overlay_root_commit_and_diff_never_follow_a_swapped_directory() {
    if !can_mount() {
        return;
    }
    commit_and_diff_race("overlay", &["diff.compared", "change.reading"]);
}

fn export_root(env: &Env, backend: &str) -> (String, PathBuf) {
    let src = tree_with_d(env, "src");
    env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "base"]);
    let v = env.root(&["--class", "routine", "--from", "base", "--backend", backend]);
    (v["id"].as_str().unwrap().to_string(), cwd(&v))
}

#[test]
fn export_never_reads_or_writes_through_a_swapped_directory() {
    let backend = if is_root() && can_mount() { "overlay" } else { "copy" };
    // Source side: the run swaps one of its directories after the export listed it.
    for tar in [false, true] {
        let env = Env::new();
        let out = outside(&env);
        let (id, cwd) = export_root(&env, backend);
        let dest = env.path("dest");
        let mut args = vec!["root", "export", &id];
        let dest_s = dest.to_str().unwrap().to_string();
        if tar {
            args.extend(["--tar", "-"]);
        } else {
            args.push(&dest_s);
        }
        let mut cmd = env.spawnable(&args);
        if tar {
            // --tar refuses --json.
            cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("execroot"));
            cmd.arg("--store").arg(env.store()).args(&args);
        }
        let r = cmd
            .env("EXECROOT_FAILPOINT_RUN", format!("export.listed:{}", swap(&cwd.join("d"), &out.secret_dir)))
            .output()
            .unwrap();
        assert!(cwd.join("d").is_symlink(), "tar={tar}: the failpoint ran");
        assert!(!r.stdout.windows(SECRET.len()).any(|w| w == SECRET), "tar={tar}: the secret was exported");
        if dest.exists() {
            assert!(!holds_secret(&dest), "tar={tar}: the secret was exported");
        }
        out.untouched();
        env.ok(&["root", "destroy", &id, "--force"]);
    }
    // Destination side: someone who can write DEST swaps a directory the export just made.
    let env = Env::new();
    let out = outside(&env);
    let (id, _) = export_root(&env, backend);
    let dest = env.path("dest");
    let r = raced(
        &env,
        "export.dir-made",
        &swap(&dest.join("d"), &out.empty_dir),
        &["root", "export", &id, dest.to_str().unwrap()],
    );
    assert!(!r.status.success(), "writing through the swapped directory must fail: {}", describe(&r));
    out.untouched();
    // A destination that is a symlink is refused, not followed (one rule with checkout).
    let link = env.path("dest-link");
    std::os::unix::fs::symlink(&out.empty_dir, &link).unwrap();
    env.fails(&["root", "export", &id, link.to_str().unwrap()], 5);
    env.fails(&["snapshot", "checkout", "base", link.to_str().unwrap()], 5);
    // Missing parents are not created, by either.
    let deep = env.path("no/such/parent");
    env.fails(&["root", "export", &id, deep.to_str().unwrap()], 2);
    env.fails(&["snapshot", "checkout", "base", deep.to_str().unwrap()], 2);
    out.untouched();
    env.ok(&["root", "destroy", &id, "--force"]);
}

#[test]
fn checkout_never_writes_through_a_swapped_directory() {
    let env = Env::new();
    let out = outside(&env);
    let src = tree_with_d(&env, "src");
    for i in 0..50 {
        std::fs::write(src.join(format!("d/file-{i}")), format!("{i}")).unwrap();
    }
    let id = env.ingest(&src);
    let dest = env.path("dest");
    let r = raced(
        &env,
        "checkout.dirs-made",
        &swap(&dest.join("d"), &out.empty_dir),
        &["snapshot", "checkout", &id, dest.to_str().unwrap()],
    );
    assert!(!r.status.success(), "{}", describe(&r));
    out.untouched();
    // The destination it created is removed again, the swapped-in symlink with it.
    assert!(!dest.exists());
    store_clean(&env);
}
