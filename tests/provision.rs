//! `root create --provision`: dependency layers built once per key and stacked on every later
//! root of the same inputs, on a real store with real mounts. The provision command is a script
//! that writes `node_modules/` from the lockfile's content and appends a line to a file outside
//! the root, so the tests count how often it ran.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;

use common::*;
use serde_json::Value;

/// A project tree and the provision script, in a scratch store.
struct Project {
    env: Env,
}

impl Project {
    fn new() -> Project {
        let env = Env::new();
        let script = format!(
            "echo run >> {runs}\n\
             mkdir -p node_modules/dep\n\
             cp pnpm-lock.yaml node_modules/dep/lock-copy\n\
             echo \"FOO=${{FOO:-unset}}\" > node_modules/dep/env\n\
             echo \"installed from $(cat pnpm-lock.yaml)\"\n",
            runs = env.path("runs").display()
        );
        std::fs::write(env.path("install.sh"), script).unwrap();
        Project { env }
    }

    /// A base snapshot with this lockfile and `extra` as another file's content, named `name`.
    fn base(&self, name: &str, lock: &str, extra: &str) -> String {
        let dir = self.env.path(&format!("src-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("package.json"), "{\"dependencies\":{\"dep\":\"1\"}}\n").unwrap();
        std::fs::write(dir.join("pnpm-lock.yaml"), lock).unwrap();
        std::fs::write(dir.join("index.js"), extra).unwrap();
        let id = self.env.ingest(&dir);
        self.env.ok(&["ref", "set", name, &id]);
        id
    }

    fn command(&self) -> String {
        format!("sh {}", self.env.path("install.sh").display())
    }

    fn create_args(&self, from: &str, backend: &str) -> Vec<String> {
        [
            "root",
            "create",
            "--class",
            "preview",
            "--backend",
            backend,
            "--from",
            from,
            "--provision",
            &self.command(),
            "--provision-inputs",
            "package.json,pnpm-lock.yaml",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn create(&self, from: &str, extra: &[&str]) -> Value {
        let mut a = self.create_args(from, "overlay");
        a.extend(extra.iter().map(|s| s.to_string()));
        self.env.ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.env.path("runs")).map(|s| s.lines().count()).unwrap_or(0)
    }

    fn provisions(&self) -> Vec<Value> {
        self.env.ok(&["provision", "list"])["provisions"].as_array().unwrap().clone()
    }
}

fn key(v: &Value) -> String {
    v["provision"]["key"].as_str().unwrap().to_string()
}

/// The root presents the base with the layer on top: the lockfile's copy is this lockfile's.
fn assert_provisioned(root: &Value, lock: &str) {
    let cwd = cwd(root);
    assert_eq!(std::fs::read_to_string(cwd.join("node_modules/dep/lock-copy")).unwrap(), lock);
    assert_eq!(std::fs::read_to_string(cwd.join("pnpm-lock.yaml")).unwrap(), lock);
    assert!(cwd.join("index.js").is_file());
    let snaps = root["snapshots"].as_array().unwrap();
    assert_eq!(snaps.last().unwrap(), &root["provision"]["snapshot"], "the layer is the top snapshot");
}

#[test]
fn miss_then_hit_then_a_changed_input_builds_a_new_key() {
    if !can_mount() {
        return;
    }
    let p = Project::new();
    p.base("v1", "lock-1\n", "a");
    let first = p.create("v1", &[]);
    assert_eq!(first["provision"]["hit"], false, "{first}");
    assert_eq!(first["provision"]["copiedIn"], false, "an overlay root stacks the layer");
    assert_eq!(p.runs(), 1);
    assert_provisioned(&first, "lock-1\n");
    let log = PathBuf::from(first["provision"]["log"].as_str().unwrap());
    assert!(std::fs::read_to_string(&log).unwrap().contains("installed from lock-1"));

    // The build's parts are in the create's timings (docs/cli.md), a hit's only the lookup.
    let parts = ["provisionRoot", "provisionCommand", "provisionCommit", "provisionDestroy"];
    for k in ["provision"].iter().chain(&parts) {
        assert!(first["timingsMs"][k].as_f64().is_some(), "{k}: {first}");
    }

    let second = p.create("v1", &[]);
    assert_eq!(second["provision"]["hit"], true, "{second}");
    assert_eq!(key(&second), key(&first));
    assert_eq!(p.runs(), 1, "a hit runs nothing");
    assert!(second["timingsMs"]["provision"].as_f64().is_some(), "{second}");
    assert!(parts.iter().all(|k| second["timingsMs"].get(k).is_none()), "{second}");
    assert_provisioned(&second, "lock-1\n");
    // The root's JSON (list, show) carries it too; a root without --provision has null.
    let shown = p.env.ok(&["root", "show", second["id"].as_str().unwrap()]);
    assert_eq!(shown["provision"], second["provision"]);

    // Another base with the same inputs (scope inputs, the default): still a hit.
    p.base("v1b", "lock-1\n", "other source");
    let third = p.create("v1b", &[]);
    assert_eq!(third["provision"]["hit"], true);
    assert_eq!(std::fs::read_to_string(cwd(&third).join("index.js")).unwrap(), "other source");
    assert_provisioned(&third, "lock-1\n");
    // ... but with scope base the base's layers are in the key.
    let scoped = p.create("v1b", &["--provision-scope", "base"]);
    assert_eq!(scoped["provision"]["hit"], false);
    assert_ne!(key(&scoped), key(&third));
    assert_eq!(p.runs(), 2);

    // A changed lockfile is a new key and a new build.
    p.base("v2", "lock-2\n", "a");
    let changed = p.create("v2", &[]);
    assert_eq!(changed["provision"]["hit"], false);
    assert_ne!(key(&changed), key(&first));
    assert_eq!(p.runs(), 3);
    assert_provisioned(&changed, "lock-2\n");

    // The listed variables are the command's, and part of the key.
    let with_env = |v: &str| {
        let mut a = p.create_args("v1", "overlay");
        a.extend(["--provision-env".to_string(), "FOO".to_string()]);
        let out = p.env.cmd(&a.iter().map(String::as_str).collect::<Vec<_>>()).env("FOO", v).output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        parse(&out)
    };
    let a = with_env("one");
    assert_eq!(std::fs::read_to_string(cwd(&a).join("node_modules/dep/env")).unwrap(), "FOO=one\n");
    let b = with_env("two");
    assert_ne!(key(&a), key(&b));
    assert_eq!(with_env("one")["provision"]["hit"], true);
    assert_eq!(p.runs(), 5);

    // No temporary root is left; every provision is listed with its inputs.
    let roots = p.env.ok(&["root", "list"])["roots"].as_array().unwrap().clone();
    assert!(roots.iter().all(|r| r["labels"].get("execroot.provision-build").is_none()), "{roots:?}");
    let list = p.provisions();
    assert_eq!(list.len(), 5, "{list:?}");
    assert!(list.iter().all(|e| e["inputs"] == serde_json::json!(["package.json", "pnpm-lock.yaml"])));
    assert!(list.iter().all(|e| e["bytes"].as_u64().unwrap() > 0));
}

#[test]
fn the_copy_backend_gets_the_layer_too() {
    let p = Project::new();
    p.base("v1", "lock-c\n", "a");
    let args = p.create_args("v1", "copy");
    let a = p.env.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let b = p.env.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!((a["provision"]["hit"].clone(), b["provision"]["hit"].clone()), (false.into(), true.into()));
    assert_eq!((a["provision"]["copiedIn"].clone(), b["provision"]["copiedIn"].clone()), (true.into(), true.into()));
    assert_eq!(p.runs(), 1);
    assert_provisioned(&a, "lock-c\n");
    assert_provisioned(&b, "lock-c\n");
}

#[test]
fn a_failed_build_caches_nothing_and_says_why() {
    if !can_mount() {
        return;
    }
    let p = Project::new();
    p.base("v1", "lock-1\n", "a");
    std::fs::write(p.env.path("fail.sh"), "echo run >> $1\necho first line\necho the last words >&2\nexit 3\n")
        .unwrap();
    let cmd = format!("sh {} {}", p.env.path("fail.sh").display(), p.env.path("runs").display());
    let args = [
        "root",
        "create",
        "--class",
        "preview",
        "--from",
        "v1",
        "--provision",
        &cmd,
        "--provision-inputs",
        "pnpm-lock.yaml",
    ];
    let out = p.env.cmd(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let msg = parse(&out)["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("exit status 3"), "{msg}");
    assert!(msg.contains("the last words"), "{msg}");
    let log = msg.rsplit("log: ").next().unwrap().trim().to_string();
    assert!(msg.trim_end().ends_with(&log) && log.ends_with("/log"), "{msg}");
    assert!(std::fs::read_to_string(&log).unwrap().contains("first line"));
    assert!(p.provisions().is_empty(), "nothing cached");
    assert!(p.env.ok(&["root", "list"])["roots"].as_array().unwrap().is_empty(), "the temporary root is gone");
    p.env.fails(&args, 2);
    assert_eq!(p.runs(), 2, "a failure is not cached: the next create runs it again");

    // Bad input, naming the input, before anything runs.
    let missing = [
        "root",
        "create",
        "--class",
        "preview",
        "--from",
        "v1",
        "--provision",
        &cmd,
        "--provision-inputs",
        "nope.lock",
    ];
    let e = p.env.fails(&missing, 2);
    assert!(e["error"]["message"].as_str().unwrap().contains("nope.lock"), "{e}");
    let no_inputs = ["root", "create", "--class", "preview", "--from", "v1", "--provision", &cmd];
    p.env.fails(&no_inputs, 2);
    assert_eq!(p.runs(), 2);

    // A timeout kills the command and caches nothing.
    let slow = [
        "root",
        "create",
        "--class",
        "preview",
        "--from",
        "v1",
        "--provision",
        "sleep 30",
        "--provision-inputs",
        "pnpm-lock.yaml",
        "--provision-timeout",
        "1s",
    ];
    let e = p.env.fails(&slow, 5);
    assert!(e["error"]["message"].as_str().unwrap().contains("timed out"), "{e}");
    assert!(p.provisions().is_empty());
}

#[test]
fn concurrent_misses_build_once() {
    if !can_mount() {
        return;
    }
    let p = Project::new();
    p.base("v1", "lock-1\n", "a");
    // The command waits a little so that the creates overlap (the count is the assertion).
    let script = std::fs::read_to_string(p.env.path("install.sh")).unwrap();
    std::fs::write(p.env.path("install.sh"), format!("sleep 0.5\n{script}")).unwrap();
    let args = p.create_args("v1", "overlay");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let mut c = p.env.spawnable(&args.iter().map(String::as_str).collect::<Vec<_>>());
            c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    let docs: Vec<Value> = handles
        .into_iter()
        .map(|h| {
            let out = h.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", describe(&out));
            parse(&out)
        })
        .collect();
    assert_eq!(p.runs(), 1, "one build for every create of the key");
    let k = key(&docs[0]);
    assert!(docs.iter().all(|d| key(d) == k));
    let built = docs.iter().filter(|d| d["provision"]["hit"] == false).count();
    assert_eq!(built, 1, "the others waited for the build and used it: {docs:?}");
    for d in &docs {
        assert_provisioned(d, "lock-1\n");
    }
}

#[test]
fn a_build_killed_at_each_phase_leaves_nothing_taken_for_a_layer() {
    if !can_mount() {
        return;
    }
    let p = Project::new();
    for (i, point) in
        ["provision.running", "provision.command-done", "provision.committed", "provision.recorded"].iter().enumerate()
    {
        let lock = format!("lock-crash-{i}\n");
        let name = format!("c{i}");
        p.base(&name, &lock, "a");
        let args = p.create_args(&name, "overlay");
        let runs_before = p.runs();
        let out = p
            .env
            .spawnable(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .env("EXECROOT_FAILPOINT", point)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(9), "{point} not reached: {}", describe(&out));
        let r = p.env.ok(&["doctor", "--repair"]);
        let again = p.env.ok(&["doctor"]);
        assert_eq!(again["findings"].as_array().unwrap().len(), 0, "after {point}: {r} then {again}");
        assert_eq!(p.env.ok(&["verify"])["ok"], true);
        assert!(p.env.ok(&["root", "list"])["roots"].as_array().unwrap().is_empty(), "after {point}: {r}");
        assert!(mounts_below(&p.env.store().join("roots")).is_empty());
        let recorded = *point == "provision.recorded";
        assert_eq!(p.provisions().len(), i.min(3) + usize::from(recorded), "after {point}");
        let root = p.env.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        // Only a published record is a layer: before it, the next create builds again.
        assert_eq!(root["provision"]["hit"], recorded, "after {point}: {root}");
        let ran = if *point == "provision.running" { 1 } else { 2 };
        assert_eq!(p.runs() - runs_before, if recorded { 1 } else { ran }, "after {point}");
        assert_provisioned(&root, &lock);
        p.env.ok(&["root", "destroy", root["id"].as_str().unwrap()]);
    }
}

#[test]
fn gc_keeps_provisions_by_policy_and_rm_refuses_a_used_one() {
    if !can_mount() {
        return;
    }
    let p = Project::new();
    let mut roots = Vec::new();
    for i in 0..3 {
        p.base(&format!("g{i}"), &format!("lock-g{i}\n"), "a");
        roots.push(p.create(&format!("g{i}"), &[]));
    }
    // The first is used again: it is the most recently used.
    let again = p.create("g0", &[]);
    assert_eq!(again["provision"]["hit"], true);
    for r in roots.iter().chain([&again]) {
        p.env.ok(&["root", "destroy", r["id"].as_str().unwrap()]);
    }
    for i in 0..3 {
        p.env.ok(&["ref", "rm", &format!("g{i}")]);
    }
    // Without a policy every provision layer is kept, its snapshot with it.
    let gc = p.env.ok(&["gc", "--grace", "0"]);
    assert_eq!(gc["removedProvisions"].as_array().unwrap().len(), 0);
    assert_eq!(p.provisions().len(), 3);
    for e in p.provisions() {
        p.env.ok(&["snapshot", "show", e["snapshot"].as_str().unwrap()]);
    }
    // --keep-provisions 1 keeps the most recently used.
    let dry = p.env.ok(&["gc", "--grace", "0", "--keep-provisions", "1", "--dry-run"]);
    assert_eq!(dry["removedProvisions"].as_array().unwrap().len(), 2);
    assert_eq!(p.provisions().len(), 3, "a dry run forgets nothing");
    let gc = p.env.ok(&["gc", "--grace", "0", "--keep-provisions", "1"]);
    assert_eq!(gc["removedProvisions"].as_array().unwrap().len(), 2, "{gc}");
    let left = p.provisions();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["key"].as_str().unwrap(), key(&again));
    let gone: Vec<String> =
        gc["removedProvisions"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().into()).collect();
    assert!(!gone.contains(&key(&again)));
    assert!(gc["removedSnapshots"].as_array().unwrap().len() >= 2, "their snapshots went: {gc}");

    // A layer a root uses is kept by any policy, and rm refuses it.
    p.base("g0", "lock-g0\n", "a");
    let user = p.create("g0", &[]);
    assert_eq!(user["provision"]["hit"], true);
    let gc = p.env.ok(&["gc", "--grace", "0", "--keep-provisions", "0", "--provision-max-age", "0"]);
    assert_eq!(gc["removedProvisions"].as_array().unwrap().len(), 0, "{gc}");
    let k = key(&user);
    let shown = p.env.ok(&["provision", "show", &k]);
    assert_eq!(shown["roots"], serde_json::json!([user["id"]]));
    p.env.fails(&["provision", "rm", &k], 5);
    p.env.fails(&["snapshot", "rm", user["provision"]["snapshot"].as_str().unwrap()], 5);
    p.env.ok(&["root", "destroy", user["id"].as_str().unwrap()]);
    // snapshot rm still refuses a recorded layer's snapshot; provision rm forgets it.
    p.env.fails(&["snapshot", "rm", user["provision"]["snapshot"].as_str().unwrap()], 5);
    let rm = p.env.ok(&["provision", "rm", &k]);
    assert_eq!(rm["key"].as_str().unwrap(), k);
    assert!(p.provisions().is_empty());
    p.env.fails(&["provision", "show", &k], 4);
    p.env.fails(&["provision", "rm", &k], 4);
    // Forgotten: the next create builds again.
    let rebuilt = p.create("g0", &[]);
    assert_eq!(rebuilt["provision"]["hit"], false);
}

/// A build whose execroot is killed while the command runs: the command dies with it, but a
/// process the command started keeps running in the temporary root; doctor kills what is left
/// in that scaffolding and destroys it, and the next create builds again.
#[test]
fn a_killed_build_whose_command_left_a_process_running_is_cleared_by_doctor() {
    if !can_mount() {
        return;
    }
    let p = Project::new();
    p.base("bg", "lock-bg\n", "a");
    let marker = p.env.path("started");
    let script = p.env.path("background.sh");
    std::fs::write(&script, format!("sleep 300 &\necho $! > {}\nwait\n", marker.display())).unwrap();
    let args = [
        "root",
        "create",
        "--class",
        "preview",
        "--backend",
        "overlay",
        "--from",
        "bg",
        "--provision",
        &format!("sh {}", script.display()),
        "--provision-inputs",
        "package.json",
    ];
    let mut child =
        p.env.spawnable(&args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&marker).map_or(true, |s| s.trim().is_empty()) {
        assert!(std::time::Instant::now() < deadline, "the provision command never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let sleeper: i32 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let alive = |pid: i32| {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
    };
    assert!(alive(sleeper), "the command's own child should have outlived execroot");

    let r = p.env.ok(&["doctor", "--repair"]);
    let kinds: Vec<&str> = r["findings"].as_array().unwrap().iter().filter_map(|f| f["kind"].as_str()).collect();
    assert!(kinds.contains(&"dead-provision-build"), "{r}");
    assert_eq!(p.env.ok(&["doctor"])["findings"].as_array().unwrap().len(), 0, "{r}");
    assert!(p.env.ok(&["root", "list"])["roots"].as_array().unwrap().is_empty(), "{r}");
    assert!(mounts_below(&p.env.store().join("roots")).is_empty());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while alive(sleeper) {
        assert!(std::time::Instant::now() < deadline, "the leftover process still runs");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(p.provisions().is_empty(), "nothing was cached");
}

impl Project {
    /// A repository whose one commit on main is the project (its `node_modules/` ignored).
    fn repo(&self, lock: &str) -> PathBuf {
        let r = self.env.path("repo");
        std::fs::create_dir_all(r.join("src")).unwrap();
        std::fs::write(r.join("package.json"), "{\"dependencies\":{\"dep\":\"1\"}}\n").unwrap();
        std::fs::write(r.join("pnpm-lock.yaml"), lock).unwrap();
        std::fs::write(r.join("src/index.js"), "a").unwrap();
        std::fs::write(r.join(".gitignore"), "node_modules/\n").unwrap();
        git(&r, &["init", "-q", "-b", "main"]);
        git(&r, &["add", "-A"]);
        git(&r, &["commit", "-qm", "base"]);
        r
    }

    /// `root create --class repo-edit --backend BACKEND --repo REPO --base-ref main` provisioned
    /// with `command`.
    fn repo_create(&self, backend: &str, repo: &std::path::Path, command: &str) -> Value {
        let r = repo.to_str().unwrap();
        let args = ["--provision", command, "--provision-inputs", "package.json,pnpm-lock.yaml"];
        self.env.repo_root(backend, r, &args)
    }
}

/// `git status --porcelain` in the root's worktree, ignored files left out.
fn porcelain(root: &Value) -> String {
    git(&cwd(root), &["status", "--porcelain"])
}

#[test]
fn a_git_overlay_root_gets_the_layer_over_its_checkout_and_git_ignores_it() {
    if !can_mount() {
        return;
    }
    let p = Project::new();
    let repo = p.repo("lock-g\n");
    let first = p.repo_create("git-overlay", &repo, &p.command());
    assert_eq!(first["backend"], "git-overlay", "{first}");
    assert_eq!(first["provision"]["hit"], false, "{first}");
    assert_eq!(first["provision"]["copiedIn"], false, "git-overlay stacks the layer: {first}");
    assert_eq!(p.runs(), 1);
    assert_provisioned_repo(&first, "lock-g\n");
    // The layer sits above the checkout: the checkout snapshot first, the layer last.
    assert_eq!(first["snapshots"].as_array().unwrap().len(), 2, "{first}");
    assert_eq!(porcelain(&first), "", "node_modules is ignored and nothing tracked changed");
    let shown = p.env.ok(&["root", "show", first["id"].as_str().unwrap()]);
    assert_eq!(
        (shown["git"]["dirtyEntryCount"].as_u64(), shown["git"]["untrackedEntryCount"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(shown["git"]["ignoredEntryCount"].as_u64().unwrap() > 0, "{shown}");
    // Tiny on disk: the layer is shared, the upper holds the `.git` link.
    assert!(shown["usage"]["bytes"].as_u64().unwrap() < 1024 * 1024, "{shown}");

    // A hit: no command runs, and the layer is the same.
    let second = p.repo_create("git-overlay", &repo, &p.command());
    assert_eq!(second["provision"]["hit"], true, "{second}");
    assert_eq!(key(&second), key(&first));
    assert_eq!(p.runs(), 1);
    assert_provisioned_repo(&second, "lock-g\n");
    assert_eq!(porcelain(&second), "");

    // Destroy still refuses to lose work: an untracked file, then an edit of a tracked one.
    let id = second["id"].as_str().unwrap();
    std::fs::write(cwd(&second).join("notes.txt"), "mine").unwrap();
    p.env.fails(&["root", "destroy", id], 5);
    std::fs::remove_file(cwd(&second).join("notes.txt")).unwrap();
    std::fs::write(cwd(&second).join("src/index.js"), "edited").unwrap();
    p.env.fails(&["root", "destroy", id], 5);
    git(&cwd(&second), &["checkout", "--", "src/index.js"]);
    assert_eq!(p.env.ok(&["root", "destroy", id])["cleaned"], true);
    assert_eq!(p.env.ok(&["root", "destroy", first["id"].as_str().unwrap()])["cleaned"], true);

    // No temporary root or branch of the build is left in the repository.
    let roots = p.env.ok(&["root", "list"])["roots"].as_array().unwrap().clone();
    assert!(roots.is_empty(), "{roots:?}");
    assert_eq!(git(&repo, &["branch", "--format=%(refname:short)"]).trim(), "main");
    assert_eq!(git(&repo, &["worktree", "list", "--porcelain"]).matches("worktree ").count(), 1);
}

/// A repository root shows its commit with the layer on top.
fn assert_provisioned_repo(root: &Value, lock: &str) {
    let cwd = cwd(root);
    assert_eq!(std::fs::read_to_string(cwd.join("node_modules/dep/lock-copy")).unwrap(), lock);
    assert_eq!(std::fs::read_to_string(cwd.join("src/index.js")).unwrap(), "a");
    let snaps = root["snapshots"].as_array().unwrap();
    assert_eq!(snaps.last().unwrap(), &root["provision"]["snapshot"], "the layer is the top snapshot");
}

#[test]
fn a_plain_worktree_root_gets_the_layer_copied_in() {
    if !can_mount() {
        return;
    }
    let p = Project::new();
    let repo = p.repo("lock-w\n");
    // The first build of this commit makes its checkout snapshot (no git-overlay root yet).
    let a = p.repo_create("worktree", &repo, &p.command());
    assert_eq!(a["backend"], "worktree", "{a}");
    assert_eq!((a["provision"]["hit"].clone(), a["provision"]["copiedIn"].clone()), (false.into(), true.into()));
    let b = p.repo_create("worktree", &repo, &p.command());
    assert_eq!((b["provision"]["hit"].clone(), b["provision"]["copiedIn"].clone()), (true.into(), true.into()));
    assert_eq!(p.runs(), 1, "built once, copied into each");
    for r in [&a, &b] {
        let lock_copy = cwd(r).join("node_modules/dep/lock-copy");
        assert_eq!(std::fs::read_to_string(&lock_copy).unwrap(), "lock-w\n");
        assert!(std::fs::symlink_metadata(&lock_copy).unwrap().is_file(), "a private copy");
        assert_eq!(porcelain(r), "");
    }
    // The same key as a git-overlay root of the commit: it stacks what the worktrees copied.
    let g = p.repo_create("git-overlay", &repo, &p.command());
    assert_eq!((g["provision"]["hit"].clone(), g["provision"]["copiedIn"].clone()), (true.into(), false.into()));
    assert_eq!(key(&g), key(&a));
    // Ignored files are disposable: destroy takes them; an untracked file still stops it.
    std::fs::write(cwd(&a).join("notes.txt"), "mine").unwrap();
    p.env.fails(&["root", "destroy", a["id"].as_str().unwrap()], 5);
    for r in [&a, &b, &g] {
        assert_eq!(p.env.ok(&["root", "destroy", r["id"].as_str().unwrap(), "--force"])["cleaned"], true);
    }
    assert_eq!(git(&repo, &["branch", "--format=%(refname:short)"]).trim(), "main");
}

/// The command deletes a base file, replaces a directory with a file and edits a tracked file.
const RESHAPE: &str = "rm old.txt && rm -r cache && echo now-a-file > cache && echo edited > keep.txt && \
                       mkdir -p node_modules/dep && cp pnpm-lock.yaml node_modules/dep/lock-copy";

fn assert_reshaped(dir: &std::path::Path) {
    assert!(!dir.join("old.txt").exists(), "the deleted file is gone in {}", dir.display());
    assert_eq!(std::fs::read_to_string(dir.join("cache")).unwrap(), "now-a-file\n");
    assert_eq!(std::fs::read_to_string(dir.join("keep.txt")).unwrap(), "edited\n");
    assert!(dir.join("node_modules/dep/lock-copy").is_file());
}

#[test]
fn what_the_command_deletes_or_replaces_is_recorded_as_whiteouts() {
    if !can_mount() {
        return;
    }
    let p = Project::new();
    let src = p.env.path("src-r");
    std::fs::create_dir_all(src.join("cache/deep")).unwrap();
    std::fs::write(src.join("cache/a"), "1").unwrap();
    std::fs::write(src.join("cache/deep/b"), "2").unwrap();
    std::fs::write(src.join("old.txt"), "old").unwrap();
    std::fs::write(src.join("keep.txt"), "keep").unwrap();
    std::fs::write(src.join("pnpm-lock.yaml"), "lock-r\n").unwrap();
    let id = p.env.ingest(&src);
    let create = |backend: &str| {
        let args = [
            "root",
            "create",
            "--class",
            "preview",
            "--backend",
            backend,
            "--from",
            &id,
            "--provision",
            RESHAPE,
            "--provision-inputs",
            "pnpm-lock.yaml",
        ];
        p.env.ok(&args)
    };
    let o = create("overlay");
    assert_eq!(o["provision"]["hit"], false);
    assert_reshaped(&cwd(&o));
    // The layer is a change on the empty snapshot: its whiteouts delete from any base below.
    let layer = o["provision"]["snapshot"].as_str().unwrap();
    let shown = p.env.ok(&["snapshot", "show", layer]);
    assert_eq!(shown["parents"].as_array().map(Vec::len), Some(1), "{shown}");
    // The root's diff against its snapshots is empty: the layer is the command's result.
    let d = p.env.ok(&["root", "diff", o["id"].as_str().unwrap()]);
    assert!(["added", "modified", "deleted"].iter().all(|k| d[k].as_array().unwrap().is_empty()), "{d}");
    // Copied in: the same tree.
    let c = create("copy");
    assert_eq!((c["provision"]["hit"].clone(), c["provision"]["copiedIn"].clone()), (true.into(), true.into()));
    assert_reshaped(&cwd(&c));
    let d = p.env.ok(&["root", "diff", c["id"].as_str().unwrap()]);
    assert!(["added", "modified", "deleted"].iter().all(|k| d[k].as_array().unwrap().is_empty()), "{d}");
}

#[test]
fn a_repository_root_shows_what_the_command_did_to_tracked_files() {
    if !can_mount() {
        return;
    }
    let p = Project::new();
    let r = p.env.path("repo");
    std::fs::create_dir_all(r.join("cache")).unwrap();
    std::fs::write(r.join("cache/a"), "1").unwrap();
    std::fs::write(r.join("old.txt"), "old").unwrap();
    std::fs::write(r.join("keep.txt"), "keep").unwrap();
    std::fs::write(r.join("package.json"), "{}\n").unwrap();
    std::fs::write(r.join("pnpm-lock.yaml"), "lock-t\n").unwrap();
    std::fs::write(r.join(".gitignore"), "node_modules/\n").unwrap();
    git(&r, &["init", "-q", "-b", "main"]);
    git(&r, &["add", "-A"]);
    git(&r, &["commit", "-qm", "base"]);
    let want = " D cache/a\n M keep.txt\n D old.txt\n?? cache\n";
    let g = p.repo_create("git-overlay", &r, RESHAPE);
    assert_reshaped(&cwd(&g));
    assert_eq!(porcelain(&g), want, "git sees the command's changes to tracked files");
    let w = p.repo_create("worktree", &r, RESHAPE);
    assert_eq!(w["provision"]["hit"], true);
    assert_reshaped(&cwd(&w));
    assert_eq!(porcelain(&w), want, "the copy-in applies the deletions too");
    // Those changes are the layer's, not the run's: git-overlay judges only what the run wrote
    // (its upper), so destroy takes them; the worktree holds a copy git cannot tell from work.
    p.env.fails(&["root", "destroy", w["id"].as_str().unwrap()], 5);
    assert_eq!(p.env.ok(&["root", "destroy", w["id"].as_str().unwrap(), "--force"])["cleaned"], true);
    std::fs::write(cwd(&g).join("old.txt"), "back").unwrap();
    p.env.fails(&["root", "destroy", g["id"].as_str().unwrap()], 5);
    std::fs::remove_file(cwd(&g).join("old.txt")).unwrap();
    assert_eq!(p.env.ok(&["root", "destroy", g["id"].as_str().unwrap()])["cleaned"], true);
}

#[test]
fn a_worktree_create_killed_while_copying_the_layer_in_is_undone_by_doctor() {
    if !can_mount() {
        return;
    }
    let p = Project::new();
    let repo = p.repo("lock-k\n");
    let r = repo.to_str().unwrap();
    let args = [
        "root",
        "create",
        "--class",
        "repo-edit",
        "--backend",
        "worktree",
        "--repo",
        r,
        "--base-ref",
        "main",
        "--provision",
        &p.command(),
        "--provision-inputs",
        "package.json,pnpm-lock.yaml",
    ];
    let out = p.env.spawnable(&args).env("EXECROOT_FAILPOINT", "worktree.create.copied-in").output().unwrap();
    assert_eq!(out.status.signal(), Some(9), "not reached: {}", describe(&out));
    // The copied files are execroot's, not a run's: doctor undoes the create without keeping them.
    let fixed = p.env.ok(&["doctor", "--repair"]);
    assert_eq!(p.env.ok(&["doctor"])["findings"].as_array().unwrap().len(), 0, "{fixed}");
    assert!(p.env.ok(&["root", "list"])["roots"].as_array().unwrap().is_empty(), "{fixed}");
    assert_eq!(git(&repo, &["branch", "--format=%(refname:short)"]).trim(), "main");
    let again = p.repo_create("worktree", &repo, &p.command());
    assert_eq!(again["provision"]["hit"], true, "the layer was recorded before the copy-in");
    assert_eq!(p.env.ok(&["root", "destroy", again["id"].as_str().unwrap()])["cleaned"], true);
}

#[test]
fn a_later_commit_with_the_same_inputs_reuses_the_layer_unless_scope_is_base() {
    if !can_mount() {
        return;
    }
    let p = Project::new();
    let repo = p.repo("lock-s\n");
    let first = p.repo_create("git-overlay", &repo, &p.command());
    std::fs::write(repo.join("src/index.js"), "b").unwrap();
    git(&repo, &["commit", "-qam", "a source change"]);
    let later = p.repo_create("git-overlay", &repo, &p.command());
    assert_eq!((later["provision"]["hit"].clone(), key(&later)), (true.into(), key(&first)), "{later}");
    assert_eq!(std::fs::read_to_string(cwd(&later).join("src/index.js")).unwrap(), "b");
    assert_eq!(porcelain(&later), "");
    // With scope base the commit's tree is in the key: each commit builds its own.
    let scoped = |r: &str| {
        let args = [
            "--provision",
            &p.command(),
            "--provision-inputs",
            "package.json,pnpm-lock.yaml",
            "--provision-scope",
            "base",
        ];
        p.env.repo_root("git-overlay", r, &args)
    };
    let a = scoped(repo.to_str().unwrap());
    assert_eq!(a["provision"]["hit"], false);
    assert_ne!(key(&a), key(&first));
    assert_eq!(scoped(repo.to_str().unwrap())["provision"]["hit"], true);
    std::fs::write(repo.join("src/index.js"), "c").unwrap();
    git(&repo, &["commit", "-qam", "another"]);
    assert_eq!(scoped(repo.to_str().unwrap())["provision"]["hit"], false);
    assert_eq!(p.runs(), 3);
    // A changed lockfile in a commit is a new key.
    std::fs::write(repo.join("pnpm-lock.yaml"), "lock-s2\n").unwrap();
    git(&repo, &["commit", "-qam", "new lock"]);
    let relocked = p.repo_create("git-overlay", &repo, &p.command());
    assert_eq!(relocked["provision"]["hit"], false);
    assert_eq!(std::fs::read_to_string(cwd(&relocked).join("node_modules/dep/lock-copy")).unwrap(), "lock-s2\n");
    // An input missing from the commit is bad input naming it, before anything runs.
    let args = ["--provision", "true", "--provision-inputs", "nope.lock"];
    let mut all = vec!["root", "create", "--class", "repo-edit", "--backend", "git-overlay", "--repo"];
    all.extend([repo.to_str().unwrap(), "--base-ref", "main"]);
    all.extend(args);
    let e = p.env.fails(&all, 2);
    assert!(e["error"]["message"].as_str().unwrap().contains("nope.lock"), "{e}");
    *all.last_mut().unwrap() = "src";
    let e = p.env.fails(&all, 2);
    assert!(e["error"]["message"].as_str().unwrap().contains("\"src\" is a tree in main, not a file"), "{e}");
    let mut bad_ref = all.clone();
    bad_ref[9] = "no-such-ref";
    let e = p.env.fails(&bad_ref, 2);
    assert!(e["error"]["message"].as_str().unwrap().contains("not a commit"), "{e}");
    // --from is not for repository roots.
    let mut from = vec!["root", "create", "--class", "repo-edit", "--backend", "git-overlay", "--repo"];
    let checkout = first["snapshots"][0].as_str().unwrap().to_string();
    from.extend([repo.to_str().unwrap(), "--base-ref", "main", "--from", &checkout]);
    p.env.fails(&from, 2);
}

#[test]
fn a_checkout_no_snapshot_reproduces_cannot_be_provisioned() {
    if !can_mount() {
        return;
    }
    let p = Project::new();
    let repo = p.repo("lock-f\n");
    // A smudge filter runs per checkout: git-overlay falls back to a plain worktree for it.
    std::fs::write(repo.join(".gitattributes"), "pnpm-lock.yaml filter=mine\n").unwrap();
    git(&repo, &["config", "filter.mine.smudge", "cat"]);
    git(&repo, &["config", "filter.mine.clean", "cat"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "a filter"]);
    let r = repo.to_str().unwrap();
    let args = [
        "root",
        "create",
        "--class",
        "repo-edit",
        "--repo",
        r,
        "--base-ref",
        "main",
        "--provision",
        &p.command(),
        "--provision-inputs",
        "package.json,pnpm-lock.yaml",
    ];
    let e = p.env.fails(&args, 2);
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("cannot be made a snapshot") && msg.contains("smudge"), "{msg}");
    assert_eq!(p.runs(), 0, "nothing ran");
    assert!(p.env.ok(&["root", "list"])["roots"].as_array().unwrap().is_empty());
    assert_eq!(git(&repo, &["branch", "--format=%(refname:short)"]).trim(), "main");
    // Without --provision the same root is a plain worktree, as before.
    let plain = p.env.repo_root("git-overlay", r, &[]);
    assert_eq!(plain["backend"], "worktree", "{plain}");
    p.env.ok(&["root", "destroy", plain["id"].as_str().unwrap()]);
}
