//! The console's static files: a content-hashed asset is cached for a year as
//! immutable, any file is sent as its build-time brotli or gzip twin when the
//! browser takes it, and pages are never kept without asking again.
//!
//! The hashes come from the build (`scripts/fingerprint.mjs` writes
//! `<site root>/hash.txt`); Leptos reads the same file to name the bundle.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;
use leptos::config::LeptosOptions;
use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use tollgate_app::core::state::AppState;
use tower::ServiceExt;
use tower_http::services::ServeDir;

/// The build's list of content hashes, in the site root.
pub const HASH_FILE: &str = "hash.txt";

/// A year: the file behind a hashed name never changes.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
/// A name that keeps its place across builds: ask again each time (a 304 when unchanged).
const REVALIDATE: HeaderValue = HeaderValue::from_static("no-cache");
/// Pages carry the signed-in user's data and name the current bundle.
const PAGE: HeaderValue = HeaderValue::from_static("no-cache, private");

/// Tells Leptos to name the bundle by the build's hashes when the build wrote
/// them. Leptos joins `hash_file` to the binary's directory, so the path is
/// made absolute; without the file the plain names stay (a `cargo leptos`
/// build without hashing), as Leptos would panic on a hash file it cannot read.
pub fn use_hashed_names(options: &mut LeptosOptions) {
    let path = Path::new(options.site_root.as_ref()).join(HASH_FILE);
    if let Ok(path) = std::path::absolute(path) {
        if path.is_file() {
            options.hash_files = true;
            options.hash_file = path.to_string_lossy().as_ref().into();
        }
    }
}

/// The content hashes of a build's assets.
#[derive(Clone, Debug, Default)]
pub struct Hashes(Arc<HashSet<String>>);

impl Hashes {
    /// Reads `hash.txt` (`key: hash` a line); none when the build wrote none.
    pub fn read(site_root: &Path) -> Hashes {
        match std::fs::read_to_string(site_root.join(HASH_FILE)) {
            Ok(text) => Hashes::parse(&text),
            Err(_) => Hashes::default(),
        }
    }

    fn parse(text: &str) -> Hashes {
        let hashes = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(_, h)| h.trim())
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        Hashes(Arc::new(hashes))
    }

    /// Whether a path names a hashed file: `name.<hash>.ext`, the hash one of the build's.
    pub fn names(&self, path: &str) -> bool {
        let file = path.rsplit('/').next().unwrap_or_default();
        let mut parts = file.split('.');
        parts.next();
        let inner: Vec<&str> = parts.collect();
        // The last part is the extension; a hash sits between name and extension.
        inner
            .split_last()
            .is_some_and(|(_, middle)| middle.iter().any(|p| self.0.contains(*p)))
    }
}

type NotFound = Pin<Box<dyn Future<Output = Response<Body>> + Send + 'static>>;

/// The console's fallback: a file of the site when there is one (its twin by
/// `Accept-Encoding`, with its caching), else `not_found` (the console's 404 page).
pub fn files_or<F>(
    options: &LeptosOptions,
    not_found: F,
) -> impl Fn(Uri, State<AppState>, Request) -> NotFound + Clone + Send + Sync + 'static
where
    F: Fn(Uri, State<AppState>, Request) -> NotFound + Clone + Send + Sync + 'static,
{
    let root = options.site_root.to_string();
    let hashes = Hashes::read(Path::new(&root));
    let files = ServeDir::new(&root).precompressed_br().precompressed_gzip();
    move |uri: Uri, state: State<AppState>, req: Request| {
        let (files, hashes, not_found) = (files.clone(), hashes.clone(), not_found.clone());
        Box::pin(async move {
            // ServeDir reads the method and headers (encodings, conditional
            // and range requests); the request itself goes on if no file answers.
            let mut probe = Request::new(Body::empty());
            *probe.method_mut() = req.method().clone();
            *probe.uri_mut() = uri.clone();
            *probe.headers_mut() = req.headers().clone();
            let res = match files.oneshot(probe).await {
                Ok(res) => res,
                Err(never) => match never {},
            };
            match res.status() {
                StatusCode::OK
                | StatusCode::PARTIAL_CONTENT
                | StatusCode::NOT_MODIFIED
                | StatusCode::RANGE_NOT_SATISFIABLE => {
                    let mut res = res.map(Body::new);
                    let cache = if hashes.names(uri.path()) {
                        IMMUTABLE
                    } else {
                        REVALIDATE
                    };
                    let headers = res.headers_mut();
                    headers.insert(header::CACHE_CONTROL, cache);
                    headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
                    res
                }
                _ => not_found(uri, state, req).await,
            }
        })
    }
}

/// Pages (HTML without a caching of their own) are asked for again each time.
pub async fn pages_not_kept(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let html = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html && !res.headers().contains_key(header::CACHE_CONTROL) {
        res.headers_mut().insert(header::CACHE_CONTROL, PAGE);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_hashed_only_by_a_hash_of_the_build() {
        let h = Hashes::parse("js: 0123456789abcdef\nwasm: fedcba9876543210\n\ncss:\n");
        assert!(h.names("/pkg/tollgate.0123456789abcdef.js"));
        assert!(h.names("/pkg/tollgate.fedcba9876543210.wasm"));
        assert!(!h.names("/pkg/tollgate.css"));
        assert!(!h.names("/pkg/tollgate.js"));
        // The hash as a name or an extension is not a hashed name.
        assert!(!h.names("/pkg/0123456789abcdef.js"));
        assert!(!h.names("/pkg/tollgate.0123456789abcdef"));
        assert!(!h.names("/pkg/tollgate.0000000000000000.js"));
        assert!(!Hashes::default().names("/pkg/tollgate.0123456789abcdef.js"));
    }
}
