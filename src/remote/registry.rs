//! A small client of the OCI distribution API (blocking, over `ureq`): tags, manifests, blob
//! HEAD / GET / ranged GET, and uploads (POST then PUT with the digest). It answers challenges
//! (`WWW-Authenticate: Basic` and `Bearer` token flows) with the credentials of
//! [`crate::remote::auth`], and counts its requests and bytes for the reports.
//!
//! Errors: 404 is [`Error::NotFound`]; 401/403 after answering the challenge are
//! [`Error::Forbidden`]; a digest that does not match what arrived is [`Error::Corrupt`]; a
//! dropped connection and server errors are [`Error::Io`] naming the URL (a rerun resumes).

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::pathenc::show;
use crate::remote::auth::Credentials;
use crate::remote::reference::Reference;
use crate::remote::wire;

/// Request and byte counts of one operation.
#[derive(Default, Debug)]
pub struct Counters {
    /// HTTP requests sent (authentication round trips included).
    pub requests: AtomicU64,
    /// Request body bytes sent.
    pub sent: AtomicU64,
    /// Response body bytes received.
    pub received: AtomicU64,
}

/// How to reach registries.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Registries (`host` or `host:port`) reached over plain HTTP; loopback always is.
    pub insecure: Vec<String>,
}

/// A connection to one repository of one registry.
pub struct Registry {
    agent: ureq::Agent,
    base: String,
    repo: String,
    name: String,
    creds: Option<Credentials>,
    authz: Mutex<Option<String>>,
    stall: Duration,
    /// What this client sent and received.
    pub counters: Counters,
}

/// A response, read whole.
struct Resp {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Registry {
    /// A client for `r`'s repository, with the credentials configured for its registry.
    pub fn connect(r: &Reference, opts: &ClientOptions) -> Result<Registry> {
        let scheme = if r.plain_http(&opts.insecure) { "http" } else { "https" };
        let stall = stall_timeout()?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(stall.min(Duration::from_secs(30))))
            .timeout_recv_response(Some(stall.max(Duration::from_secs(300)).min(stall * 5)))
            // A registry that stops sending (or receiving) in the middle of a body is given up
            // on after `stall` of silence, however long the whole transfer may take.
            .timeout_per_read(Some(stall))
            .timeout_per_write(Some(stall))
            .max_redirects(5)
            // Registries send blob GETs to their storage (another host, a signed URL): follow,
            // but never with our credentials.
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
            // The system's CA store (and its settings), as other tools on the host trust: an
            // organisation's registry is often signed by its own CA.
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::PlatformVerifier).build())
            .build()
            .into();
        Ok(Registry {
            agent,
            base: format!("{scheme}://{}", r.registry),
            repo: r.repository.clone(),
            name: r.repo_name(),
            creds: crate::remote::auth::lookup(&r.registry)?,
            authz: Mutex::new(None),
            stall,
            counters: Counters::default(),
        })
    }

    /// `REGISTRY/REPO`, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `url` is on this registry (same scheme, host and port): only those requests
    /// carry its credentials, whatever a `Location` or `Link` header points at.
    fn own(&self, url: &str) -> bool {
        url.strip_prefix(&self.base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.base, self.repo)
    }

    /// Send one request, answering an authentication challenge (at most twice: a token's
    /// scope may need widening for a push).
    fn send(&self, method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>, limit: u64) -> Result<Resp> {
        let mut tried = 0;
        loop {
            let authz = self.authz.lock().expect("not poisoned").clone().filter(|_| self.own(url));
            let resp = self.send_once(method, url, headers, body, authz.as_deref(), limit)?;
            if !self.own(url) {
                // No challenge is answered for another host: our credentials are for this one.
                return Ok(resp);
            }
            if resp.status != 401 || tried == 2 {
                if resp.status == 401 || resp.status == 403 {
                    return Err(self.refused(&resp));
                }
                return Ok(resp);
            }
            tried += 1;
            let challenge = resp.header("www-authenticate").unwrap_or("").to_string();
            let new = self.answer(&challenge)?;
            if tried > 1 && authz.as_deref() == Some(new.as_str()) {
                return Err(self.refused(&resp));
            }
            *self.authz.lock().expect("not poisoned") = Some(new);
        }
    }

    fn refused(&self, resp: &Resp) -> Error {
        let who = match &self.creds {
            Some(c) => format!("the credentials of user {:?} (docker config)", c.username),
            None => "no credentials (none configured in the docker config)".to_string(),
        };
        Error::Forbidden(format!(
            "registry {} refused access to {} with {who}: HTTP {}{}",
            self.base,
            self.name,
            resp.status,
            registry_message(&resp.body)
        ))
    }

    /// The `Authorization` value that answers `challenge`.
    fn answer(&self, challenge: &str) -> Result<String> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => match &self.creds {
                Some(c) => Ok(c.basic()),
                None => Err(Error::Forbidden(format!(
                    "registry {} asks for credentials for {} and none are configured (docker config: \
                     auths, credHelpers or credsStore)",
                    self.base, self.name
                ))),
            },
            "bearer" => self.token(&parse_params(params)),
            _ => Err(Error::Forbidden(format!(
                "registry {} asks for unsupported authentication {}",
                self.base,
                show(challenge.as_bytes())
            ))),
        }
    }

    /// The distribution token flow: GET the realm with service and scope (and basic
    /// credentials when configured); the answer's `token` (or `access_token`) is the bearer.
    fn token(&self, p: &[(String, String)]) -> Result<String> {
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let realm = get("realm")
            .ok_or_else(|| Error::Forbidden(format!("registry {}: bearer challenge without realm", self.base)))?;
        // The token service gets the credentials: never in clear for a registry reached over
        // HTTPS, whatever realm its challenge names.
        if self.base.starts_with("https://") && !realm.starts_with("https://") {
            return Err(Error::Forbidden(format!(
                "registry {}: its token service {} is not HTTPS; credentials are not sent there",
                self.base,
                show(realm.as_bytes())
            )));
        }
        let scope = get("scope").map(str::to_string).unwrap_or_else(|| format!("repository:{}:pull,push", self.repo));
        let mut url = format!("{realm}?scope={}", enc(&scope));
        if let Some(s) = get("service") {
            url.push_str(&format!("&service={}", enc(s)));
        }
        let basic = self.creds.as_ref().map(|c| c.basic());
        let resp = self.send_once("GET", &url, &[], None, basic.as_deref(), 1 << 20)?;
        if resp.status != 200 {
            return Err(self.refused(&resp));
        }
        #[derive(Deserialize)]
        struct Tok {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Tok = serde_json::from_slice(&resp.body).map_err(|e| {
            Error::Forbidden(format!("token service {}: unexpected answer: {e}", show(realm.as_bytes())))
        })?;
        t.token
            .or(t.access_token)
            .map(|t| format!("Bearer {t}"))
            .ok_or_else(|| Error::Forbidden(format!("token service {} gave no token", show(realm.as_bytes()))))
    }

    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        authz: Option<&str>,
        limit: u64,
    ) -> Result<Resp> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let io = |e: ureq::Error| self.http_error(method, url, e);
        macro_rules! build {
            ($b:expr) => {{
                let mut b = $b;
                for (k, v) in headers {
                    b = b.header(*k, *v);
                }
                if let Some(a) = authz {
                    b = b.header("Authorization", a);
                }
                b
            }};
        }
        let result = match method {
            "GET" => build!(self.agent.get(url)).call(),
            "HEAD" => build!(self.agent.head(url)).call(),
            "DELETE" => build!(self.agent.delete(url)).call(),
            "PUT" | "POST" | "PATCH" => {
                let b = match method {
                    "PUT" => self.agent.put(url),
                    "POST" => self.agent.post(url),
                    _ => self.agent.patch(url),
                };
                let data = body.unwrap_or(&[]);
                self.counters.sent.fetch_add(data.len() as u64, Ordering::Relaxed);
                build!(b).send(data)
            }
            other => unreachable!("method {other}"),
        };
        let mut resp = result.map_err(io)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = if method == "HEAD" {
            Vec::new()
        } else {
            resp.body_mut().with_config().limit(limit).read_to_vec().map_err(io)?
        };
        self.counters.received.fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(Resp { status, headers, body })
    }

    /// A failed exchange, as an I/O error naming the request (a rerun resumes).
    fn http_error(&self, method: &str, url: &str, e: ureq::Error) -> Error {
        let why = match &e {
            ureq::Error::BodyExceedsLimit(n) => {
                format!("the registry answered with more than the {} bytes this request can take", n.saturating_sub(1))
            }
            ureq::Error::Timeout(_) => format!("the registry timed out: silent for {} s ({e})", self.stall.as_secs()),
            _ => e.to_string(),
        };
        Error::io(PathBuf::from(format!("{method} {url}")), std::io::Error::other(why))
    }

    fn unexpected(&self, what: &str, resp: &Resp) -> Error {
        let msg = format!("{what} in {}: HTTP {}{}", self.name, resp.status, registry_message(&resp.body));
        match resp.status {
            404 => Error::NotFound(msg),
            400..=499 => Error::BadInput(msg),
            _ => Error::io(PathBuf::from(&self.base), std::io::Error::other(msg)),
        }
    }

    /// Every tag of the repository (none when the repository does not exist yet).
    pub fn tags(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Tags {
            tags: Option<Vec<String>>,
        }
        let mut out = Vec::new();
        let mut url = self.url("tags/list?n=1000");
        let mut seen = std::collections::HashSet::new();
        loop {
            // A registry that links page after page (or back to a page) is not listing tags.
            if !seen.insert(url.clone()) || seen.len() > MAX_TAG_PAGES {
                return Err(Error::Corrupt(format!(
                    "tag list of {}: more than {MAX_TAG_PAGES} pages, or a page links back ({url})",
                    self.name
                )));
            }
            let resp = self.send("GET", &url, &[("Accept", "application/json")], None, 64 << 20)?;
            if resp.status == 404 {
                return Ok(out);
            }
            if resp.status != 200 {
                return Err(self.unexpected("listing tags", &resp));
            }
            let t: Tags = serde_json::from_slice(&resp.body)
                .map_err(|e| Error::Corrupt(format!("tag list of {}: {e}", self.name)))?;
            let page = t.tags.unwrap_or_default();
            // A tag goes into URLs (`manifests/TAG`): one no registry could hold (`../x`, `?`)
            // would aim the request elsewhere.
            if let Some(bad) = page.iter().find(|t| !crate::remote::reference::valid_tag(t)) {
                return Err(Error::Corrupt(format!(
                    "tag list of {} holds an invalid tag {}",
                    self.name,
                    show(bad.as_bytes())
                )));
            }
            out.extend(page);
            // RFC 5988 pagination: `Link: </v2/...?last=x&n=1000>; rel="next"`.
            match resp.header("link").and_then(|l| l.split_once('<')).and_then(|(_, r)| r.split_once('>')) {
                Some((next, _)) => url = self.absolute(next),
                None => break,
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// `loc` (a `Location` or `Link` target) as a URL: relative ones are on this registry.
    fn absolute(&self, loc: &str) -> String {
        if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_string()
        } else {
            format!("{}{loc}", self.base)
        }
    }

    /// A manifest by tag or digest: its bytes and digest, `None` when there is none. The
    /// bytes are checked against the digest when fetched by digest, and against the size cap.
    pub fn get_manifest(&self, reference: &str) -> Result<Option<(Vec<u8>, String)>> {
        let accept = format!("{},{}", wire::MANIFEST_MEDIA_TYPE, "application/vnd.oci.image.index.v1+json");
        let resp = self.send(
            "GET",
            &self.url(&format!("manifests/{reference}")),
            &[("Accept", &accept)],
            None,
            wire::MAX_MANIFEST as u64 + 1,
        )?;
        if resp.status == 404 {
            return Ok(None);
        }
        if resp.status != 200 {
            return Err(self.unexpected(&format!("fetching manifest {reference}"), &resp));
        }
        if resp.body.len() > wire::MAX_MANIFEST {
            return Err(Error::Corrupt(format!("manifest {reference} of {} is over 4 MiB", self.name)));
        }
        let digest = wire::sha256_digest(&resp.body);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(Error::Corrupt(format!("manifest {reference} of {} arrived with digest {digest}", self.name)));
        }
        Ok(Some((resp.body, digest)))
    }

    /// The digest of the manifest `reference` names, `None` when there is none.
    pub fn head_manifest(&self, reference: &str) -> Result<Option<String>> {
        let resp = self.send(
            "HEAD",
            &self.url(&format!("manifests/{reference}")),
            &[("Accept", wire::MANIFEST_MEDIA_TYPE)],
            None,
            0,
        )?;
        match resp.status {
            200 => Ok(resp.header("docker-content-digest").map(str::to_string)),
            404 => Ok(None),
            _ => Err(self.unexpected(&format!("checking manifest {reference}"), &resp)),
        }
    }

    /// Write a manifest under `reference` (a tag, or its own digest).
    pub fn put_manifest(&self, reference: &str, bytes: &[u8]) -> Result<()> {
        let resp = self.send(
            "PUT",
            &self.url(&format!("manifests/{reference}")),
            &[("Content-Type", wire::MANIFEST_MEDIA_TYPE)],
            Some(bytes),
            1 << 20,
        )?;
        if resp.status != 201 && resp.status != 200 {
            return Err(self.unexpected(&format!("writing manifest {reference}"), &resp));
        }
        Ok(())
    }

    /// Whether blob `digest` is in the repository.
    pub fn has_blob(&self, digest: &str) -> Result<bool> {
        let resp = self.send("HEAD", &self.url(&format!("blobs/{digest}")), &[], None, 0)?;
        match resp.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.unexpected(&format!("checking blob {digest}"), &resp)),
        }
    }

    /// Upload `bytes` as blob `digest` (which the caller computed from them): POST for an
    /// upload session, then one PUT with the whole content and the digest.
    pub fn upload_blob(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        let resp = self.send("POST", &self.url("blobs/uploads/"), &[], Some(&[]), 1 << 20)?;
        if resp.status != 202 {
            return Err(self.unexpected("starting a blob upload", &resp));
        }
        let loc = resp
            .header("location")
            .ok_or_else(|| Error::io(PathBuf::from(&self.base), std::io::Error::other("upload without Location")))?;
        let mut url = self.absolute(loc);
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={}", enc(digest)));
        let len = bytes.len().to_string();
        let resp = self.send(
            "PUT",
            &url,
            &[("Content-Type", "application/octet-stream"), ("Content-Length", &len)],
            Some(bytes),
            1 << 20,
        )?;
        match resp.status {
            201 | 204 => Ok(()),
            400 if registry_message(&resp.body).contains("DIGEST_INVALID") => {
                Err(Error::Corrupt(format!("registry {} says blob {digest} does not match its content", self.name)))
            }
            _ => Err(self.unexpected(&format!("uploading blob {digest}"), &resp)),
        }
    }

    /// Blob `digest`, whole, checked against its digest (and `size` when known).
    pub fn get_blob(&self, digest: &str, size: Option<u64>) -> Result<Vec<u8>> {
        let limit = size.map(|s| s.saturating_add(1)).unwrap_or(1 << 34);
        let resp = self.send("GET", &self.url(&format!("blobs/{digest}")), &[], None, limit)?;
        if resp.status != 200 {
            return Err(self.unexpected(&format!("fetching blob {digest}"), &resp));
        }
        let got = wire::sha256_digest(&resp.body);
        if got != digest || size.is_some_and(|s| s != resp.body.len() as u64) {
            return Err(Error::Corrupt(format!(
                "blob {digest} of {} arrived damaged ({} bytes, digest {got})",
                self.name,
                resp.body.len()
            )));
        }
        Ok(resp.body)
    }

    /// Bytes `start..end` of blob `digest`, which is `size` bytes long (a ranged GET; a
    /// registry that ignores the range and sends the whole blob is served from it). The answer
    /// is read no further than it can be right: a 206 must say (`Content-Range`, when given)
    /// that it is the range asked for.
    pub fn get_range(&self, digest: &str, start: u64, end: u64, size: u64) -> Result<Vec<u8>> {
        let range = format!("bytes={start}-{}", end - 1);
        let url = self.url(&format!("blobs/{digest}"));
        // Whether the range is honoured shows only in the answer: allow the whole blob when
        // holding it is reasonable, else no more than the range (a registry that ignores the
        // range of a huge blob then fails the read instead of filling memory).
        let limit = if size <= WHOLE_ANSWER_MAX { size + 1 } else { end - start + 1 };
        let resp = self.send("GET", &url, &[("Range", &range)], None, limit)?;
        let bad = |why: String| Error::Corrupt(format!("blob {digest} of {}: bytes {start}..{end}: {why}", self.name));
        let mut body = match resp.status {
            206 => {
                if let Some(cr) = resp.header("content-range") {
                    let want = format!("bytes {start}-{}/", end - 1);
                    if !cr.starts_with(&want) {
                        return Err(bad(format!("the registry answered with Content-Range {}", show(cr.as_bytes()))));
                    }
                }
                resp.body
            }
            200 if resp.body.len() as u64 == size => {
                resp.body.get(start as usize..end as usize).map(<[u8]>::to_vec).unwrap_or_default()
            }
            200 => return Err(bad(format!("the whole blob came instead, {} bytes, not {size}", resp.body.len()))),
            _ => return Err(self.unexpected(&format!("fetching bytes {start}..{end} of blob {digest}"), &resp)),
        };
        if body.len() as u64 != end - start {
            return Err(bad(format!("{} bytes arrived", body.len())));
        }
        body.truncate((end - start) as usize);
        Ok(body)
    }
}

/// Largest blob read whole when a registry ignores a Range header.
const WHOLE_ANSWER_MAX: u64 = 64 << 20;

/// Most pages of a tag list followed (of 1000 tags each).
const MAX_TAG_PAGES: usize = 1000;

/// How long a registry may stay silent in the middle of an exchange: 120 s, or
/// `EXECROOT_REMOTE_TIMEOUT` seconds.
fn stall_timeout() -> Result<Duration> {
    match std::env::var("EXECROOT_REMOTE_TIMEOUT") {
        Ok(v) if !v.is_empty() => match v.parse::<u64>() {
            Ok(s) if s > 0 => Ok(Duration::from_secs(s)),
            _ => Err(Error::BadInput(format!("EXECROOT_REMOTE_TIMEOUT={v:?} is not a number of seconds"))),
        },
        _ => Ok(Duration::from_secs(120)),
    }
}

impl Registry {
    /// Bytes `start..end` of blob `digest` as a stream, for a frame too large to hold: the
    /// answer must be a 206 for that range (a registry that ignores the range is refused
    /// rather than read through), and no more than the range is read from it.
    pub fn open_range(&self, digest: &str, start: u64, end: u64) -> Result<impl Read + '_> {
        let url = self.url(&format!("blobs/{digest}"));
        // Answer any challenge on a HEAD first: the GET itself is sent once, as it streams.
        self.send("HEAD", &url, &[], None, 0)?;
        let authz = self.authz.lock().expect("not poisoned").clone().filter(|_| self.own(&url));
        let range = format!("bytes={start}-{}", end - 1);
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let mut b = self.agent.get(&url).header("Range", &range);
        if let Some(a) = &authz {
            b = b.header("Authorization", a);
        }
        let mut resp = b.call().map_err(|e| self.http_error("GET", &url, e))?;
        let status = resp.status().as_u16();
        let bad = |why: String| Error::Corrupt(format!("blob {digest} of {}: bytes {start}..{end}: {why}", self.name));
        if status == 206 {
            let cr = resp.headers().get("content-range").and_then(|v| v.to_str().ok()).unwrap_or("");
            if !cr.is_empty() && !cr.starts_with(&format!("bytes {start}-{}/", end - 1)) {
                return Err(bad(format!("the registry answered with Content-Range {}", show(cr.as_bytes()))));
            }
            let body = resp.into_body().into_reader().take(end - start);
            return Ok(Counted { inner: body, received: &self.counters.received });
        }
        let headers = resp.headers().clone();
        let body = resp.body_mut().with_config().limit(1 << 20).read_to_vec().unwrap_or_default();
        let r = Resp { status, headers, body };
        match status {
            200 => Err(Error::io(
                PathBuf::from(format!("GET {url}")),
                std::io::Error::other("the registry ignored the Range of a large blob (answered 200)"),
            )),
            _ => Err(self.unexpected(&format!("fetching bytes {start}..{end} of blob {digest}"), &r)),
        }
    }
}

/// A response body that counts what it reads into [`Counters::received`].
struct Counted<'a, R> {
    inner: R,
    received: &'a AtomicU64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The registry's error codes and messages from an error body, for messages (` (CODE: msg)`).
fn registry_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errs {
        errors: Vec<E>,
    }
    #[derive(Deserialize)]
    struct E {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Errs>(body) {
        Ok(e) if !e.errors.is_empty() => {
            let parts: Vec<String> = e
                .errors
                .iter()
                .map(|x| {
                    // The registry's words, escaped: nothing it sends reaches a terminal raw.
                    let code = crate::pathenc::escape(x.code.as_deref().unwrap_or("?").as_bytes(), false);
                    format!("{code}: {}", show(x.message.as_deref().unwrap_or("").as_bytes()))
                })
                .collect();
            format!(" ({})", parts.join("; "))
        }
        _ => String::new(),
    }
}

/// `k="v", k2="v2"` of a challenge.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((k, r)) = rest.split_once('=') else { break };
        let (v, r) = if let Some(r) = r.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            (&r[..end], r.get(end + 1..).unwrap_or(""))
        } else {
            r.split_once(',').unwrap_or((r, ""))
        };
        out.push((k.trim().to_ascii_lowercase(), v.to_string()));
        rest = r.trim_start_matches([',', ' ']);
    }
    out
}

/// Percent-encode a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_params() {
        let p = parse_params(r#"realm="https://auth.example/token",service="reg",scope="repository:a/b:pull""#);
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull".into()));
        assert_eq!(enc("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
    }

    #[test]
    fn credentials_stay_with_the_registrys_origin() {
        let r = Reference::parse("registry.example:5000/team/x:v1").unwrap();
        let reg = Registry::connect(&r, &ClientOptions::default()).unwrap();
        assert!(reg.own("https://registry.example:5000/v2/team/x/blobs/uploads/u?x=1"));
        assert!(!reg.own("https://registry.example:50000/v2/"));
        assert!(!reg.own("https://registry.example:5000.evil/v2/"));
        assert!(!reg.own("http://registry.example:5000/v2/"));
        // A token service in clear for an HTTPS registry gets nothing (and is not even asked).
        let e = reg.token(&[("realm".into(), "http://auth.example/token".into())]).unwrap_err();
        assert!(matches!(&e, Error::Forbidden(m) if m.contains("not HTTPS")), "{e}");
    }
}
