//! Presenting bench results: the terminal table, the markdown report and the SVG chart.

use indicatif::HumanBytes;
use std::fmt::Write;

use super::{BenchReport, ClassResult};

fn human_ms(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} s", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.2} ms")
    }
}

/// One line per class and backend.
pub fn table(r: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<10} {:<19} {:<7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>12}",
        "class", "backend", "correct", "create p50", "ready p50", "run", "destroy", "disk/root", "inodes", "N alive"
    );
    for c in &r.classes {
        for b in &c.backends {
            if !b.available {
                let _ = writeln!(
                    s,
                    "{:<10} {:<19} {}",
                    c.class.to_string(),
                    b.backend,
                    b.reason.as_deref().unwrap_or("unavailable")
                );
                continue;
            }
            let _ = writeln!(
                s,
                "{:<10} {:<19} {:<7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>12}",
                c.class.to_string(),
                b.backend,
                if b.correct { "yes" } else { "NO" },
                human_ms(b.create_ms.p50),
                human_ms(b.ready_ms.p50),
                b.run_ms.map(human_ms).unwrap_or_else(|| "-".into()),
                human_ms(b.destroy_ms.p50),
                HumanBytes(b.bytes_per_root),
                b.inodes_per_root,
                format!("{}{}", human_ms(b.concurrent.total_ms), if b.concurrent.extrapolated { "*" } else { "" }),
            );
        }
        let _ = writeln!(
            s,
            "  => {}: {}",
            if c.verdict.benefits { "BENEFITS" } else { "stays on worktrees" },
            c.verdict.reason
        );
    }
    s.push_str("(* measured at a smaller N and extrapolated linearly)\n");
    s
}

fn class_table(c: &ClassResult, s: &mut String) {
    let _ = writeln!(s, "| backend | correct | create p50 / p95 | ready p50 / p95 | run step | destroy p50 / p95 | disk per root | inodes per root | {} alive: create total, disk | one-time | break-even runs |", c.backends.iter().map(|b| b.concurrent.n).max().unwrap_or(0));
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for b in &c.backends {
        if !b.available {
            let _ =
                writeln!(s, "| {} | {} | | | | | | | | | |", b.backend, b.reason.as_deref().unwrap_or("unavailable"));
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} / {} | {} / {} | {} | {} / {} | {} | {} | {}, {}{} | {} | {} |",
            b.backend,
            if b.correct { "yes".to_string() } else { format!("**no**: {}", b.reason.as_deref().unwrap_or("")) },
            human_ms(b.create_ms.p50),
            human_ms(b.create_ms.p95),
            human_ms(b.ready_ms.p50),
            human_ms(b.ready_ms.p95),
            b.run_ms.map(human_ms).unwrap_or_else(|| "n/a".into()),
            human_ms(b.destroy_ms.p50),
            human_ms(b.destroy_ms.p95),
            HumanBytes(b.bytes_per_root),
            b.inodes_per_root,
            human_ms(b.concurrent.total_ms),
            HumanBytes(b.concurrent.bytes),
            if b.concurrent.extrapolated { " (extrapolated)" } else { "" },
            human_ms(b.one_time_ms),
            b.break_even_runs.map(|n| n.to_string()).unwrap_or_else(|| "never".into()),
        );
    }
}

/// The git ways' own figures (repo-edit): time-to-ready is `git status` clean and usable.
fn git_table(c: &ClassResult, s: &mut String) {
    let rows: Vec<_> = c.backends.iter().filter_map(|b| Some((b, b.git.as_ref()?))).collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(s, "Time-to-ready of the git ways is the create plus a first `git status` that is clean. A row \"with fsmonitor\" is the same roots of a repository whose `extensions.worktreeConfig` is on, where each gets execroot's fsmonitor (docs/roots.md).\n");
    let _ = writeln!(s, "| backend | ready p50 (warm) | first root of the commit | ready at a new commit p50 / p95 | first `git status` p50 | index | disk per untouched root besides the index | destroy of an untouched root p50 / p95 |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for (b, g) in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            b.backend,
            human_ms(b.ready_ms.p50),
            g.cold_ready_ms.map(human_ms).unwrap_or_else(|| "n/a".into()),
            g.new_commit_ready_ms
                .map(|n| format!("{} / {} ({} files changed)", human_ms(n.p50), human_ms(n.p95), g.new_commit_files))
                .unwrap_or_else(|| "n/a".into()),
            human_ms(g.first_status_ms.p50),
            HumanBytes(g.index_bytes),
            HumanBytes(g.bytes_besides_index),
            human_ms(g.destroy_untouched_ms.p50),
            human_ms(g.destroy_untouched_ms.p95),
        );
        if let Some(f) = &g.fsmonitor {
            let _ = writeln!(
                s,
                "| {} with fsmonitor | {} | | {} / {} ({} files changed) | {} | | | |",
                b.backend,
                human_ms(f.ready_ms.p50),
                human_ms(f.new_commit_ready_ms.p50),
                human_ms(f.new_commit_ready_ms.p95),
                g.new_commit_files,
                human_ms(f.first_status_ms.p50),
            );
        }
    }
    s.push('\n');
}

/// The provision path's own figures (preview with `--provision`).
fn provision_lines(c: &ClassResult, s: &mut String) {
    for b in &c.backends {
        let Some(p) = &b.provision else { continue };
        let _ = writeln!(
            s,
            "`{}` (`root create --class preview --provision {:?} --provision-inputs {}`): first create {} ({}), then every create {} (ready p50 {}, disk per root {}).\n",
            b.backend,
            p.command,
            p.inputs.join(","),
            human_ms(p.miss_ms),
            if p.first_was_miss { "a miss: root, command, commit" } else { "a hit: the store already held the layer" },
            if p.all_hits { "a hit" } else { "**not always a hit**" },
            human_ms(b.ready_ms.p50),
            HumanBytes(b.bytes_per_root),
        );
    }
}

/// The markdown report.
pub fn markdown(r: &BenchReport, command: &str) -> String {
    let m = &r.machine;
    let mut s = String::new();
    let _ = writeln!(s, "# execroot bench: workload classes\n");
    let _ = writeln!(s, "Command: `{command}`  ");
    let _ = writeln!(s, "Date: {}  ", m.date);
    let _ = writeln!(
        s,
        "Machine: {} ({} cores), kernel {}, store on {}, {}  ",
        m.cpu,
        m.cores,
        m.kernel,
        m.filesystem,
        if m.root { "as root" } else { "not root" }
    );
    let _ = writeln!(
        s,
        "Versions: execroot {}, {}{}  ",
        m.execroot,
        m.git,
        m.ostree.as_ref().map(|o| format!(", ostree {o}")).unwrap_or_default()
    );
    let _ = writeln!(s, "Runs per backend: {} ({}); medians and 95th percentiles of those runs. Every ratio below compares numbers measured in this same run.\n", r.runs, if r.quick { "--quick" } else { "full" });
    let _ = writeln!(s, "## Verdicts\n");
    let _ = writeln!(
        s,
        "Rule: a class **benefits** when a snapshot-backed backend (overlay, or copy for callers without root) passes every correctness check and its time-to-ready is at least {:.0}x better **and** its disk per root at least {:.0}x smaller than the worktree baseline (for previews: a worktree whose dependencies are provisioned, or copied). Repo-edit needs branch semantics: it is judged by git-overlay (a real git worktree on its own branch whose files are an overlay) against the plain worktree, by the same thresholds, and its row also states issue 11's targets.\n",
        r.thresholds.ready_ratio, r.thresholds.disk_ratio
    );
    let _ = writeln!(s, "| class | verdict | why |\n|---|---|---|");
    for c in &r.classes {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            c.class,
            if c.verdict.benefits { "**benefits**" } else { "stays on worktrees" },
            c.verdict.reason
        );
    }
    let go = r.classes.iter().any(|c| c.verdict.benefits);
    let _ = writeln!(
        s,
        "\n**Go/no-go: {}.** {}\n",
        if go { "go" } else { "no-go" },
        if go {
            let list: Vec<String> =
                r.classes.iter().filter(|c| c.verdict.benefits).map(|c| c.class.to_string()).collect();
            format!("Snapshot-backed roots for: {}; the other classes stay on git worktrees.", list.join(", "))
        } else {
            "No class clears the thresholds in this run.".to_string()
        }
    );
    let o = &r.one_time;
    let _ = writeln!(s, "## One-time costs\n");
    let _ = writeln!(s, "| step | time |\n|---|---|");
    let _ = writeln!(
        s,
        "| ingest the project ({} entries, `git archive HEAD \\| execroot snapshot create --tar -`) | {} |",
        o.project_entries,
        human_ms(o.ingest_ms)
    );
    let _ = writeln!(s, "| ingest the dependencies ({} entries) | {} |", o.deps_entries, human_ms(o.deps_ingest_ms));
    let _ = writeln!(s, "| materialize the project layer | {} |", human_ms(o.materialize_ms));
    let _ = writeln!(s, "| materialize the dependency layer | {} |", human_ms(o.deps_materialize_ms));
    match (o.ostree_commit_ms, o.ostree_checkout_hardlink_ms) {
        (Some(c), h) => {
            let _ = writeln!(s, "| `ostree commit` of the project tree (bare repo), same run | {} |", human_ms(c));
            if let Some(h) = h {
                let _ = writeln!(s, "| `ostree checkout -H` of that commit, same run | {} |", human_ms(h));
            }
        }
        _ => {
            let _ = writeln!(s, "\nNote: {}", o.note.as_deref().unwrap_or("ostree not measured"));
        }
    }
    let _ = writeln!(s, "\nBreak-even: the number of runs after which a backend's one-time costs are paid back by its per-run saving (ready + destroy) against the class's worktree baseline.\n");
    for c in &r.classes {
        let _ = writeln!(s, "## {}\n", c.class);
        class_table(c, &mut s);
        s.push('\n');
        git_table(c, &mut s);
        provision_lines(c, &mut s);
    }
    let _ = writeln!(s, "![time-to-ready and disk per root](chart.svg)");
    s
}

/// One bar pair: label, time-to-ready (ms), disk per root (bytes), correct.
type Bar = (String, f64, f64, bool);

/// A bar chart of time-to-ready and disk per root, by class and backend (log scales).
pub fn svg(r: &BenchReport) -> String {
    let rows: Vec<Bar> = r
        .classes
        .iter()
        .flat_map(|c| {
            c.backends.iter().filter(|b| b.available).map(move |b| {
                (
                    format!("{} / {}", c.class, b.backend),
                    b.ready_ms.p50.max(0.001),
                    (b.bytes_per_root as f64).max(1.0),
                    b.correct,
                )
            })
        })
        .collect();
    let (w, row_h, label_w, bar_w) = (1200.0, 22.0, 300.0, 340.0);
    let h = 60.0 + row_h * rows.len() as f64;
    let lmax = |f: &dyn Fn(&Bar) -> f64| rows.iter().map(|r| f(r).log10()).fold(0.0f64, f64::max).ceil().max(1.0);
    let (tmax, dmax) = (lmax(&|r| r.1), lmax(&|r| r.2));
    let (tmin, dmin) = (-2.0f64, 0.0f64);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<text x="{}" y="20" font-weight="bold">time-to-ready p50 (ms, log scale)</text>"#, label_w);
    let _ = write!(
        s,
        r#"<text x="{}" y="20" font-weight="bold">disk per root (bytes, log scale)</text>"#,
        label_w + bar_w + 60.0
    );
    for (i, (label, t, d, ok)) in rows.iter().enumerate() {
        let y = 40.0 + i as f64 * row_h;
        let tw = bar_w * ((t.log10() - tmin) / (tmax - tmin)).clamp(0.01, 1.0);
        let dw = bar_w * ((d.log10() - dmin) / (dmax - dmin)).clamp(0.01, 1.0);
        let color = if *ok { "#4a7bd0" } else { "#c94040" };
        let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, label_w - 8.0, y + 14.0, xml(label));
        let _ = write!(
            s,
            r#"<rect x="{label_w}" y="{}" width="{tw:.1}" height="{}" fill="{color}"/>"#,
            y + 3.0,
            row_h - 6.0
        );
        let _ = write!(s, r#"<text x="{}" y="{}">{}</text>"#, label_w + tw + 4.0, y + 14.0, xml(&human_ms(*t)));
        let x2 = label_w + bar_w + 60.0;
        let _ =
            write!(s, r#"<rect x="{x2}" y="{}" width="{dw:.1}" height="{}" fill="{color}"/>"#, y + 3.0, row_h - 6.0);
        let _ = write!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            x2 + dw + 4.0,
            y + 14.0,
            xml(&HumanBytes(*d as u64).to_string())
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
