//! The diff code called directly: `change::overlay` against real overlayfs mounts of layers built
//! by hand (whiteouts, opaque directories, redirects made by the kernel itself), and
//! `change::tree` against real snapshots of a real store.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use execroot::change::overlay::{self, Lower};
use execroot::change::{tree, Change, Diff};
use execroot::store::ingest::{IngestOptions, NoProgress};
use execroot::store::Entry;
use execroot::Store;

// ---------------------------------------------------------------------------------------------
// Building trees by hand

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn at(root: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

fn mkdir(root: &Path, rel: &str, mode: u32) {
    let p = at(root, rel);
    std::fs::create_dir_all(&p).unwrap();
    chmod(&p, mode);
}

/// Write a file with exactly `mode`: the umask must not decide what the diff compares.
fn put(root: &Path, rel: &str, content: &str, mode: u32) {
    let p = root.join(rel);
    std::fs::write(&p, content).unwrap();
    chmod(&p, mode);
}

fn symlink(root: &Path, rel: &str, target: &str) {
    std::os::unix::fs::symlink(target, root.join(rel)).unwrap();
}

/// overlayfs's whiteout, as a layer (or the kernel, in an upper) spells it: a char device 0/0.
fn whiteout(root: &Path, rel: &str) {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    mknod(&root.join(rel), SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).unwrap();
}

fn opaque(root: &Path, rel: &str) {
    xattr::set(at(root, rel), overlay::OPAQUE, b"y").unwrap();
}

fn is_whiteout(p: &Path) -> bool {
    let md = std::fs::symlink_metadata(p).unwrap();
    md.file_type().is_char_device() && md.rdev() == 0
}

/// The tree every diff test starts from.
fn base(root: &Path) {
    mkdir(root, "", 0o755);
    put(root, "a.txt", "alpha\n", 0o644);
    put(root, "b.txt", "bravo\n", 0o644);
    put(root, "run.sh", "#!/bin/sh\n", 0o755);
    symlink(root, "link", "a.txt");
    mkdir(root, "dir", 0o755);
    put(root, "dir/one", "1", 0o644);
    mkdir(root, "dir/sub", 0o755);
    put(root, "dir/sub/two", "22", 0o644);
    symlink(root, "dir/sub/ln", "../one");
    mkdir(root, "keep", 0o755);
    put(root, "keep/x", "x", 0o644);
}

// ---------------------------------------------------------------------------------------------
// Reading diffs

/// One change as `path kind[ size][ content][ mode]`, so that a whole list reads as one literal.
fn show(list: &[Change]) -> Vec<String> {
    list.iter()
        .map(|c| {
            let mut s = format!("{} {}", String::from_utf8_lossy(&c.path.0), c.kind.as_str());
            if let Some(n) = c.size {
                s += &format!(" {n}");
            }
            if c.content {
                s += " content";
            }
            if c.mode {
                s += " mode";
            }
            s
        })
        .collect()
}

/// The three lists exactly, in order: the diff promises canonical path order.
fn assert_diff(d: &Diff, added: &[&str], modified: &[&str], deleted: &[&str]) {
    assert_eq!(show(&d.added), added, "added");
    assert_eq!(show(&d.modified), modified, "modified");
    assert_eq!(show(&d.deleted), deleted, "deleted");
}

fn skip_list(skip: &[&str]) -> Vec<Vec<u8>> {
    skip.iter().map(|s| s.as_bytes().to_vec()).collect()
}

// ---------------------------------------------------------------------------------------------
// overlay::diff

/// Detaches a mount when dropped, so that a failing assertion never leaves an overlay mounted
/// over a temporary directory that is about to be removed.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A real overlay of hand-built lower layers.
struct Overlay {
    // Declared first so that it drops (unmounts) before `env` removes the directories.
    _mounted: Unmount,
    _env: Env,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    merged: PathBuf,
}

impl Overlay {
    /// Mount `lowers` (top first) with an empty upper, with the options execroot's roots use
    /// for what the diff depends on: `redirect_dir=on` so that lower directories can be renamed.
    fn mount(env: Env, lowers: Vec<PathBuf>) -> Overlay {
        let (upper, work, merged) = (env.path("upper"), env.path("work"), env.path("merged"));
        for d in [&upper, &work, &merged] {
            mkdir(d, "", 0o755);
        }
        let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=on,index=off,metacopy=off",
            lowerdir.join(":"),
            upper.display(),
            work.display()
        );
        nix::mount::mount(Some("overlay"), &merged, Some("overlay"), nix::mount::MsFlags::empty(), Some(opts.as_str()))
            .unwrap_or_else(|e| panic!("mount overlay ({opts}): {e}"));
        Overlay { _mounted: Unmount(merged.clone()), _env: env, lowers, upper, merged }
    }

    fn diff(&self, skip: &[&str]) -> Diff {
        overlay::diff(&self.upper, &self.merged, &Lower { layers: self.lowers.clone() }, &skip_list(skip)).unwrap()
    }

    fn m(&self) -> &Path {
        &self.merged
    }
}

/// An overlay over one lower layer holding [`base`].
fn over_base() -> Overlay {
    let env = Env::new();
    let lower = env.path("lower");
    base(&lower);
    Overlay::mount(env, vec![lower])
}

#[test]
fn overlay_untouched_root_has_an_empty_diff() {
    if !can_mount() {
        return;
    }
    let o = over_base();
    // Reading never copies up, so nothing may show.
    assert_eq!(std::fs::read(o.m().join("dir/sub/two")).unwrap(), b"22");
    assert_eq!(std::fs::read_dir(o.m().join("dir")).unwrap().count(), 2);
    assert_diff(&o.diff(&[]), &[], &[], &[]);
}

#[test]
fn overlay_added_entries_are_added_with_their_kind_and_size() {
    if !can_mount() {
        return;
    }
    let o = over_base();
    put(o.m(), "new.txt", "new", 0o644);
    mkdir(o.m(), "dir/newdir", 0o755);
    put(o.m(), "dir/newdir/f", "ff", 0o644);
    symlink(o.m(), "dir/newlink", "one");
    // The parent `dir` was copied up to hold them, and is not itself a change.
    assert_diff(
        &o.diff(&[]),
        &["dir/newdir dir", "dir/newdir/f file 2", "dir/newlink symlink", "new.txt file 3"],
        &[],
        &[],
    );
}

#[test]
fn overlay_content_and_mode_changes_are_told_apart() {
    if !can_mount() {
        return;
    }
    let o = over_base();
    put(o.m(), "a.txt", "ALPHA\n", 0o644); // same size: only the hash can tell
    put(o.m(), "b.txt", "bravo, longer\n", 0o644);
    chmod(&o.m().join("run.sh"), 0o700);
    chmod(&o.m().join("dir"), 0o700);
    put(o.m(), "dir/one", "9", 0o600);
    assert_diff(
        &o.diff(&[]),
        &[],
        &[
            "a.txt file 6 content",
            "b.txt file 14 content",
            "dir dir mode",
            "dir/one file 1 content mode",
            "run.sh file 10 mode",
        ],
        &[],
    );
}

#[test]
fn overlay_copy_up_without_a_change_is_not_modified() {
    if !can_mount() {
        return;
    }
    let o = over_base();
    std::fs::OpenOptions::new().append(true).open(o.m().join("a.txt")).unwrap();
    set_mtime(&o.m().join("b.txt"), 12345, 0);
    chmod(&o.m().join("run.sh"), 0o755);
    chmod(&o.m().join("dir/sub"), 0o755);
    std::fs::remove_file(o.m().join("dir/one")).unwrap();
    put(o.m(), "dir/one", "1", 0o644);
    std::fs::remove_file(o.m().join("link")).unwrap();
    symlink(o.m(), "link", "a.txt");
    // Every one of them is in the upper now: the diff has to look and decide they are equal.
    for rel in ["a.txt", "b.txt", "run.sh", "dir/sub", "dir/one", "link"] {
        let md = std::fs::symlink_metadata(o.upper.join(rel)).unwrap_or_else(|e| panic!("{rel} not copied up: {e}"));
        assert!(!md.file_type().is_char_device(), "{rel} is a whiteout");
    }
    assert_diff(&o.diff(&[]), &[], &[], &[]);
}

#[test]
fn overlay_deleted_lower_file_is_a_whiteout_and_a_deletion() {
    if !can_mount() {
        return;
    }
    let o = over_base();
    std::fs::remove_file(o.m().join("a.txt")).unwrap();
    std::fs::remove_file(o.m().join("link")).unwrap();
    assert!(is_whiteout(&o.upper.join("a.txt")));
    // A deletion reports what was there: its kind and, for a file, its old size.
    assert_diff(&o.diff(&[]), &[], &[], &["a.txt file 6", "link symlink"]);
}

#[test]
fn overlay_deleted_lower_tree_deletes_every_entry_below_it() {
    if !can_mount() {
        return;
    }
    let o = over_base();
    std::fs::remove_dir_all(o.m().join("dir")).unwrap();
    // The upper holds one whiteout; the entries below come from the lower view.
    assert!(is_whiteout(&o.upper.join("dir")));
    assert_diff(
        &o.diff(&[]),
        &[],
        &[],
        &["dir dir", "dir/one file 1", "dir/sub dir", "dir/sub/ln symlink", "dir/sub/two file 2"],
    );
}

#[test]
fn overlay_renamed_lower_dir_is_the_old_tree_deleted_and_the_new_one_added() {
    if !can_mount() {
        return;
    }
    let o = over_base();
    std::fs::rename(o.m().join("dir"), o.m().join("moved")).unwrap();
    std::fs::rename(o.m().join("keep"), o.m().join("moved/sub/kept")).unwrap();
    // The kernel made redirects (the renamed directories' upper copies are otherwise empty).
    assert!(xattr::get(o.upper.join("moved"), overlay::REDIRECT).unwrap().is_some());
    assert!(xattr::get(o.upper.join("moved/sub/kept"), overlay::REDIRECT).unwrap().is_some());
    assert!(is_whiteout(&o.upper.join("dir")));
    assert_diff(
        &o.diff(&[]),
        &[
            "moved dir",
            "moved/one file 1",
            "moved/sub dir",
            "moved/sub/kept dir",
            "moved/sub/kept/x file 1",
            "moved/sub/ln symlink",
            "moved/sub/two file 2",
        ],
        &[],
        &[
            "dir dir",
            "dir/one file 1",
            "dir/sub dir",
            "dir/sub/ln symlink",
            "dir/sub/two file 2",
            "keep dir",
            "keep/x file 1",
        ],
    );
}

#[test]
fn overlay_dir_renamed_away_and_back_is_no_change() {
    if !can_mount() {
        return;
    }
    let o = over_base();
    std::fs::rename(o.m().join("dir"), o.m().join("elsewhere")).unwrap();
    std::fs::rename(o.m().join("elsewhere"), o.m().join("dir")).unwrap();
    assert_diff(&o.diff(&[]), &[], &[], &[]);
}

#[test]
fn overlay_kind_changes_are_content_changes() {
    if !can_mount() {
        return;
    }
    let o = over_base();
    std::fs::remove_dir_all(o.m().join("dir")).unwrap();
    put(o.m(), "dir", "now a file", 0o755);
    std::fs::remove_file(o.m().join("a.txt")).unwrap();
    mkdir(o.m(), "a.txt", 0o644);
    put(o.m(), "a.txt/inner", "inner", 0o644);
    // Each replacement keeps the old permission bits, so that only the kind differs (when the
    // bits differ too, see `overlay_kind_change_alone_never_sets_mode`).
    assert_diff(
        &o.diff(&[]),
        &["a.txt/inner file 5"],
        &["a.txt dir content", "dir file 10 content"],
        &["dir/one file 1", "dir/sub dir", "dir/sub/ln symlink", "dir/sub/two file 2"],
    );
}

#[test]
fn overlay_kind_change_alone_never_sets_mode() {
    if !can_mount() {
        return;
    }
    let o = over_base();
    std::fs::remove_dir_all(o.m().join("keep")).unwrap();
    // Was a 0755 directory.
    put(o.m(), "keep", "file now", 0o644);
    std::fs::remove_file(o.m().join("link")).unwrap();
    // Was a symlink, whose lstat mode is always 0777.
    put(o.m(), "link", "file now", 0o644);
    // change::tree reports these as `content` only; the two backends' `root diff` must agree.
    assert_diff(&o.diff(&[]), &[], &["keep file 8 content", "link file 8 content"], &["keep/x file 1"]);
}

#[test]
fn overlay_recreated_dir_is_opaque_and_what_it_does_not_show_again_is_deleted() {
    if !can_mount() {
        return;
    }
    let o = over_base();
    std::fs::remove_dir_all(o.m().join("dir")).unwrap();
    mkdir(o.m(), "dir", 0o755);
    put(o.m(), "dir/one", "1", 0o644); // the same file again
    put(o.m(), "dir/fresh", "fresh", 0o644);
    mkdir(o.m(), "dir/sub", 0o755);
    put(o.m(), "dir/sub/three", "333", 0o644);
    assert_eq!(xattr::get(o.upper.join("dir"), overlay::OPAQUE).unwrap(), Some(b"y".to_vec()));
    assert_diff(
        &o.diff(&[]),
        &["dir/fresh file 5", "dir/sub/three file 3"],
        &[],
        &["dir/sub/ln symlink", "dir/sub/two file 2"],
    );
}

#[test]
fn overlay_symlink_retarget_is_a_content_change_and_the_same_target_is_none() {
    if !can_mount() {
        return;
    }
    let o = over_base();
    std::fs::remove_file(o.m().join("link")).unwrap();
    symlink(o.m(), "link", "b.txt");
    std::fs::remove_file(o.m().join("dir/sub/ln")).unwrap();
    symlink(o.m(), "dir/sub/ln", "../one");
    assert_diff(&o.diff(&[]), &[], &["link symlink content"], &[]);
}

#[test]
fn overlay_changes_at_or_below_skip_are_left_out() {
    if !can_mount() {
        return;
    }
    let o = over_base();
    put(o.m(), "dir/sub/two", "changed", 0o644);
    put(o.m(), "dir/sub/new", "n", 0o644);
    std::fs::remove_file(o.m().join("dir/sub/ln")).unwrap();
    std::fs::remove_dir_all(o.m().join("keep")).unwrap();
    // Skipping is by path component: `dir/subway` is not below `dir/sub`.
    put(o.m(), "dir/subway", "w", 0o644);
    put(o.m(), "dir/one", "9", 0o644);
    assert_diff(&o.diff(&["dir/sub", "keep"]), &["dir/subway file 1"], &["dir/one file 1 content"], &[]);
}

#[test]
fn overlay_deleting_an_ancestor_of_skip_does_not_report_the_skipped_entries() {
    if !can_mount() {
        return;
    }
    let o = over_base();
    // A root gets here when its run renames the parent of a `--mount` subdirectory: the mount
    // point itself cannot be removed, but it moves along with its parent.
    std::fs::remove_dir_all(o.m().join("dir")).unwrap();
    assert_diff(&o.diff(&["dir/sub"]), &[], &[], &["dir dir", "dir/one file 1"]);
}

/// Two lower layers, top first: the top one hides parts of the bottom one ([`base`] plus
/// `gonedir/f` and `shadow/inner`) with whiteouts, an opaque directory and a file over a
/// directory, the way a change snapshot's layer does.
fn two_layers(env: &Env) -> Vec<PathBuf> {
    let (top, bottom) = (env.path("top"), env.path("bottom"));
    base(&bottom);
    mkdir(&bottom, "gonedir", 0o755);
    put(&bottom, "gonedir/f", "f", 0o644);
    mkdir(&bottom, "shadow", 0o755);
    put(&bottom, "shadow/inner", "i", 0o644);

    mkdir(&top, "", 0o755);
    whiteout(&top, "a.txt");
    whiteout(&top, "gonedir");
    mkdir(&top, "dir", 0o755);
    whiteout(&top, "dir/one");
    put(&top, "dir/three", "3", 0o644);
    mkdir(&top, "keep", 0o755);
    opaque(&top, "keep");
    put(&top, "keep/y", "y", 0o644);
    put(&top, "shadow", "now a file", 0o644);
    put(&top, "new.txt", "new", 0o644);
    vec![top, bottom]
}

#[test]
fn lower_lookup_and_children_honour_whiteouts_and_opaque_dirs_of_upper_layers() {
    // No mount, but whiteouts (mknod) and trusted.* attributes need root all the same.
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let layers = two_layers(&env);
    let (top, bottom) = (layers[0].clone(), layers[1].clone());
    let lower = Lower { layers };
    let found = |rel: &str| lower.lookup(rel.as_bytes()).unwrap().map(|(p, _)| p);
    assert_eq!(found(""), Some(top.clone()));
    assert_eq!(found("b.txt"), Some(bottom.join("b.txt")));
    assert_eq!(found("new.txt"), Some(top.join("new.txt")));
    assert_eq!(found("dir"), Some(top.join("dir")), "the top layer wins");
    assert_eq!(found("dir/three"), Some(top.join("dir/three")));
    // A directory of the top layer that is not opaque lets the bottom one show through.
    assert_eq!(found("dir/sub"), Some(bottom.join("dir/sub")));
    assert_eq!(found("dir/sub/two"), Some(bottom.join("dir/sub/two")));
    assert_eq!(found("keep"), Some(top.join("keep")));
    assert_eq!(found("keep/y"), Some(top.join("keep/y")));
    assert_eq!(found("shadow"), Some(top.join("shadow")));
    assert!(lower.lookup(b"shadow").unwrap().unwrap().1.is_file());
    for hidden in ["a.txt", "dir/one", "keep/x", "shadow/inner", "gonedir", "gonedir/f", "missing", "dir/missing"] {
        assert_eq!(found(hidden), None, "{hidden} must be hidden");
    }

    let children = |rel: &str| {
        let mut v: Vec<String> =
            lower.children(rel.as_bytes()).unwrap().into_iter().map(|n| String::from_utf8(n).unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(children(""), ["b.txt", "dir", "keep", "link", "new.txt", "run.sh", "shadow"]);
    assert_eq!(children("dir"), ["sub", "three"]);
    assert_eq!(children("dir/sub"), ["ln", "two"]);
    assert_eq!(children("keep"), ["y"]);
    assert!(children("shadow").is_empty(), "a file in the top layer has no children");
}

#[test]
fn overlay_diff_honours_the_lower_layers_own_whiteouts_and_opaque_dirs() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let layers = two_layers(&env);
    let o = Overlay::mount(env, layers);
    // What the merged view shows is what the lower view must agree with.
    assert!(!o.m().join("a.txt").exists());
    assert_eq!(std::fs::read_dir(o.m().join("keep")).unwrap().count(), 1);
    put(o.m(), "a.txt", "again", 0o644); // whited out below: new, not modified
    std::fs::remove_dir_all(o.m().join("keep")).unwrap(); // keep/x was never visible
    std::fs::remove_file(o.m().join("shadow")).unwrap(); // shadow/inner was never visible
    mkdir(o.m(), "gonedir", 0o755); // gonedir/f stays hidden
    assert_diff(&o.diff(&[]), &["a.txt file 5", "gonedir dir"], &[], &["keep dir", "keep/y file 1", "shadow file 10"]);
}

// ---------------------------------------------------------------------------------------------
// tree::diff

/// A store holding [`base`] and a checkout of it: what a copy root starts from.
struct Tree {
    _env: Env,
    entries: Vec<Entry>,
    cwd: PathBuf,
}

/// Far in the past, so that any write made by a test has a different mtime.
const OLD: i64 = 1_000_000_000;

impl Tree {
    fn new() -> Tree {
        let env = Env::new();
        let src = env.path("src");
        base(&src);
        for e in walkdir::WalkDir::new(&src).min_depth(1) {
            set_mtime(e.unwrap().path(), OLD, 0);
        }
        let store = Store::open(env.store()).unwrap();
        let report = store.ingest_dir(&src, &IngestOptions::default(), &NoProgress).unwrap();
        let id = report.id;
        let cwd = env.path("cwd");
        store.checkout(&id, &cwd).unwrap();
        let entries = store.flatten_stack(&[id]).unwrap();
        Tree { _env: env, entries, cwd }
    }

    fn c(&self) -> &Path {
        &self.cwd
    }

    fn diff(&self, skip: &[&str]) -> Diff {
        tree::diff(&self.cwd, &self.entries, &skip_list(skip)).unwrap()
    }

    /// Give `rel` back the mtime the manifest recorded for it.
    fn restore_mtime(&self, rel: &str) {
        let e = self.entries.iter().find(|e| e.path == rel.as_bytes()).unwrap();
        set_mtime(&self.cwd.join(rel), e.mtime_sec, e.mtime_nsec.into());
    }
}

#[test]
fn tree_untouched_checkout_has_an_empty_diff() {
    let t = Tree::new();
    assert_diff(&t.diff(&[]), &[], &[], &[]);
}

#[test]
fn tree_trusts_size_and_mtime_and_hashes_everything_else() {
    let t = Tree::new();
    // Same size and mtime: taken as unchanged without reading it, as git's index does.
    put(t.c(), "a.txt", "ALPHA\n", 0o644);
    t.restore_mtime("a.txt");
    // Same size, new mtime: hashed, and found different.
    put(t.c(), "b.txt", "BRAVO\n", 0o644);
    // New size: different whatever the mtime says.
    put(t.c(), "run.sh", "#!/bin/bash\n", 0o755);
    t.restore_mtime("run.sh");
    // New mtime, same content: hashed, and found equal.
    set_mtime(&t.c().join("dir/one"), OLD + 1, 0);
    assert_diff(&t.diff(&[]), &[], &["b.txt file 6 content", "run.sh file 12 content"], &[]);
}

#[test]
fn tree_mode_changes_are_mode_only() {
    let t = Tree::new();
    chmod(&t.c().join("run.sh"), 0o700);
    chmod(&t.c().join("dir/sub"), 0o750);
    put(t.c(), "dir/one", "9", 0o600);
    assert_diff(&t.diff(&[]), &[], &["dir/one file 1 content mode", "dir/sub dir mode", "run.sh file 10 mode"], &[]);
}

#[test]
fn tree_symlink_retarget_is_a_content_change_and_the_same_target_is_none() {
    let t = Tree::new();
    std::fs::remove_file(t.c().join("link")).unwrap();
    symlink(t.c(), "link", "b.txt");
    std::fs::remove_file(t.c().join("dir/sub/ln")).unwrap();
    symlink(t.c(), "dir/sub/ln", "../one");
    assert_diff(&t.diff(&[]), &[], &["link symlink content"], &[]);
}

#[test]
fn tree_kind_changes_are_content_changes_and_never_mode() {
    let t = Tree::new();
    std::fs::remove_file(t.c().join("a.txt")).unwrap();
    mkdir(t.c(), "a.txt", 0o755); // was 0644
    put(t.c(), "a.txt/inner", "inner", 0o644);
    std::fs::remove_dir_all(t.c().join("dir")).unwrap();
    put(t.c(), "dir", "now a file", 0o644); // was 0755
    std::fs::remove_file(t.c().join("link")).unwrap();
    put(t.c(), "link", "x", 0o644);
    std::fs::remove_file(t.c().join("b.txt")).unwrap();
    symlink(t.c(), "b.txt", "a.txt");
    assert_diff(
        &t.diff(&[]),
        &["a.txt/inner file 5"],
        &["a.txt dir content", "b.txt symlink content", "dir file 10 content", "link file 1 content"],
        &["dir/one file 1", "dir/sub dir", "dir/sub/ln symlink", "dir/sub/two file 2"],
    );
}

#[test]
fn tree_additions_and_deletions_report_kind_and_size() {
    let t = Tree::new();
    std::fs::remove_dir_all(t.c().join("dir/sub")).unwrap();
    std::fs::remove_file(t.c().join("link")).unwrap();
    std::fs::remove_file(t.c().join("b.txt")).unwrap();
    mkdir(t.c(), "new/deeper", 0o755);
    put(t.c(), "new/deeper/f", "four", 0o644);
    symlink(t.c(), "new/l", "deeper/f");
    assert_diff(
        &t.diff(&[]),
        &["new dir", "new/deeper dir", "new/deeper/f file 4", "new/l symlink"],
        &[],
        &["b.txt file 6", "dir/sub dir", "dir/sub/ln symlink", "dir/sub/two file 2", "link symlink"],
    );
}

#[test]
fn tree_changes_at_or_below_skip_are_left_out() {
    let t = Tree::new();
    put(t.c(), "dir/sub/two", "changed", 0o644);
    put(t.c(), "dir/sub/new", "n", 0o644);
    std::fs::remove_file(t.c().join("dir/sub/ln")).unwrap();
    std::fs::remove_dir_all(t.c().join("keep")).unwrap();
    put(t.c(), "dir/subway", "w", 0o644);
    put(t.c(), "dir/one", "9", 0o644);
    assert_diff(&t.diff(&["dir/sub", "keep"]), &["dir/subway file 1"], &["dir/one file 1 content"], &[]);
}

#[test]
fn tree_deleting_an_ancestor_of_skip_does_not_report_the_skipped_entries() {
    let t = Tree::new();
    std::fs::remove_dir_all(t.c().join("dir")).unwrap();
    assert_diff(&t.diff(&["dir/sub"]), &[], &[], &["dir dir", "dir/one file 1"]);
}

#[test]
fn diff_json_has_the_documented_shape_and_raw_paths_survive() {
    let t = Tree::new();
    let raw = std::ffi::OsStr::from_bytes(b"caf\xe9");
    std::fs::write(t.c().join(raw), "x").unwrap();
    chmod(&t.c().join("run.sh"), 0o700);
    std::fs::remove_dir_all(t.c().join("keep")).unwrap();
    let d = t.diff(&[]);
    assert_eq!(d.added[0].path.0, b"caf\xe9");
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            // Not UTF-8: the raw bytes in base64, never a lossy string.
            "added": [ { "path": { "base64": "Y2Fm6Q==" }, "kind": "file", "size": 1 } ],
            // `content` and `mode` appear only when set; `size` only for files.
            "modified": [ { "path": "run.sh", "kind": "file", "size": 10, "mode": true } ],
            "deleted": [ { "path": "keep", "kind": "dir" }, { "path": "keep/x", "kind": "file", "size": 1 } ],
        })
    );
    assert_eq!(d.written(), [b"caf\xe9".to_vec(), b"run.sh".to_vec()]);
    assert_eq!(d.removed(), [b"keep".to_vec(), b"keep/x".to_vec()]);
}
