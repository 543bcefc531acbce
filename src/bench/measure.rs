//! Measurement primitives of `execroot bench`: percentiles, and what a root adds to the disk.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

/// Median and 95th percentile of a sample, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Stats {
    /// Median (nearest rank).
    pub p50: f64,
    /// 95th percentile (nearest rank).
    pub p95: f64,
}

impl Stats {
    /// Percentiles by nearest rank; zeros for an empty sample.
    pub fn of(samples: &[f64]) -> Stats {
        if samples.is_empty() {
            return Stats::default();
        }
        let mut v = samples.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Stats { p50: rank(0.50), p95: rank(0.95) }
    }
}

/// Bytes allocated and inodes used by the files below some paths.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Disk {
    /// Allocated bytes (`st_blocks` x 512), each inode counted once.
    pub bytes: u64,
    /// Inodes, each counted once.
    pub inodes: u64,
}

/// The inodes below `dir` (device, inode): what a base tree already owns.
pub fn inode_set(dir: &Path) -> HashSet<(u64, u64)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| (m.dev(), m.ino()))
        .collect()
}

/// What the trees at `paths` add to the disk: every inode below them (the roots included), once,
/// except those in `shared` (inodes that existed before, such as a hardlink farm's files or a
/// layer's). Does not cross into other filesystems (mounts).
pub fn disk_added(paths: &[&Path], shared: &HashSet<(u64, u64)>) -> Disk {
    let mut seen = HashSet::new();
    let mut d = Disk::default();
    for p in paths {
        for e in walkdir::WalkDir::new(p).same_file_system(true).into_iter().flatten() {
            let Ok(m) = e.metadata() else { continue };
            let id = (m.dev(), m.ino());
            if shared.contains(&id) || !seen.insert(id) {
                continue;
            }
            d.inodes += 1;
            d.bytes += m.blocks() * 512;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn percentiles_by_nearest_rank() {
        let s = Stats::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(s, Stats { p50: 3.0, p95: 5.0 });
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(Stats::of(&v), Stats { p50: 50.0, p95: 95.0 });
        assert_eq!(Stats::of(&[]), Stats::default());
    }

    #[test]
    fn disk_added_counts_each_inode_once_and_skips_shared_ones() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("base");
        std::fs::create_dir_all(base.join("sub")).unwrap();
        std::fs::write(base.join("a"), vec![1u8; 10_000]).unwrap();
        std::fs::write(base.join("sub/b"), vec![2u8; 5_000]).unwrap();
        let stat = |p: &Path| std::fs::symlink_metadata(p).unwrap();
        let expect: u64 = [base.clone(), base.join("sub"), base.join("a"), base.join("sub/b")]
            .iter()
            .map(|p| stat(p).blocks() * 512)
            .sum();
        let got = disk_added(&[&base], &HashSet::new());
        assert_eq!(got, Disk { bytes: expect, inodes: 4 });
        // A hardlink is one inode; counting the same tree twice changes nothing.
        std::fs::hard_link(base.join("a"), base.join("a-link")).unwrap();
        assert_eq!(disk_added(&[&base, &base], &HashSet::new()).inodes, 4);
        // A hardlink farm of the base adds only its directories.
        let farm = d.path().join("farm");
        assert!(std::process::Command::new("cp").arg("-al").arg(&base).arg(&farm).status().unwrap().success());
        let farm_cost = disk_added(&[&farm], &inode_set(&base));
        assert_eq!(farm_cost.inodes, 2);
        assert_eq!(farm_cost.bytes, stat(&farm).blocks() * 512 + stat(&farm.join("sub")).blocks() * 512);
    }
}
