//! A full disk: the store on a small loop-mounted ext4 filesystem, filled until ENOSPC from
//! inside a root or by an ingest, then destroy, gc, doctor and ingest must all work with
//! execroot alone, say what happened, and leave nothing behind (docs/roots.md, "Full disks").

mod common;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A small ext4 filesystem in an image file, loop-mounted at the test store's path; unmounted
/// (with everything still mounted on it) when dropped, before the scratch directory goes.
struct SmallDisk {
    mnt: PathBuf,
}

impl SmallDisk {
    /// `mib` MiB, no reserved blocks (the tests run as root, who could use them).
    fn new(env: &Env, mib: u64) -> SmallDisk {
        let img = env.path("disk.img");
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(mib << 20).unwrap();
        drop(f);
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(&img));
        let mnt = env.store();
        std::fs::create_dir_all(&mnt).unwrap();
        run(Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&mnt));
        SmallDisk { mnt }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let mut below = mounts_below(&self.mnt);
        below.sort();
        for m in below.iter().rev() {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn run(c: &mut Command) {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e} (is e2fsprogs installed?)"));
    assert!(out.status.success(), "{c:?}: {}", describe(&out));
}

/// Write into `dir` until the filesystem says ENOSPC: one big file, then one-block files
/// until not even one more block is free.
fn fill(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut f = std::fs::File::create(dir.join("fill")).unwrap();
    let buf = vec![0x5au8; 1 << 20];
    loop {
        match f.write_all(&buf) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling: {e}"),
        }
    }
    let _ = f.flush();
    for i in 0..100_000 {
        let r = std::fs::write(dir.join(format!("f{i}")), [1u8; 4096]);
        match r {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return,
            Err(e) => panic!("filling: {e}"),
        }
    }
    panic!("the disk never filled");
}

/// The disk is full: a new file with one block of data cannot be written.
fn assert_full(store: &Path) {
    let e = std::fs::write(store.join("probe"), [0u8; 4096]).expect_err("the disk is not full");
    let _ = std::fs::remove_file(store.join("probe"));
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
}

/// Nothing is left over: no roots, no leases, no mounts under the store but the disk itself.
fn assert_clean(env: &Env) {
    let store = env.store();
    let roots = std::fs::read_dir(store.join("roots")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(roots, 0, "root directories left");
    let tmp: Vec<_> = std::fs::read_dir(store.join("tmp")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(tmp.is_empty(), "leases left: {tmp:?}");
    assert_eq!(mounts_below(&store), vec![store.clone()], "mounts left under the store");
    assert_eq!(env.ok(&["root", "list"])["roots"].as_array().unwrap().len(), 0);
}

fn actions(doctor: &serde_json::Value) -> Vec<(String, String, bool)> {
    doctor["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (f["kind"].as_str().unwrap().to_string(), f["action"].as_str().unwrap().to_string(), f["repaired"] == true)
        })
        .collect()
}

#[test]
fn a_root_that_filled_the_disk_is_destroyed_and_everything_works_again() {
    if !needs_root("loop mounts need root") {
        return;
    }
    let env = Env::new();
    let _disk = SmallDisk::new(&env, 64);
    let src = env.fixture("small", 5, "src");
    env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "base"]);
    // An unnamed snapshot gc will collect: something to free besides the root.
    let extra = env.fixture("small", 6, "extra");
    let loose = env.ingest(&extra);
    let r = env.root(&["--class", "routine", "--from", "base", "--backend", "overlay"]);
    let id = r["id"].as_str().unwrap().to_string();
    fill(&cwd(&r));
    assert_full(&env.store());

    // On the full disk, with the root still there: gc and doctor start and succeed.
    let d = env.ok(&["doctor", "--repair"]);
    assert_eq!(d["ok"], true, "{d}");
    assert_full(&env.store());
    let gc = env.ok(&["gc", "--grace", "0"]);
    assert!(gc["removedSnapshots"].as_array().unwrap().iter().any(|s| s == loose.as_str()), "{gc}");
    // Full again, to destroy on a full disk.
    fill(&cwd(&r).join("more"));
    assert_full(&env.store());

    let des = env.ok(&["root", "destroy", &id]);
    assert_eq!(des["cleaned"], true, "{des}");
    env.fails(&["root", "show", &id], 4);
    let gc = env.ok(&["gc", "--grace", "0"]);
    assert_eq!(gc["removedObjects"], 0, "{gc}");
    let d = env.ok(&["doctor", "--repair"]);
    assert!(actions(&d).is_empty(), "a clean destroy left work for doctor: {d}");
    let again = env.ingest(&extra);
    assert_eq!(again, loose);
    assert_eq!(env.ok(&["verify"])["ok"], true);
    assert_clean(&env);
}

#[test]
fn a_destroy_killed_on_a_full_disk_is_finished_by_doctor() {
    if !needs_root("loop mounts need root") {
        return;
    }
    let env = Env::new();
    let _disk = SmallDisk::new(&env, 64);
    let src = env.fixture("small", 5, "src");
    env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "base"]);
    for point in ["root.destroy.recorded", "root.destroy.backend-done", "root.destroy.files-removed"] {
        let r = env.root(&["--class", "routine", "--from", "base", "--backend", "overlay", "--mount", "sub=base"]);
        let id = r["id"].as_str().unwrap().to_string();
        fill(&cwd(&r));
        assert_full(&env.store());
        let out = env.spawnable(&["root", "destroy", &id]).env("EXECROOT_FAILPOINT", point).output().unwrap();
        assert_eq!(out.status.signal(), Some(9), "destroy did not reach {point}: {}", describe(&out));
        // Doctor sees an interrupted destroy (not a volatile root the system lost) and finishes it.
        let d = env.ok(&["doctor", "--repair"]);
        let found = actions(&d);
        if point == "root.destroy.files-removed" {
            // Only the record is left: still a destroy to finish.
            assert!(found.iter().any(|f| f.0 == "stuck-destroying"), "{point}: {d}");
        }
        assert!(
            found.iter().all(|(kind, action, repaired)| kind == "stuck-destroying"
                && action == "finished the interrupted destroy"
                && *repaired),
            "{point}: {d}"
        );
        assert_eq!(found.len(), 1, "{point}: {d}");
        env.fails(&["root", "show", &id], 4);
        assert!(actions(&env.ok(&["doctor"])).is_empty());
        assert_clean(&env);
    }
}

#[test]
fn a_failing_ingest_releases_its_new_objects() {
    if !needs_root("loop mounts need root") {
        return;
    }
    let env = Env::new();
    let _disk = SmallDisk::new(&env, 64);
    let src = env.fixture("small", 5, "src");
    env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "base"]);
    let before = env.object_count();
    let free = || nix::sys::statvfs::statvfs(&env.store()).unwrap().blocks_available();
    let free_before = free();

    // More new content than the disk holds: the ingest fails with ENOSPC (exit 1) part way.
    let big = env.path("big");
    std::fs::create_dir(&big).unwrap();
    for i in 0..8 {
        let chunk: Vec<u8> =
            (0..8u32 << 20).map(|b| (b.wrapping_mul(2654435761).wrapping_add(i) >> 13) as u8).collect();
        std::fs::write(big.join(format!("part{i}")), chunk).unwrap();
    }
    let out = env.cmd(&["snapshot", "create", big.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success(), "64 MiB of new content fit a 64 MiB disk: {}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No space left"), "{}", describe(&out));
    assert_eq!(env.object_count(), before, "the failed ingest left objects");
    assert!(free() + 16 >= free_before, "space not given back: {} of {} blocks free", free(), free_before);

    // A bad tar entry after some new content: refused, and its new content is gone.
    let tar = env.path("bad.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&tar).unwrap());
        let mut h = tar::Header::new_gnu();
        let data = b"content only this ingest has";
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "fresh.txt", &data[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.as_old_mut().name[..5].copy_from_slice(b"../up");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        b.finish().unwrap();
    }
    let out = env.cmd(&["snapshot", "create", "--tar", tar.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(env.object_count(), before, "the refused tar ingest left objects");

    // Killed after storing its objects, before publishing: doctor sweeps them.
    let small = env.fixture("small", 77, "other");
    env.ingest(&small);
    let grown = env.object_count();
    let killed = env.fixture("small", 78, "killed");
    let out = env
        .spawnable(&["snapshot", "create", killed.to_str().unwrap()])
        .env("EXECROOT_FAILPOINT", "ingest.objects-stored")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "{}", describe(&out));
    let d = env.ok(&["doctor", "--repair"]);
    assert_eq!(d["ok"], true, "{d}");
    assert_eq!(env.object_count(), grown, "the killed ingest's objects outlived it");
    assert_eq!(env.ok(&["verify"])["ok"], true);
    assert_clean(&env);
}

#[test]
fn lock_files_do_not_grow_with_keys() {
    let env = Env::new();
    let src = env.path("tiny");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    env.ok(&["snapshot", "create", src.to_str().unwrap(), "--name", "base"]);
    for i in 0..300 {
        let k = format!("key-{i}");
        let r = env.root(&["--class", "routine", "--from", "base", "--backend", "copy", "--key", &k]);
        env.ok(&["root", "destroy", r["id"].as_str().unwrap()]);
    }
    let names = |d: &str| -> Vec<String> {
        std::fs::read_dir(env.store().join(d))
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    assert!(names("keys").is_empty(), "files left in keys/ after every root went: {:?}", names("keys"));
    let locks = names("locks");
    // A fixed set: 256 stripes per kind, whatever the number of keys.
    assert!(locks.iter().all(|n| n.starts_with("key-") && n.len() == 6), "{locks:?}");
    assert!(locks.len() < 300, "{} lock files for 300 keys", locks.len());
}

#[test]
fn idmapped_views_go_with_the_last_root_that_uses_them() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.with_base();
    let views = env.store().join("idmap");
    let a = env.root(&["--class", "routine", "--from", "base", "--owner", "nobody", "--mount", "sub=base"]);
    let b = env.root(&["--class", "routine", "--from", "base", "--owner", "nobody"]);
    let made = mounts_below(&views);
    assert!(!made.is_empty(), "no idmapped view for another owner's root");
    env.ok(&["root", "destroy", a["id"].as_str().unwrap()]);
    assert_eq!(mounts_below(&views), made, "a view went while a root still uses it");
    assert!(std::fs::read_to_string(cwd(&b).join("bin/run.sh")).unwrap().contains("echo ran"));
    env.ok(&["root", "destroy", b["id"].as_str().unwrap()]);
    assert!(mounts_below(&views).is_empty(), "views outlived the last root: {:?}", mounts_below(&views));
    for owner in std::fs::read_dir(&views).unwrap() {
        let owner = owner.unwrap().path();
        if owner.is_dir() {
            assert_eq!(std::fs::read_dir(&owner).unwrap().count(), 0, "view directories left in {}", owner.display());
        }
    }
    // Views an earlier release left behind (made here by a root whose record then goes by
    // hand) are released by doctor.
    let c = env.root(&["--class", "routine", "--from", "base", "--owner", "nobody"]);
    let cdir = env.store().join("roots").join(c["id"].as_str().unwrap());
    nix::mount::umount2(&cwd(&c), nix::mount::MntFlags::MNT_DETACH).unwrap();
    std::fs::remove_dir_all(&cdir).unwrap();
    assert!(!mounts_below(&views).is_empty());
    let d = env.fails(&["doctor"], 3);
    assert!(d["findings"].as_array().unwrap().iter().all(|f| f["kind"] == "stray-mount"), "{d}");
    let d = env.ok(&["doctor", "--repair"]);
    assert!(
        d["findings"].as_array().unwrap().iter().any(|f| f["action"] == "unmounted the idmapped view no root uses"),
        "{d}"
    );
    assert!(mounts_below(&views).is_empty());
    assert!(env.ok(&["doctor"])["findings"].as_array().unwrap().is_empty());
}
