//! Workload fixtures: declarative shapes (fixtures/shapes/*.toml) and a deterministic, seeded
//! generator that turns a shape into a tree. The same shape, seed and scale always give the
//! same tree, byte for byte, mtimes included, so the same snapshot id.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use execroot::error::{Error, IoContext, Result};

/// One bucket of the file size distribution: sizes uniform in `[min, max)`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SizeBucket {
    /// Relative weight of this bucket.
    pub weight: f64,
    /// Smallest size, inclusive.
    pub min: u64,
    /// Largest size, exclusive.
    pub max: u64,
}

/// The shape of a workload tree.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Shape {
    /// Short name.
    pub name: String,
    /// One line saying what it models.
    #[serde(default)]
    pub description: String,
    /// Number of regular files.
    pub files: u64,
    /// Number of directories besides the root.
    pub dirs: u64,
    /// Symlinks as a share of files (a symlink points at a generated file, relatively).
    pub symlink_share: f64,
    /// Share of files with the executable bits.
    pub executable_share: f64,
    /// Share of files whose content repeats an earlier file's content.
    pub duplicate_share: f64,
    /// Deepest directory level (the root's children are level 1).
    pub max_depth: u32,
    /// File size distribution.
    pub sizes: Vec<SizeBucket>,
}

const BUILTIN: &[(&str, &str)] = &[
    ("node-modules", include_str!("../fixtures/shapes/node-modules.toml")),
    ("small", include_str!("../fixtures/shapes/small.toml")),
];

/// The mtime every generated entry gets, plus its index in seconds.
const EPOCH: i64 = 1_700_000_000;

impl Shape {
    /// Names of the shapes built into the binary.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// A built-in shape by name, or a shape file by path.
    pub fn load(name_or_path: &str) -> Result<Shape> {
        let text = match BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            Some((_, t)) => t.to_string(),
            None => std::fs::read_to_string(name_or_path).map_err(|e| {
                Error::BadInput(format!(
                    "{name_or_path}: not a built-in shape ({}) nor a readable shape file: {e}",
                    Self::builtin_names().join(", ")
                ))
            })?,
        };
        let shape: Shape =
            toml::from_str(&text).map_err(|e| Error::BadInput(format!("{name_or_path}: invalid shape: {e}")))?;
        if shape.sizes.is_empty() || shape.sizes.iter().any(|b| b.max <= b.min || b.weight < 0.0) {
            return Err(Error::BadInput(format!("{name_or_path}: size buckets need max > min and weight >= 0")));
        }
        Ok(shape)
    }

    /// The same shape with `factor` times as many files and directories.
    pub fn scaled(&self, factor: f64) -> Shape {
        let mut s = self.clone();
        s.files = ((s.files as f64) * factor).round().max(1.0) as u64;
        s.dirs = ((s.dirs as f64) * factor).round() as u64;
        if factor != 1.0 {
            s.name = format!("{}x{factor}", s.name);
        }
        s
    }
}

/// What the generator wrote.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenReport {
    /// Shape name (with scale).
    pub shape: String,
    /// Seed used.
    pub seed: u64,
    /// Entries written, the root included.
    pub entries: u64,
    /// Regular files.
    pub files: u64,
    /// Directories, the root included.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Total bytes of regular files.
    pub bytes: u64,
}

const SYLLABLES: &[&str] =
    &["lo", "da", "sh", "re", "act", "ba", "bel", "core", "js", "es", "util", "type", "vite", "web", "pack", "ts"];
const EXTENSIONS: &[&str] = &[".js", ".js", ".js", ".json", ".md", ".d.ts", ".map", ".cjs", ".mjs", ""];

fn word(rng: &mut ChaCha8Rng) -> String {
    let n = rng.gen_range(1..=3);
    (0..n).map(|_| SYLLABLES[rng.gen_range(0..SYLLABLES.len())]).collect()
}

/// Generate `shape` with `seed` into `dest`, which must not exist or be empty.
pub fn generate(shape: &Shape, seed: u64, dest: &Path) -> Result<GenReport> {
    if dest.exists() && std::fs::read_dir(dest).at(dest)?.next().is_some() {
        return Err(Error::Conflict(format!("{}: directory is not empty", dest.display())));
    }
    std::fs::create_dir_all(dest).at(dest)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut report = GenReport { shape: shape.name.clone(), seed, dirs: 1, ..GenReport::default() };

    // Directories: (relative path, depth). Index 0 is the root.
    let mut dirs: Vec<(PathBuf, u32)> = vec![(PathBuf::new(), 0)];
    for i in 0..shape.dirs {
        let (parent, depth) = loop {
            let c = &dirs[rng.gen_range(0..dirs.len())];
            if c.1 < shape.max_depth {
                break c.clone();
            }
        };
        let rel = parent.join(format!("{}-{i}", word(&mut rng)));
        std::fs::create_dir(dest.join(&rel)).at(dest.join(&rel))?;
        dirs.push((rel, depth + 1));
        report.dirs += 1;
    }

    let total_weight: f64 = shape.sizes.iter().map(|b| b.weight).sum();
    let mut contents: Vec<(u64, u64)> = Vec::new(); // (content seed, size) of files so far
    let mut files: Vec<PathBuf> = Vec::new();
    let mut buf = Vec::new();
    for i in 0..shape.files {
        let dir = &dirs[rng.gen_range(0..dirs.len())].0;
        let ext = EXTENSIONS[rng.gen_range(0..EXTENSIONS.len())];
        let rel = dir.join(format!("{}-{i}{ext}", word(&mut rng)));
        let (cseed, size) = if !contents.is_empty() && rng.gen_bool(shape.duplicate_share.clamp(0.0, 1.0)) {
            contents[rng.gen_range(0..contents.len())]
        } else {
            let mut pick = rng.gen_range(0.0..total_weight.max(f64::MIN_POSITIVE));
            let bucket = shape
                .sizes
                .iter()
                .find(|b| {
                    pick -= b.weight;
                    pick < 0.0
                })
                .unwrap_or(&shape.sizes[shape.sizes.len() - 1]);
            (rng.next_u64(), rng.gen_range(bucket.min..bucket.max))
        };
        contents.push((cseed, size));
        buf.resize(size as usize, 0);
        ChaCha8Rng::seed_from_u64(cseed).fill_bytes(&mut buf);
        let exec = rng.gen_bool(shape.executable_share.clamp(0.0, 1.0));
        let path = dest.join(&rel);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if exec { 0o755 } else { 0o644 })
            .open(&path)
            .at(&path)?;
        f.write_all(&buf).at(&path)?;
        // The umask may have cleared bits; the shape's mode is what counts.
        f.set_permissions(std::fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 })).at(&path)?;
        drop(f);
        execroot::store::set_mtime(&path, EPOCH + i as i64, 0)?;
        files.push(rel);
        report.files += 1;
        report.bytes += size;
    }

    let symlinks = (shape.files as f64 * shape.symlink_share).round() as u64;
    for i in 0..symlinks {
        if files.is_empty() {
            break;
        }
        let (dir, depth) = &dirs[rng.gen_range(0..dirs.len())];
        let target_file = &files[rng.gen_range(0..files.len())];
        let mut target = PathBuf::new();
        for _ in 0..*depth {
            target.push("..");
        }
        target.push(target_file);
        let rel = dir.join(format!("link-{i}"));
        let path = dest.join(&rel);
        std::os::unix::fs::symlink(&target, &path).at(&path)?;
        execroot::store::set_mtime(&path, EPOCH, 0)?;
        report.symlinks += 1;
    }

    // Directory mtimes last, deepest first, so writing children does not disturb them.
    for (rel, _) in dirs.iter().rev() {
        let path = if rel.as_os_str().is_empty() { dest.to_path_buf() } else { dest.join(rel) };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).at(&path)?;
        execroot::store::set_mtime(&path, EPOCH, 0)?;
    }
    report.entries = report.files + report.dirs + report.symlinks;
    Ok(report)
}

/// Convenience for callers holding a name: generate a built-in or file shape, scaled.
pub fn generate_named(name: &str, scale: f64, seed: u64, dest: &Path) -> Result<GenReport> {
    let shape = Shape::load(name)?.scaled(scale);
    generate(&shape, seed, dest)
}

/// Compare two trees entry by entry (kind, permission bits, content, symlink target, and the
/// mtimes of files and symlinks, plus directories when `dir_mtimes`). Returns one line per
/// difference; empty when equal. Used by `execroot demo` and the tests.
pub fn compare_trees(a: &Path, b: &Path, dir_mtimes: bool) -> Result<Vec<String>> {
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;
    fn scan(root: &Path) -> Result<BTreeMap<PathBuf, std::fs::Metadata>> {
        let mut out = BTreeMap::new();
        for item in walkdir::WalkDir::new(root).follow_links(false) {
            let item = item.map_err(|e| Error::BadInput(format!("{}: {e}", root.display())))?;
            let rel = item.path().strip_prefix(root).expect("under root").to_path_buf();
            out.insert(rel, std::fs::symlink_metadata(item.path()).at(item.path())?);
        }
        Ok(out)
    }
    let (ta, tb) = (scan(a)?, scan(b)?);
    let mut diffs = Vec::new();
    for (rel, ma) in &ta {
        let Some(mb) = tb.get(rel) else {
            diffs.push(format!("{}: only in {}", rel.display(), a.display()));
            continue;
        };
        let (fa, fb) = (ma.file_type(), mb.file_type());
        if fa.is_dir() != fb.is_dir() || fa.is_file() != fb.is_file() || fa.is_symlink() != fb.is_symlink() {
            diffs.push(format!("{}: kind differs", rel.display()));
            continue;
        }
        if !fa.is_symlink() && ma.mode() & 0o7777 != mb.mode() & 0o7777 {
            diffs.push(format!("{}: mode {:o} vs {:o}", rel.display(), ma.mode() & 0o7777, mb.mode() & 0o7777));
        }
        if (!fa.is_dir() || dir_mtimes) && (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
            diffs.push(format!("{}: mtime differs", rel.display()));
        }
        if fa.is_file() && std::fs::read(a.join(rel)).at(a.join(rel))? != std::fs::read(b.join(rel)).at(b.join(rel))? {
            diffs.push(format!("{}: content differs", rel.display()));
        }
        if fa.is_symlink() && std::fs::read_link(a.join(rel)).ok() != std::fs::read_link(b.join(rel)).ok() {
            diffs.push(format!("{}: symlink target differs", rel.display()));
        }
    }
    for rel in tb.keys().filter(|k| !ta.contains_key(*k)) {
        diffs.push(format!("{}: only in {}", rel.display(), b.display()));
    }
    Ok(diffs)
}
