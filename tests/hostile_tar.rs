//! Hostile tar archives, generated (issue 9, section 5): thousands per run (env
//! `EXECROOT_SUITE_TARS`, default 4000; proptest's `PROPTEST_RNG_SEED` replays a run). Each
//! archive is built byte by byte from a model of members with hostile choices: `..` and
//! absolute names, duplicates, names through symlinks, hardlinks to absent, later, directory and
//! outside targets, directory/file conflicts, `.` entries of every type, GNU long names and pax
//! paths, long link targets, binary and newline bytes, components over 255 bytes, devices and
//! FIFOs, GNU and pax sparse members, huge declared sizes with truncated data, truncated
//! archives and bad checksums.
//!
//! Each is ingested through the library (`Store::ingest_tar`). The outcome must be exactly one
//! of: the archive is ingested exactly (the checkout equals the tree the model says the archive
//! means: kinds, permission bits, contents, symlink targets, whole-second mtimes, implicit
//! directories 0755 with mtime 0), or it is refused as bad input (`Error::BadInput`, exit 2;
//! docs/cli.md allows no other kind for a hostile archive). Either way the store is
//! verify-clean, holds no snapshot after a refusal and no lease after either, and nothing is
//! written outside the store and the checkout (a sentinel directory that hostile names and
//! symlinks point at stays empty).
//!
//! A pax record whose value holds a newline (legal pax: records are length-prefixed) must be
//! refused: the `tar` crate splits records at newlines, so execroot cannot read it exactly
//! (docs/format.md, "Tar ingest").

mod common;

use std::collections::{BTreeMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use execroot::store::ingest::{IngestOptions, NoProgress};
use execroot::{Error, Store};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Stands for the absolute path of the sentinel directory in generated names and targets.
const OUT: &[u8] = b"\x01OUT\x01";

/// How a name or link target is carried.
#[derive(Clone, Copy, Debug)]
enum Enc {
    /// In the header's 100-byte field (longer names fall back to `GnuLong`).
    Short,
    /// In a preceding GNU `L` (name) or `K` (link target) member.
    GnuLong,
    /// In a preceding pax `x` header (`path`, `linkpath`); the ustar field holds a decoy.
    Pax,
}

#[derive(Clone, Debug)]
enum Kind {
    /// A regular file: type `0`, or the old `\0`, or contiguous `7` (stored like `0`).
    File(Vec<u8>, u8),
    Dir,
    /// A directory or symlink whose header declares data (which readers skip).
    DirWithData(Vec<u8>),
    Symlink(Vec<u8>, Enc),
    Hardlink(Vec<u8>, Enc),
    /// Char `3`, block `4`, FIFO `6`.
    Special(u8),
    /// A type no ingest knows (`V`, `M`, `Q`...).
    Unknown(u8),
    /// A pax global header (`g`), which ingest ignores.
    PaxGlobal,
    /// GNU sparse (`S`): `data` at offset 0, then a hole of `hole` bytes.
    GnuSparse(Vec<u8>, u64),
    /// pax sparse 1.0: a regular member named `GNUSparseFile.0/NAME` whose data starts with the
    /// map; the pax header gives the real name and size.
    PaxSparse(Vec<u8>, u64),
}

#[derive(Clone, Debug)]
struct Member {
    name: Vec<u8>,
    enc: Enc,
    kind: Kind,
    mode: u32,
    mtime: u64,
}

/// One damage to the archive as a whole.
#[derive(Clone, Debug)]
enum Fault {
    None,
    /// Cut the archive at this fraction (per mille) of its length.
    Truncate(u16),
    /// Break the checksum of member `n % members`.
    BadChecksum(usize),
    /// The last regular file declares a size of 2^40 bytes; its data ends with the archive.
    HugeSize,
}

#[derive(Clone, Debug)]
struct Archive {
    members: Vec<Member>,
    fault: Fault,
    skip_special: bool,
}

/// The generator's switches.
#[derive(Clone, Copy)]
struct Gen {
    /// Directory modes without owner rwx only when running as root (otherwise the comparison
    /// could not read the checkout).
    root: bool,
}

fn component() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        30 => prop::sample::select(vec![&b"a"[..], b"b", b"c"]).prop_map(|s| s.to_vec()),
        2 => Just(b".".to_vec()),
        3 => Just(b"..".to_vec()),
        1 => Just(Vec::new()),
        1 => Just(vec![b'n'; 255]),
        2 => Just(vec![b'n'; 256]),
        1 => Just(b"\xff\xfe".to_vec()),
        1 => Just(b"new\nline".to_vec()),
        1 => Just(b"sp ace\t-".to_vec()),
    ]
}

fn path() -> impl Strategy<Value = Vec<u8>> {
    let long_max = 4200;
    prop_oneof![
        20 => (
            prop::sample::select(vec![&b""[..], b"", b"", b"./", b"././", b"/", OUT]),
            prop::collection::vec(component(), 1..=3),
            prop::sample::select(vec![&b""[..], b"", b"/", b"//"]),
        )
            .prop_map(|(pre, comps, post)| {
                let mut p = pre.to_vec();
                if pre == OUT {
                    p.push(b'/');
                }
                p.extend(comps.join(&b'/'));
                p.extend_from_slice(post);
                p
            }),
        3 => prop::sample::select(vec![&b"."[..], b"./", b"", b"/", b"./."]).prop_map(|s| s.to_vec()),
        1 => Just(OUT.to_vec()),
        // Deep paths: components of up to 255 bytes, 100 to `long_max` bytes in all.
        2 => (100usize..long_max, 1usize..=255).prop_map(|(len, comp)| {
            let mut p = Vec::new();
            while p.len() < len {
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend(std::iter::repeat_n(b'd', comp.min(len - p.len()).max(1)));
            }
            p
        }),
    ]
}

fn enc() -> impl Strategy<Value = Enc> {
    prop_oneof![3 => Just(Enc::Short), 1 => Just(Enc::GnuLong), 1 => Just(Enc::Pax)]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        2 => prop::sample::select(vec![&b"same"[..], b"other\n"]).prop_map(|s| s.to_vec()),
        3 => prop::collection::vec(any::<u8>(), 0..1100),
    ]
}

fn symlink_target() -> impl Strategy<Value = Vec<u8>> {
    let max = 5000;
    prop_oneof![
        6 => prop::sample::select(vec![&b"a"[..], b"b/c", b"../outside", b"/etc", b"\xff", b"."])
            .prop_map(|s| s.to_vec()),
        2 => Just(OUT.to_vec()),
        1 => Just(Vec::new()),
        2 => (101usize..=max).prop_map(|n| vec![b't'; n]),
        1 => Just(vec![b't'; 4095]),
        1 => Just(vec![b't'; 4096]),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    let mut v: Vec<(u32, BoxedStrategy<Kind>)> = vec![
        (30, (data(), prop::sample::select(vec![b'0', b'0', b'\0', b'7'])).prop_map(|(d, t)| Kind::File(d, t)).boxed()),
        (15, Just(Kind::Dir).boxed()),
        (1, data().prop_map(Kind::DirWithData).boxed()),
        (12, (symlink_target(), enc()).prop_map(|(t, e)| Kind::Symlink(t, e)).boxed()),
        (12, (path(), enc()).prop_map(|(t, e)| Kind::Hardlink(t, e)).boxed()),
        (4, prop::sample::select(vec![b'3', b'4', b'6']).prop_map(Kind::Special).boxed()),
        (1, prop::sample::select(vec![b'V', b'M', b'Q', b'N']).prop_map(Kind::Unknown).boxed()),
        (1, Just(Kind::PaxGlobal).boxed()),
        (2, (data(), 0u64..100_000).prop_map(|(d, h)| Kind::GnuSparse(d, h)).boxed()),
    ];
    v.push((2, (data(), 0u64..100_000).prop_map(|(d, h)| Kind::PaxSparse(d, h)).boxed()));
    prop::strategy::Union::new_weighted(v)
}

fn member(g: Gen) -> impl Strategy<Value = Member> {
    let modes = if g.root {
        vec![0o644, 0o755, 0o600, 0o4755, 0o2755, 0o1777, 0o777, 0o700, 0o444, 0o555]
    } else {
        vec![0o644, 0o755, 0o700, 0o1777, 0o777]
    };
    (
        path(),
        enc(),
        kind(),
        prop::sample::select(modes),
        prop::sample::select(vec![0u64, 1, 1_700_000_000, 0o77777777777]),
    )
        .prop_map(|(name, enc, kind, mode, mtime)| Member { name, enc, kind, mode, mtime })
}

/// An ordinary member: names from a small set (so that members meet), files, directories,
/// symlinks and hardlinks that mostly make sense.
fn mild_member(g: Gen) -> impl Strategy<Value = Member> {
    let name = (
        prop::sample::select(vec![&b""[..], b"./"]),
        prop::collection::vec(prop::sample::select(vec![&b"a"[..], b"b", b"c", b"d e", b"\xe9"]), 1..=3),
        prop::sample::select(vec![&b""[..], b"/"]),
    )
        .prop_map(|(pre, comps, post)| [pre.to_vec(), comps.join(&b'/'), post.to_vec()].concat());
    let kind = prop_oneof![
        6 => data().prop_map(|d| Kind::File(d, b'0')),
        3 => Just(Kind::Dir),
        1 => prop::sample::select(vec![&b"a"[..], b"../b", b"/etc/passwd"]).prop_map(|t| Kind::Symlink(t.to_vec(), Enc::Short)),
        1 => prop::sample::select(vec![&b"a"[..], b"b", b"a/b", b"./c"]).prop_map(|t| Kind::Hardlink(t.to_vec(), Enc::Short)),
    ];
    let modes = if g.root { vec![0o644, 0o755, 0o600, 0o4755, 0o555] } else { vec![0o644, 0o755, 0o700] };
    (name, enc(), kind, prop::sample::select(modes), prop::sample::select(vec![0u64, 1_700_000_000]))
        .prop_map(|(name, enc, kind, mode, mtime)| Member { name, enc, kind, mode, mtime })
}

/// Make ordinary members mostly consistent: unique names for non-directories, each directory
/// listed once, hardlinks to an earlier file where there is one.
fn make_sane(v: &mut Vec<Member>) {
    let mut dirs = HashSet::new();
    v.retain(|m| !matches!(m.kind, Kind::Dir) || dirs.insert(normalize(&m.name)));
    let mut files: Vec<Vec<u8>> = Vec::new();
    for (i, m) in v.iter_mut().enumerate() {
        if matches!(m.kind, Kind::Dir) {
            continue;
        }
        let slash = m.name.ends_with(b"/");
        let mut n = m.name.strip_suffix(b"/").unwrap_or(&m.name).to_vec();
        n.extend(format!("-{i}").bytes());
        if slash {
            n.push(b'/');
        }
        m.name = n;
        match &mut m.kind {
            Kind::Hardlink(t, _) if !files.is_empty() => *t = files[i % files.len()].clone(),
            Kind::File(..) => files.push(m.name.clone()),
            _ => {}
        }
    }
}

fn archive(g: Gen) -> impl Strategy<Value = Archive> {
    // Half the archives are ordinary ones with at most one hostile member, so that accepted
    // archives, and hostile members among sane ones, are common.
    let members = prop_oneof![
        prop::collection::vec(member(g), 1..8),
        (prop::collection::vec(mild_member(g), 1..10), prop::option::of(member(g)), any::<prop::sample::Index>())
            .prop_map(|(mut v, hostile, at)| {
                make_sane(&mut v);
                if let Some(h) = hostile {
                    v.insert(at.index(v.len() + 1), h);
                }
                v
            }),
    ];
    (
        members,
        prop_oneof![
            12 => Just(Fault::None),
            2 => (1u16..1000).prop_map(Fault::Truncate),
            1 => any::<usize>().prop_map(Fault::BadChecksum),
            1 => Just(Fault::HugeSize),
        ],
        prop::bool::weighted(0.2),
    )
        .prop_map(|(members, fault, skip_special)| Archive { members, fault, skip_special })
}

// ---- building the bytes ----

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0w$o}", w = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()..].fill(0);
}

fn header(name: &[u8], typeflag: u8, size: u64, mode: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_size(size);
    h.as_old_mut().linkflag = [typeflag];
    h
}

fn push(out: &mut Vec<u8>, h: &mut tar::Header, data: &[u8]) {
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while len != base + len.to_string().len() {
        len = base + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn gnu_long(out: &mut Vec<u8>, typeflag: u8, value: &[u8]) {
    let mut d = value.to_vec();
    d.push(0);
    let mut h = header(b"././@LongLink", typeflag, d.len() as u64, 0o644, 0);
    push(out, &mut h, &d);
}

/// A link member's target and how it is carried.
type LinkOf<'a> = (&'a [u8], Enc);

/// The members as raw tar bytes (with the archive fault applied), and the offset at which each
/// member's last block ends.
fn build(a: &Archive) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    let mut ends = Vec::new();
    let mut headers = Vec::new();
    let last_file = a.members.iter().rposition(|m| matches!(m.kind, Kind::File(..)));
    for (i, m) in a.members.iter().enumerate() {
        let mut pax: Vec<u8> = Vec::new();
        let mut name_field = m.name.clone();
        let name_enc = if m.name.len() > 100 && matches!(m.enc, Enc::Short) { Enc::GnuLong } else { m.enc };
        let (typeflag, mut body, link): (u8, Vec<u8>, Option<LinkOf>) = match &m.kind {
            Kind::File(d, t) => (*t, d.clone(), None),
            Kind::Dir => (b'5', vec![], None),
            Kind::DirWithData(d) => (b'5', d.clone(), None),
            Kind::Symlink(t, e) => (b'2', vec![], Some((t, *e))),
            Kind::Hardlink(t, e) => (b'1', vec![], Some((t, *e))),
            Kind::Special(t) | Kind::Unknown(t) => (*t, vec![], None),
            Kind::PaxGlobal => (b'g', pax_record("comment", b"global"), None),
            Kind::GnuSparse(d, _) => (b'S', d.clone(), None),
            Kind::PaxSparse(d, hole) => {
                pax.extend(pax_record("GNU.sparse.major", b"1"));
                pax.extend(pax_record("GNU.sparse.minor", b"0"));
                pax.extend(pax_record("GNU.sparse.name", &m.name));
                pax.extend(pax_record("GNU.sparse.realsize", (d.len() as u64 + hole).to_string().as_bytes()));
                name_field = b"GNUSparseFile.0/".to_vec();
                name_field.extend(m.name.iter().take(80));
                let mut map = format!("1\n0\n{}\n", d.len()).into_bytes();
                map.resize(512, 0);
                map.extend_from_slice(d);
                (b'0', map, None)
            }
        };
        if !matches!(m.kind, Kind::PaxSparse(..)) {
            match name_enc {
                Enc::Short => {}
                Enc::GnuLong => gnu_long(&mut out, b'L', &m.name),
                Enc::Pax => {
                    pax.extend(pax_record("path", &m.name));
                    name_field = b"pax-decoy-name".to_vec();
                }
            }
        }
        let mut link_field: Vec<u8> = Vec::new();
        if let Some((target, e)) = link {
            let e = if target.len() > 100 && matches!(e, Enc::Short) { Enc::GnuLong } else { e };
            match e {
                Enc::Short => link_field = target.to_vec(),
                Enc::GnuLong => gnu_long(&mut out, b'K', target),
                Enc::Pax => {
                    pax.extend(pax_record("linkpath", target));
                    link_field = b"pax-decoy-link".to_vec();
                }
            }
        }
        if !pax.is_empty() {
            let mut h = header(b"./PaxHeaders/x", b'x', pax.len() as u64, 0o644, 0);
            push(&mut out, &mut h, &pax);
        }
        let mut size = body.len() as u64;
        let huge = matches!(a.fault, Fault::HugeSize) && Some(i) == last_file;
        if huge {
            size = 1 << 40;
        }
        let mut h = header(&name_field, typeflag, size, m.mode, m.mtime);
        h.as_old_mut().linkname[..link_field.len()].copy_from_slice(&link_field);
        if let Kind::GnuSparse(d, hole) = &m.kind {
            let gnu = h.as_gnu_mut().unwrap();
            octal(&mut gnu.sparse[0].offset, 0);
            octal(&mut gnu.sparse[0].numbytes, d.len() as u64);
            octal(&mut gnu.realsize, d.len() as u64 + hole);
        }
        headers.push(out.len());
        if huge {
            // The data runs to the end of the stream: no padding, no end blocks.
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.append(&mut body);
            ends.push(usize::MAX);
            return (out, ends);
        }
        push(&mut out, &mut h, &body);
        ends.push(out.len());
    }
    out.extend_from_slice(&[0; 1024]);
    match a.fault {
        Fault::Truncate(per_mille) => out.truncate(out.len() * per_mille as usize / 1000),
        Fault::BadChecksum(n) => {
            let at = headers[n % headers.len()] + 148;
            out[at] = if out[at] == b'1' { b'2' } else { b'1' };
        }
        _ => {}
    }
    (out, ends)
}

// ---- what the archive means ----

/// A node of the expected tree.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Want {
    Dir { mode: u32, mtime: u64 },
    File { mode: u32, mtime: u64, data: Vec<u8> },
    Symlink { mtime: u64, target: Vec<u8> },
}

type Tree = BTreeMap<Vec<u8>, Want>;

/// docs/format.md, "Tar ingest": `./` prefixes and trailing `/` removed, then the manifest
/// path rules. `Ok(empty)` is the root.
fn normalize(raw: &[u8]) -> Option<Vec<u8>> {
    let mut p = raw;
    while let Some(r) = p.strip_prefix(b"./") {
        p = r;
    }
    while let Some(r) = p.strip_suffix(b"/") {
        p = r;
    }
    if p.is_empty() || p == b"." {
        return Some(Vec::new());
    }
    if p.len() > 4096 || p[0] == b'/' {
        return None;
    }
    for c in p.split(|&b| b == b'/') {
        if c.is_empty() || c == b"." || c == b".." || c.len() > 255 {
            return None;
        }
    }
    Some(p.to_vec())
}

fn parent(p: &[u8]) -> &[u8] {
    p.iter().rposition(|&b| b == b'/').map(|i| &p[..i]).unwrap_or(b"")
}

#[derive(Default)]
struct Model {
    tree: Tree,
    implicit: HashSet<Vec<u8>>,
}

impl Model {
    fn insert(&mut self, path: Vec<u8>, want: Want) -> Result<(), ()> {
        let is_dir = matches!(want, Want::Dir { .. });
        if self.tree.contains_key(&path) && !(is_dir && self.implicit.contains(&path)) {
            return Err(()); // duplicate
        }
        let mut p: &[u8] = &path;
        while !p.is_empty() {
            p = parent(p);
            if let Some(w) = self.tree.get(p) {
                if !matches!(w, Want::Dir { .. }) {
                    return Err(()); // below a file or symlink
                }
                break;
            }
        }
        if !path.is_empty() {
            let par = parent(&path).to_vec();
            if !self.tree.contains_key(&par) {
                self.insert(par.clone(), Want::Dir { mode: 0o755, mtime: 0 })?;
                self.implicit.insert(par);
            }
        }
        self.implicit.remove(&path);
        self.tree.insert(path, want);
        Ok(())
    }
}

/// The tree `members` mean, or `None` when the archive must be refused as bad input.
fn meaning(members: &[Member], skip_special: bool) -> Option<Tree> {
    let mut m = Model::default();
    for mem in members {
        if matches!(mem.kind, Kind::PaxGlobal) {
            continue;
        }
        let mode = mem.mode & 0o7777;
        let mtime = mem.mtime;
        let path = normalize(&mem.name)?;
        let pax_newline = |e: &Enc, v: &[u8]| matches!(e, Enc::Pax) && v.contains(&b'\n');
        if pax_newline(&mem.enc, &mem.name) {
            return None;
        }
        if let Kind::Symlink(t, e) | Kind::Hardlink(t, e) = &mem.kind {
            if pax_newline(e, t) {
                return None;
            }
        }
        let want = match &mem.kind {
            Kind::File(d, _) => Want::File { mode, mtime, data: d.clone() },
            Kind::Dir | Kind::DirWithData(_) => Want::Dir { mode, mtime },
            Kind::Symlink(t, _) => {
                if t.is_empty() || t.len() > 4095 {
                    return None;
                }
                Want::Symlink { mtime, target: t.clone() }
            }
            Kind::Hardlink(t, _) => match m.tree.get(&normalize(t)?) {
                Some(Want::File { data, .. }) => Want::File { mode, mtime, data: data.clone() },
                _ => return None,
            },
            // A special file is skipped, unless it would be the top of the tree, which must be
            // a directory (docs/format.md, "Tar ingest").
            Kind::Special(_) if skip_special && !path.is_empty() => continue,
            Kind::Special(_) | Kind::Unknown(_) => return None,
            Kind::PaxGlobal => unreachable!(),
            // Sparse members are refused (or supported exactly: see `acceptable`).
            Kind::GnuSparse(..) | Kind::PaxSparse(..) => return None,
        };
        m.insert(path, want).ok()?;
    }
    match m.tree.get(&Vec::new()) {
        None => {
            m.tree.insert(Vec::new(), Want::Dir { mode: 0o755, mtime: 0 });
        }
        Some(Want::Dir { .. }) => {}
        Some(_) => return None, // the root is not a directory
    }
    Some(m.tree)
}

/// Every tree an ingest may produce (an empty list: it must refuse). A truncated archive may
/// also be read as the members before the cut (a stream cut at a member boundary looks like an
/// archive without its end blocks); a sparse member may also be supported exactly.
fn acceptable(a: &Archive, ends: &[usize], len: usize) -> Vec<Tree> {
    let mut out = Vec::new();
    match a.fault {
        Fault::None => out.extend(meaning(&a.members, a.skip_special)),
        Fault::Truncate(_) => {
            let n = ends.iter().take_while(|&&e| e <= len).count();
            out.extend(meaning(&a.members[..n], a.skip_special));
        }
        // Without a regular file there is nothing to declare huge: the archive is whole.
        Fault::HugeSize if !a.members.iter().any(|m| matches!(m.kind, Kind::File(..))) => {
            out.extend(meaning(&a.members, a.skip_special))
        }
        Fault::BadChecksum(_) | Fault::HugeSize => {}
    }
    if matches!(a.fault, Fault::None)
        && a.members.iter().any(|m| matches!(m.kind, Kind::GnuSparse(..) | Kind::PaxSparse(..)))
    {
        let expanded: Vec<Member> = a
            .members
            .iter()
            .map(|m| match &m.kind {
                Kind::GnuSparse(d, hole) | Kind::PaxSparse(d, hole) => {
                    let mut full = d.clone();
                    full.resize(d.len() + *hole as usize, 0);
                    Member { kind: Kind::File(full, b'0'), ..m.clone() }
                }
                _ => m.clone(),
            })
            .collect();
        out.extend(meaning(&expanded, a.skip_special));
    }
    out
}

/// Replace the sentinel placeholder by its path, everywhere.
fn substitute(a: &Archive, sentinel: &[u8]) -> Archive {
    let sub = |v: &Vec<u8>| -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < v.len() {
            if v[i..].starts_with(OUT) {
                out.extend_from_slice(sentinel);
                i += OUT.len();
            } else {
                out.push(v[i]);
                i += 1;
            }
        }
        out
    };
    let mut a = a.clone();
    for m in &mut a.members {
        m.name = sub(&m.name);
        match &mut m.kind {
            Kind::Symlink(t, _) | Kind::Hardlink(t, _) => *t = sub(t),
            _ => {}
        }
    }
    a
}

// ---- reading the checkout ----

/// The tree at `dir`, read through directory handles: generated paths come close to the
/// kernel's 4095-byte path limit, which the checkout's own prefix would push over.
fn read_tree(dir: &Path) -> Tree {
    use rustix::fs::{openat, readlinkat, statat, AtFlags, Dir, FileType, Mode, OFlags};
    use std::os::fd::OwnedFd;
    fn walk(fd: &OwnedFd, rel: &[u8], t: &mut Tree) {
        let mut d = Dir::read_from(fd).unwrap();
        while let Some(e) = d.read() {
            let e = e.unwrap();
            let name = e.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            let mut r = rel.to_vec();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(name.to_bytes());
            let st = statat(fd, name, AtFlags::SYMLINK_NOFOLLOW).unwrap();
            let mode = st.st_mode & 0o7777;
            let mtime = st.st_mtime as u64;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Symlink => {
                    let target = readlinkat(fd, name, Vec::new()).unwrap().into_bytes();
                    t.insert(r, Want::Symlink { mtime, target });
                }
                FileType::Directory => {
                    t.insert(r.clone(), Want::Dir { mode, mtime });
                    let sub =
                        openat(fd, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW, Mode::empty()).unwrap();
                    walk(&sub, &r, t);
                }
                FileType::RegularFile => {
                    let f = openat(fd, name, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty()).unwrap();
                    let mut data = Vec::new();
                    std::io::Read::read_to_end(&mut std::fs::File::from(f), &mut data).unwrap();
                    t.insert(r, Want::File { mode, mtime, data });
                }
                other => panic!("{}: {other:?} is neither file, dir nor symlink", String::from_utf8_lossy(&r)),
            }
        }
    }
    let mut t = Tree::new();
    let md = std::fs::metadata(dir).unwrap();
    t.insert(Vec::new(), Want::Dir { mode: md.permissions().mode() & 0o7777, mtime: md.mtime() as u64 });
    let top = std::fs::File::open(dir).unwrap();
    walk(&OwnedFd::from(top), b"", &mut t);
    t
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// One archive through the library: classify the outcome and check the store and the outside.
fn check(
    a: &Archive,
    work: &Path,
    sentinel: &Path,
    tally: &mut BTreeMap<&'static str, u64>,
) -> Result<(), TestCaseError> {
    let a = substitute(a, sentinel.as_os_str().as_bytes());
    let (bytes, ends) = build(&a);
    let want = acceptable(&a, &ends, bytes.len());
    let case = tempfile::Builder::new().prefix("case-").tempdir_in(work).unwrap();
    let store = Store::open(case.path().join("store")).unwrap();
    let opts = IngestOptions { skip_special: a.skip_special, ..Default::default() };
    let got = store.ingest_tar(&bytes[..], "hostile.tar", &opts, &NoProgress);
    let out = case.path().join("out");
    match &got {
        Ok(report) => {
            store
                .checkout(&report.id, &out)
                .map_err(|e| TestCaseError::fail(format!("accepted, but checkout fails: {e}")))?;
            let tree = read_tree(&out);
            prop_assert!(
                want.contains(&tree),
                "accepted, but the checkout is not what the archive means\ngot:  {tree:?}\nwant one of: {want:?}"
            );
            *tally.entry("ingested").or_default() += 1;
        }
        Err(Error::BadInput(_)) => {
            prop_assert!(
                want.is_empty() || matches!(a.fault, Fault::Truncate(_)) || has_sparse(&a),
                "refused as bad input, but the archive means {want:?}: {got:?}"
            );
            prop_assert!(store.list_snapshots().unwrap().is_empty(), "a refused archive left a snapshot");
            *tally.entry("refused").or_default() += 1;
        }
        Err(e) => prop_assert!(false, "neither ingested nor refused as bad input: {e:?} (code {})", e.exit_code()),
    }
    let v = store.verify(false).unwrap();
    prop_assert!(v.ok, "the store is not verify-clean: {}", serde_json::to_string(&v).unwrap());
    prop_assert!(names(&store.tmp_dir()).is_empty(), "a lease was left: {:?}", names(&store.tmp_dir()));
    prop_assert!(names(sentinel).is_empty(), "written outside the store: {:?}", names(sentinel));
    let mut expect = vec!["store".to_string()];
    if got.is_ok() {
        expect.insert(0, "out".into());
    }
    prop_assert_eq!(names(case.path()), expect, "something was written beside the store");
    Ok(())
}

fn has_sparse(a: &Archive) -> bool {
    a.members.iter().any(|m| matches!(m.kind, Kind::GnuSparse(..) | Kind::PaxSparse(..)))
}

#[test]
fn hostile_archives_are_ingested_exactly_or_refused_as_bad_input() {
    // Paths of ~2,000 components make the model and proptest's shrinking recurse deeply.
    let run = std::thread::Builder::new().stack_size(256 << 20).spawn(hostile_archives).unwrap();
    if let Err(panic) = run.join() {
        std::panic::resume_unwind(panic);
    }
}

fn hostile_archives() {
    let cases: u32 = std::env::var("EXECROOT_SUITE_TARS").ok().map(|v| v.parse().unwrap()).unwrap_or(4000);
    let g = Gen { root: common::is_root() };
    // A tmpfs when there is one: each accepted archive syncs the filesystem once.
    let base = ["/dev/shm"].into_iter().map(PathBuf::from).find(|p| p.is_dir()).unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new().prefix("execroot-hostile-").tempdir_in(base).unwrap();
    let sentinel = work.path().join("outside");
    std::fs::create_dir(&sentinel).unwrap();
    let mut config = Config { cases, failure_persistence: None, ..Config::default() };
    config.max_shrink_iters = 2000;
    let started = std::time::Instant::now();
    let mut runner = TestRunner::new(config);
    let tally = std::cell::RefCell::new(BTreeMap::new());
    let result = runner.run(&archive(g), |a| check(&a, work.path(), &sentinel, &mut tally.borrow_mut()));
    let line = format!("hostile tar: cases={cases} {:?} {:.1}s", tally.borrow(), started.elapsed().as_secs_f64());
    println!("{line}");
    eprintln!("{line}");
    if let Err(e) = result {
        panic!("{line}\n{e}");
    }
}
