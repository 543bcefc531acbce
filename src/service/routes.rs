//! The routes under `/v1` (docs/api.md, docs/openapi.yaml): each parses its request, applies the
//! library's caller rules (`execroot::root::caller`) and answers with the library's own types.
//! Every library call blocks: a long one runs on tokio's blocking pool, a short one (create,
//! destroy, health) in place on its worker, which hands its other tasks on (`block_in_place`).
//!
//! Request bodies are the service's argument parsing (as clap's structs are the CLI's): camelCase,
//! unknown fields refused, converted to the library's requests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use execroot::backend::BackendKind;
use execroot::error::Error;
use execroot::policy::{Availability, Class};
use execroot::root::exec::ExecRequest;
use execroot::root::pool::RootPool;
use execroot::root::{CreateRequest, Destroyed};
use execroot::store::ingest::IngestOptions;
use execroot::store::snapshot::SnapshotRemoved;
use execroot::Store;

use super::auth::Who;
use super::errors::ApiError;

/// Largest JSON request body, in bytes (413 past it).
pub const JSON_LIMIT: usize = 1 << 20;
/// Largest tar body of `POST /v1/snapshots`, in bytes (413 past it).
pub const TAR_LIMIT: usize = 1 << 30;

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    /// The store served.
    pub store: Arc<Store>,
    /// Overlay root skeletons made ahead, which creates claim (`execroot::root::pool`).
    pub pool: Option<Arc<RootPool>>,
}

type Answer<T> = Result<T, ApiError>;

/// Run a library call on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> execroot::Result<T> + Send + 'static) -> Answer<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("the operation failed: {e}"))),
    }
}

/// Run a short library call (a root's create or destroy, well under a millisecond of work) on
/// the worker that parsed the request, which hands its other tasks to another thread meanwhile
/// (`block_in_place`): no hop to the blocking pool and back, whose two thread wake-ups cost more
/// than the call itself on a busy machine. Long calls (ingest, exec, gc) use [`blocking`].
fn inline<T>(f: impl FnOnce() -> execroot::Result<T>) -> Answer<T> {
    tokio::task::block_in_place(f).map_err(ApiError::from)
}

/// A JSON body: at most [`JSON_LIMIT`] bytes (413), unknown fields refused, and a message that
/// names the field at fault (400). An empty body is `{}`.
pub struct Body<T>(pub T);

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Answer<T> {
    if bytes.len() > JSON_LIMIT {
        return Err(too_large(JSON_LIMIT));
    }
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { bytes };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            ApiError::bad_input(format!("request body: {}", e.inner()))
        } else {
            ApiError::bad_input(format!("{path}: {}", e.inner()))
        }
    })
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", format!("the request body is larger than {limit} bytes"))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Answer<Self> {
        let bytes = body_bytes(req, state, JSON_LIMIT).await?;
        parse_json(&bytes).map(Body)
    }
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S, limit: usize) -> Answer<Bytes> {
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(limit)
        } else {
            ApiError::bad_input(format!("request body: {}", r.body_text()))
        }
    })
}

/// Query parameters, unknown ones refused (400 naming them).
pub struct Query<T>(pub T);

fn parse_query<T: DeserializeOwned>(uri: &Uri) -> Answer<T> {
    serde_urlencoded::from_str(uri.query().unwrap_or_default()).map_err(|e| ApiError::bad_input(format!("query: {e}")))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Answer<Self> {
        parse_query(&parts.uri).map(Query)
    }
}

/// `GET /v1/health`.
#[derive(Serialize)]
pub struct Health {
    /// Always true: the service answers.
    pub ok: bool,
    /// execroot's version.
    pub version: &'static str,
    /// Whether overlay roots can be made, and why not.
    pub overlay: Availability,
}

async fn health(State(app): State<App>) -> Answer<Json<Health>> {
    let overlay = inline(|| Ok(execroot::policy::availability(BackendKind::Overlay, app.store.path())))?;
    Ok(Json(Health { ok: true, version: env!("CARGO_PKG_VERSION"), overlay }))
}

/// A `mounts` item of `POST /v1/roots`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MountBody {
    path: String,
    from: String,
}

/// `from`: one snapshot (id or ref) or a list, bottom first.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The body of `POST /v1/roots` (the CLI's `root create` flags).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    class: Class,
    from: Option<OneOrMany>,
    key: Option<String>,
    owner: Option<String>,
    backend: Option<String>,
    repo: Option<PathBuf>,
    base_ref: Option<String>,
    branch: Option<String>,
    #[serde(default)]
    mounts: Vec<MountBody>,
    #[serde(default)]
    durable: bool,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    provision: Option<execroot::root::provision::ProvisionRequest>,
}

impl CreateBody {
    fn request(self) -> Answer<CreateRequest> {
        let backend = match self.backend.as_deref() {
            None | Some("auto") => None,
            Some(b) => Some(BackendKind::ALL.into_iter().find(|k| k.as_str() == b).ok_or_else(|| {
                ApiError::bad_input(format!("backend: {b:?} is not one of auto, overlay, copy, worktree, git-overlay"))
            })?),
        };
        let mut mounts = Vec::new();
        for (i, m) in self.mounts.into_iter().enumerate() {
            if m.path.contains('=') {
                return Err(ApiError::bad_input(format!("mounts[{i}].path: must not contain '='")));
            }
            mounts.push(format!("{}={}", m.path, m.from));
        }
        Ok(CreateRequest {
            class: Some(self.class),
            from: match self.from {
                None => vec![],
                Some(OneOrMany::One(s)) => vec![s],
                Some(OneOrMany::Many(v)) => v,
            },
            mounts,
            backend,
            key: self.key,
            owner: self.owner,
            durable: self.durable,
            repo: self.repo,
            base_ref: self.base_ref,
            branch: self.branch,
            labels: self.labels,
            provision: self.provision,
        })
    }
}

async fn create_root(State(app): State<App>, Who(c): Who, Body(b): Body<CreateBody>) -> Answer<Response> {
    let req = b.request()?;
    let created = inline(|| app.store.create_root_for_in(&c, &req, app.pool.as_deref()))?;
    let status = if created.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(created)).into_response())
}

async fn list_roots(State(app): State<App>, Who(c): Who) -> Answer<Response> {
    Ok(Json(blocking(move || app.store.list_roots_for(&c)).await?).into_response())
}

async fn show_root(State(app): State<App>, Who(c): Who, Path(root): Path<String>) -> Answer<Response> {
    let v = blocking(move || {
        let rec = app.store.find_root_for(&c, &root)?;
        app.store.show_root(&rec.id)
    })
    .await?;
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceQuery {
    #[serde(default)]
    force: bool,
}

/// 200 when destroyed; 409 with the same document when refused (in use, or work would be lost).
async fn destroy_root(
    State(app): State<App>,
    Who(c): Who,
    Path(root): Path<String>,
    Query(q): Query<ForceQuery>,
) -> Answer<Response> {
    let d = inline(|| {
        let rec = app.store.find_root_for(&c, &root)?;
        match app.store.destroy_root(&rec.id, q.force) {
            Err(Error::Conflict(why)) => Ok(Destroyed { cleaned_path: rec.cwd, cleaned: false, warnings: vec![why] }),
            other => other,
        }
    })?;
    let status = if d.cleaned { StatusCode::OK } else { StatusCode::CONFLICT };
    Ok((status, Json(d)).into_response())
}

async fn diff_root(State(app): State<App>, Who(c): Who, Path(root): Path<String>) -> Answer<Response> {
    let d = blocking(move || {
        let rec = app.store.find_root_for(&c, &root)?;
        app.store.diff_root(&rec.id)
    })
    .await?;
    Ok(Json(d).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CommitBody {
    name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

async fn commit_root(
    State(app): State<App>,
    Who(c): Who,
    Path(root): Path<String>,
    Body(b): Body<CommitBody>,
) -> Answer<Response> {
    Ok(Json(blocking(move || app.store.commit_root_for(&c, &root, b.name, b.labels)).await?).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExportBody {
    dest: Option<PathBuf>,
    #[serde(default)]
    changed_only: bool,
}

/// To `dest`: the report. Without `dest`: the tar stream itself (`application/x-tar`).
async fn export_root(
    State(app): State<App>,
    Who(c): Who,
    Path(root): Path<String>,
    Body(b): Body<ExportBody>,
) -> Answer<Response> {
    if let Some(dest) = b.dest {
        let r =
            blocking(move || app.store.export_root_for(&c, &root, Some(&dest), b.changed_only, &mut std::io::sink()))
                .await?;
        return Ok(Json(r).into_response());
    }
    let tar = blocking(move || {
        let mut out = Vec::new();
        app.store.export_root_for(&c, &root, None, b.changed_only, &mut out)?;
        Ok(out)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], tar).into_response())
}

async fn exec_root(
    State(app): State<App>,
    Who(c): Who,
    Path(root): Path<String>,
    Body(req): Body<ExecRequest>,
) -> Answer<Response> {
    let r = blocking(move || {
        let rec = app.store.find_root_for(&c, &root)?;
        app.store.exec_root(&rec.id, &req)
    })
    .await?;
    Ok(Json(r).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IngestBody {
    path: PathBuf,
    name: Option<String>,
    #[serde(default)]
    shared: bool,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    skip_special: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TarQuery {
    name: Option<String>,
    shared: Option<bool>,
}

/// Ingest a path (JSON body) or the tar archive that is the body (`application/x-tar`).
async fn create_snapshot(State(app): State<App>, Who(c): Who, req: Request) -> Answer<Response> {
    let is_tar = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim() == "application/x-tar");
    let store = app.store.clone();
    let report = if is_tar {
        let q: TarQuery = parse_query(req.uri())?;
        let bytes = body_bytes(req, &(), TAR_LIMIT).await?;
        let opts = IngestOptions { name: q.name, ..Default::default() };
        blocking(move || {
            store.ingest_tar_for(&c, std::io::Cursor::new(bytes), "request body", &opts, q.shared.unwrap_or(false))
        })
        .await?
    } else {
        let bytes = body_bytes(req, &(), TAR_LIMIT).await?;
        let b: IngestBody = parse_json(&bytes)?;
        let opts = IngestOptions { name: b.name, labels: b.labels, skip_special: b.skip_special, exclude: vec![] };
        blocking(move || store.ingest_dir_for(&c, &b.path, &opts, b.shared)).await?
    };
    Ok((StatusCode::CREATED, Json(report)).into_response())
}

async fn list_snapshots(State(app): State<App>, Who(c): Who) -> Answer<Response> {
    Ok(Json(blocking(move || app.store.snapshot_list_for(&c)).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntriesQuery {
    #[serde(default)]
    entries: bool,
}

async fn show_snapshot(
    State(app): State<App>,
    Who(c): Who,
    Path(snapshot): Path<String>,
    Query(q): Query<EntriesQuery>,
) -> Answer<Response> {
    let info = blocking(move || app.store.snapshot_info_for(&c, &snapshot, q.entries)).await?;
    Ok(Json(info).into_response())
}

async fn remove_snapshot(
    State(app): State<App>,
    Who(c): Who,
    Path(snapshot): Path<String>,
    Query(q): Query<ForceQuery>,
) -> Answer<Response> {
    let r = blocking(move || {
        c.require_privileged(&app.store, "snapshot rm")?;
        let id = app.store.resolve(&snapshot)?;
        let refs_removed = app.store.remove_snapshot(&id, q.force)?;
        Ok(SnapshotRemoved { removed: id, refs_removed })
    })
    .await?;
    Ok(Json(r).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GcBody {
    /// Keep snapshots younger than this many seconds (the CLI's `--grace`, default 1h).
    grace_seconds: Option<u64>,
    #[serde(default)]
    dry_run: bool,
}

async fn gc(State(app): State<App>, Who(c): Who, Body(b): Body<GcBody>) -> Answer<Response> {
    let r = blocking(move || {
        c.require_privileged(&app.store, "gc")?;
        app.store.gc(std::time::Duration::from_secs(b.grace_seconds.unwrap_or(3600)), b.dry_run)
    })
    .await?;
    Ok(Json(r).into_response())
}

async fn df(State(app): State<App>, Who(c): Who) -> Answer<Response> {
    let r = blocking(move || {
        c.require_privileged(&app.store, "df")?;
        app.store.df()
    })
    .await?;
    Ok(Json(r).into_response())
}

async fn doctor(State(app): State<App>, Who(c): Who) -> Answer<Response> {
    let r = blocking(move || {
        c.require_privileged(&app.store, "doctor")?;
        app.store.doctor(false)
    })
    .await?;
    Ok(Json(r).into_response())
}

async fn doctor_repair(State(app): State<App>, Who(c): Who, Body(_): Body<Empty>) -> Answer<Response> {
    let r = blocking(move || {
        c.require_privileged(&app.store, "doctor repair")?;
        app.store.doctor(true)
    })
    .await?;
    Ok(Json(r).into_response())
}

/// `POST /v1/push`: the CLI's `push SNAPSHOT TARGET [--insecure HOST]...`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PushBody {
    snapshot: String,
    target: String,
    #[serde(default)]
    insecure: Vec<String>,
}

/// Registry operations use the service's own credentials (its docker config), so they are
/// privileged only.
async fn push(State(app): State<App>, Who(c): Who, Body(b): Body<PushBody>) -> Answer<Response> {
    let r = blocking(move || {
        c.require_privileged(&app.store, "push")?;
        let target = execroot::remote::Reference::parse(&b.target)?;
        let opts = execroot::remote::ClientOptions { insecure: b.insecure };
        execroot::remote::push::push(&app.store, &b.snapshot, &target, &opts)
    })
    .await?;
    Ok(Json(r).into_response())
}

/// `POST /v1/pull`: the CLI's `pull SOURCE [--name REF] [--insecure HOST]...`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PullBody {
    source: String,
    name: Option<String>,
    #[serde(default)]
    insecure: Vec<String>,
}

async fn pull(State(app): State<App>, Who(c): Who, Body(b): Body<PullBody>) -> Answer<Response> {
    let r = blocking(move || {
        c.require_privileged(&app.store, "pull")?;
        let source = execroot::remote::Reference::parse(&b.source)?;
        let opts = execroot::remote::PullOptions {
            name: b.name,
            client: execroot::remote::ClientOptions { insecure: b.insecure },
        };
        execroot::remote::pull::pull(&app.store, &source, &opts)
    })
    .await?;
    Ok(Json(r).into_response())
}

/// `GET /v1/remote?repo=REGISTRY/REPO[&insecure=HOST,HOST]`: the CLI's `remote ls`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteQuery {
    repo: String,
    #[serde(default)]
    insecure: String,
}

async fn remote_ls(State(app): State<App>, Who(c): Who, Query(q): Query<RemoteQuery>) -> Answer<Response> {
    let r = blocking(move || {
        c.require_privileged(&app.store, "remote ls")?;
        let repo = execroot::remote::Reference::parse(&q.repo)?;
        let insecure = q.insecure.split(',').filter(|h| !h.is_empty()).map(str::to_string).collect();
        execroot::remote::list::list(&repo, &execroot::remote::ClientOptions { insecure })
    })
    .await?;
    Ok(Json(r).into_response())
}

/// A body that must be empty or `{}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-found", format!("no route {method} {}", uri.path()))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

/// Every route the service serves: (method, path, handler). The router is built from this table
/// alone, and a test holds docs/openapi.yaml to it.
pub fn table() -> Vec<(Method, &'static str, MethodRouter<App>)> {
    vec![
        (Method::GET, "/v1/health", get(health)),
        (Method::POST, "/v1/snapshots", post(create_snapshot).layer(DefaultBodyLimit::max(TAR_LIMIT))),
        (Method::GET, "/v1/snapshots", get(list_snapshots)),
        (Method::GET, "/v1/snapshots/{snapshot}", get(show_snapshot)),
        (Method::DELETE, "/v1/snapshots/{snapshot}", delete(remove_snapshot)),
        (Method::POST, "/v1/roots", post(create_root)),
        (Method::GET, "/v1/roots", get(list_roots)),
        (Method::GET, "/v1/roots/{root}", get(show_root)),
        (Method::DELETE, "/v1/roots/{root}", delete(destroy_root)),
        (Method::GET, "/v1/roots/{root}/diff", get(diff_root)),
        (Method::POST, "/v1/roots/{root}/commit", post(commit_root)),
        (Method::POST, "/v1/roots/{root}/export", post(export_root)),
        (Method::POST, "/v1/roots/{root}/exec", post(exec_root)),
        (Method::POST, "/v1/gc", post(gc)),
        (Method::GET, "/v1/df", get(df)),
        (Method::GET, "/v1/doctor", get(doctor)),
        (Method::POST, "/v1/doctor/repair", post(doctor_repair)),
        (Method::POST, "/v1/push", post(push)),
        (Method::POST, "/v1/pull", post(pull)),
        (Method::GET, "/v1/remote", get(remote_ls)),
    ]
}

/// The service's router.
pub fn router(app: App) -> Router {
    let mut r = Router::new();
    for (_, path, mr) in table() {
        r = r.route(path, mr);
    }
    r.fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .with_state(app)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// docs/openapi.yaml documents exactly the routes the router serves.
    #[test]
    fn openapi_lists_every_route() {
        let doc = include_str!("../../docs/openapi.yaml");
        let mut documented = BTreeSet::new();
        let mut path: Option<String> = None;
        for line in doc.lines() {
            if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
                path = Some(format!("/{p}"));
            } else if !line.starts_with("  ") {
                path = None;
            } else if let (Some(p), Some(m)) = (&path, line.strip_prefix("    ").and_then(|l| l.strip_suffix(':'))) {
                if ["get", "post", "put", "patch", "delete"].contains(&m) {
                    documented.insert((m.to_uppercase(), p.clone()));
                }
            }
        }
        let served: BTreeSet<(String, String)> =
            super::table().into_iter().map(|(m, p, _)| (m.to_string(), p.to_string())).collect();
        assert_eq!(documented, served, "docs/openapi.yaml and the router disagree");
    }
}
