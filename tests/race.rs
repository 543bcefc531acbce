//! Trees that change under execroot while it walks them (docs/security.md, "A hostile process
//! inside a root"). A failpoint (`EXECROOT_FAILPOINT_RUN=NAME:COMMAND`) swaps a directory for a
//! symlink to a directory outside the tree at the worst moment of each walk: ingest, diff,
//! commit, export (directory and tar) and checkout. Whatever the operation then does (fail, or
//! record the symlink as a symlink), nothing outside is read into the store or the output and
//! nothing outside is written. The same for mount points: a `--mount` SUBDIR swapped while
//! create or doctor mounts it, and a sub-mount's parent swapped while destroy unmounts it.

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

// --- `--mount SUBDIR` mount points (docs/security.md) ---------------------------------------
//
// A directory outside every root, `host/sub`, is where a redirected mount would land: the race
// swaps `d` (a component of SUBDIR `d/sub`) or `d/sub` itself for a symlink leading there.

/// The host directory a followed symlink would lead to, with a file a mount would hide.
fn host(env: &Env) -> PathBuf {
    let host = env.path("host");
    std::fs::create_dir_all(host.join("sub")).unwrap();
    std::fs::write(host.join("sub/host-file"), SECRET).unwrap();
    host
}

fn host_untouched(host: &Path) {
    let names = |d: &Path| {
        let mut n: Vec<_> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        n.sort();
        n
    };
    assert_eq!(names(host), ["sub"], "the host directory changed");
    assert_eq!(names(&host.join("sub")), ["host-file"], "the host directory changed (or is mounted over)");
    assert_eq!(std::fs::read(host.join("sub/host-file")).unwrap(), SECRET);
}

/// (mount point, fstype, upperdir) of every mount, from /proc/self/mountinfo.
fn mountinfo() -> Vec<(PathBuf, String, Option<String>)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .map(|l| {
            let (pre, post) = l.split_once(" - ").unwrap();
            let target = PathBuf::from(pre.split(' ').nth(4).unwrap());
            let mut post = post.split(' ');
            let fstype = post.next().unwrap().to_string();
            let upper =
                post.nth(1).and_then(|o| o.split(',').find_map(|o| o.strip_prefix("upperdir=")).map(str::to_string));
            (target, fstype, upper)
        })
        .collect()
}

/// Nothing is mounted at or below `host`, and every overlay of this store is mounted inside
/// one of its roots.
fn nothing_mounted_outside(env: &Env, host: &Path) {
    let store = env.store().canonicalize().unwrap();
    let roots = store.join("roots");
    for (target, fstype, upper) in mountinfo() {
        assert!(!target.starts_with(host), "{} ({fstype}) is mounted outside every root", target.display());
        if upper.is_some_and(|u| u.starts_with(store.to_str().unwrap())) {
            assert!(target.starts_with(&roots), "an overlay of the store is mounted at {}", target.display());
        }
    }
}

/// The failpoint command: swap `d` (`last`: `d/sub`) in the root's working directory (found by
/// `cwd_glob`, as the root's id is not known before create) for a symlink into `host`, and
/// leave a mark that it ran.
fn swap_into_host(env: &Env, cwd_glob: &str, host: &Path, last: bool) -> String {
    let (dir, target) = if last { ("d/sub", host.join("sub")) } else { ("d", host.to_path_buf()) };
    format!(
        "cd {cwd_glob} && mv {dir} {dir}.moved && ln -s '{}' {dir} && touch '{}'",
        target.display(),
        env.path("swapped").display()
    )
}

/// A base snapshot with `d/` and a dependency snapshot to mount at `d/sub`.
fn mount_snapshots(env: &Env) {
    let src = tree_with_d(env, "src");
    env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "base"]);
    let dep = env.path("dep");
    std::fs::create_dir(&dep).unwrap();
    std::fs::write(dep.join("dep-file"), b"dep").unwrap();
    env.ok(&["snapshot", "create", dep.to_str().unwrap(), "--name", "dep"]);
}

/// The one sub-mount of the store's roots, if any.
fn sub_mount(env: &Env) -> Option<PathBuf> {
    let store = env.store().canonicalize().unwrap();
    mountinfo()
        .into_iter()
        .find(|(_, _, u)| {
            u.as_deref().is_some_and(|u| u.starts_with(store.join("roots").to_str().unwrap()) && u.contains("/m0/"))
        })
        .map(|(t, _, _)| t)
}

/// What a race at `point` must come to: `Ok(at)` mounted inside at `at` (relative to the
/// root's cwd), or `Err(words)` failed with a message holding `words`.
fn expected(point: &str, last: bool) -> Result<&'static str, &'static str> {
    match (point, last) {
        // Swapped before the mount point is opened: opening it refuses the symlink.
        ("submount.resolving", _) => Err("symlink"),
        // A parent renamed after the mount point was opened: the mount follows the directory,
        // which is still inside the root.
        ("mount.target-opened", false) => Ok("d.moved/sub"),
        // The mount point itself renamed and replaced: the check after mounting sees it.
        _ => Err("changed while being mounted on"),
    }
}

#[test]
fn create_never_mounts_a_swapped_subdir_outside_the_root() {
    if !can_mount() {
        return;
    }
    let cases = [
        ("copy", "submount.resolving"),
        ("copy", "mount.target-opened"),
        // On overlay the cwd's own mount comes first at mount.target-opened.
        ("overlay", "submount.resolving"),
    ];
    for (backend, point) in cases {
        for last in [false, true] {
            let what = format!("{backend} {point} last={last}");
            let env = Env::new();
            let host = host(&env);
            mount_snapshots(&env);
            let cwd_name = if backend == "overlay" { "merged" } else { "tree" };
            let glob = format!("{}/roots/*/{cwd_name}", env.store().display());
            let args = [
                "root",
                "create",
                "--class",
                "routine",
                "--from",
                "base",
                "--backend",
                backend,
                "--mount",
                "d/sub=dep",
            ];
            let r = raced(&env, point, &swap_into_host(&env, &glob, &host, last), &args);
            assert!(env.path("swapped").exists(), "{what}: the failpoint ran");
            match expected(point, last) {
                Ok(at) => {
                    assert!(r.status.success(), "{what}: {}", describe(&r));
                    let v = parse(&r);
                    assert_eq!(sub_mount(&env), Some(cwd(&v).canonicalize().unwrap().join(at)), "{what}");
                    nothing_mounted_outside(&env, &host);
                    env.ok(&["root", "destroy", v["id"].as_str().unwrap(), "--force"]);
                }
                Err(words) => {
                    assert_eq!(r.status.code(), Some(5), "{what}: {}", describe(&r));
                    assert!(describe(&r).contains(words), "{what}: a clear error: {}", describe(&r));
                    assert!(describe(&r).contains("d/sub"), "{what}: the error names the path: {}", describe(&r));
                }
            }
            nothing_mounted_outside(&env, &host);
            assert!(sub_mount(&env).is_none(), "{what}: a sub-mount outlived its root");
            assert_eq!(std::fs::read_dir(env.store().join("roots")).unwrap().count(), 0, "{what}");
            host_untouched(&host);
        }
    }
}

#[test]
fn doctor_never_remounts_a_swapped_subdir_outside_the_root() {
    if !can_mount() {
        return;
    }
    for point in ["submount.resolving", "mount.target-opened"] {
        for last in [false, true] {
            let what = format!("{point} last={last}");
            let env = Env::new();
            let host = host(&env);
            mount_snapshots(&env);
            let v = env.root(&["--class", "routine", "--from", "base", "--durable", "--mount", "d/sub=dep"]);
            let id = v["id"].as_str().unwrap().to_string();
            let cwd = cwd(&v).canonicalize().unwrap();
            // The sub-mount is lost (unmounted outside execroot); the root's tree is the run's.
            nix::mount::umount2(&cwd.join("d/sub"), nix::mount::MntFlags::empty()).unwrap();
            let r =
                raced(&env, point, &swap_into_host(&env, cwd.to_str().unwrap(), &host, last), &["doctor", "--repair"]);
            assert!(env.path("swapped").exists(), "{what}: the failpoint ran");
            let report = parse(&r);
            let finding = report["findings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["root"] == id.as_str())
                .unwrap_or_else(|| panic!("{what}: no finding for the root: {report}"))
                .clone();
            match expected(point, last) {
                Ok(at) => {
                    assert_eq!(finding["repaired"], true, "{what}: {finding}");
                    assert_eq!(sub_mount(&env), Some(cwd.join(at)), "{what}");
                }
                Err(words) => {
                    assert_eq!(finding["repaired"], false, "{what}: {finding}");
                    let action = finding["action"].as_str().unwrap();
                    assert!(action.contains(words) && action.contains("d/sub"), "{what}: a clear error: {action}");
                    assert!(!r.status.success(), "{what}");
                    assert!(sub_mount(&env).is_none(), "{what}");
                }
            }
            nothing_mounted_outside(&env, &host);
            host_untouched(&host);
            env.ok(&["root", "destroy", &id, "--force"]);
            nothing_mounted_outside(&env, &host);
            assert!(sub_mount(&env).is_none(), "{what}");
            host_untouched(&host);
        }
    }
}

#[test]
fn destroy_never_unmounts_through_a_swapped_directory() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let host = host(&env);
    mount_snapshots(&env);
    let v = env.root(&["--class", "routine", "--from", "base", "--mount", "d/sub=dep"]);
    let id = v["id"].as_str().unwrap().to_string();
    let cwd = cwd(&v).canonicalize().unwrap();
    // A host mount where a followed `d` would lead the unmount of `d/sub`.
    let host_mount = host.join("sub");
    nix::mount::mount(Some("tmpfs"), &host_mount, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=1m"))
        .unwrap();
    let r = raced(
        &env,
        "submount.unmounting",
        &swap_into_host(&env, cwd.to_str().unwrap(), &host, false),
        &["root", "destroy", &id],
    );
    assert!(env.path("swapped").exists(), "the failpoint ran");
    let still = mountinfo().iter().any(|(t, f, _)| t == &host_mount && f == "tmpfs");
    let _ = nix::mount::umount2(&host_mount, nix::mount::MntFlags::empty());
    assert!(still, "the host mount was unmounted through the symlink");
    assert_eq!(r.status.code(), Some(5), "{}", describe(&r));
    assert!(describe(&r).contains("a symlink on the way"), "{}", describe(&r));
    // Nothing was lost: the sub-mount is where the rename took it, and a retry finds it there.
    assert_eq!(sub_mount(&env), Some(cwd.join("d.moved/sub")));
    assert_eq!(env.ok(&["root", "destroy", &id])["cleaned"], true);
    assert!(sub_mount(&env).is_none());
    nothing_mounted_outside(&env, &host);
    host_untouched(&host);
}
