//! Cross-site request defence for the console's server functions, beyond
//! SameSite=Lax: a call that can change something must come from the console's
//! own origin and in the one encoding the console sends.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tollgate_app::error::AppError;

/// What Leptos' server functions send (`PostUrl`, the default codec, and a
/// plain HTML form); the console uses no other.
const FORM: &str = "application/x-www-form-urlencoded";

/// The console's origin (`scheme://host[:port]`), from the public URL.
#[derive(Clone, Debug)]
pub struct ConsoleOrigin(pub String);

impl ConsoleOrigin {
    pub fn of_public_url(public_url: &str) -> ConsoleOrigin {
        let origin = url::Url::parse(public_url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| public_url.trim_end_matches('/').to_owned());
        ConsoleOrigin(origin)
    }
}

/// Refuses (403) a state-changing server-function call that a browser says
/// came from another site or origin, and (415) any body that is not a form.
/// Clients that are not browsers send neither `Origin` nor `Sec-Fetch-Site`
/// and carry no ambient cookie an attacker could borrow; they pass.
pub async fn same_origin(
    State(console): State<ConsoleOrigin>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let reads_only = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if reads_only || !req.uri().path().starts_with(tollgate_app::api::PREFIX) {
        return next.run(req).await;
    }
    // The playground posts a chat request as JSON: a content type no other
    // site can send without a CORS preflight, which this server never grants.
    let json_ok = req.uri().path() == tollgate_app::api::playground::CHAT_PATH;
    if let Err((status, error)) = verdict(&console.0, req.headers(), json_ok) {
        let body = serde_json::to_string(&error).unwrap_or_default();
        return (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    next.run(req).await
}

fn verdict(
    console: &str,
    headers: &HeaderMap,
    json_ok: bool,
) -> Result<(), (StatusCode, AppError)> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let forbidden = |message: &str| {
        (
            StatusCode::FORBIDDEN,
            AppError::Forbidden {
                permission: "same-origin request".to_owned(),
                message: message.to_owned(),
            },
        )
    };
    if let Some(site) = text("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return Err(forbidden("a request from another site is refused"));
        }
    }
    if let Some(origin) = text(header::ORIGIN.as_str()) {
        // The public URL, or the host the browser itself addressed (a console
        // reached by another name than the configured one) under the public
        // URL's scheme: plain http never drives an https console.
        let scheme = console.split_once("://").map_or("", |(s, _)| s);
        let addressed = text(header::HOST.as_str())
            .zip(origin.split_once("://"))
            .is_some_and(|(host, (their_scheme, authority))| {
                their_scheme.eq_ignore_ascii_case(scheme) && authority.eq_ignore_ascii_case(host)
            });
        if !origin.eq_ignore_ascii_case(console) && !addressed {
            return Err(forbidden("a request from another origin is refused"));
        }
    }
    if let Some(kind) = text(header::CONTENT_TYPE.as_str()) {
        let essence = kind.split(';').next().unwrap_or("").trim();
        let json = json_ok && essence.eq_ignore_ascii_case("application/json");
        if !essence.eq_ignore_ascii_case(FORM) && !json {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                AppError::Request {
                    message: format!("the console's functions take {FORM}"),
                },
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, axum::http::HeaderValue::from_static(v));
        }
        h
    }

    fn status(pairs: &[(&'static str, &'static str)]) -> u16 {
        match verdict("https://gw.example.com", &headers(pairs), false) {
            Ok(()) => 200,
            Err((status, _)) => status.as_u16(),
        }
    }

    #[test]
    fn origins_sites_and_encodings() {
        assert_eq!(status(&[]), 200);
        assert_eq!(status(&[("origin", "https://gw.example.com")]), 200);
        assert_eq!(
            status(&[
                ("origin", "https://127.0.0.1:3000"),
                ("host", "127.0.0.1:3000")
            ]),
            200
        );
        // The addressed host under plain http does not drive an https console.
        assert_eq!(
            status(&[
                ("origin", "http://gw.example.com"),
                ("host", "gw.example.com")
            ]),
            403
        );
        assert_eq!(status(&[("sec-fetch-site", "same-origin")]), 200);
        assert_eq!(status(&[("origin", "https://evil.test")]), 403);
        assert_eq!(status(&[("origin", "null")]), 403);
        assert_eq!(status(&[("sec-fetch-site", "same-site")]), 403);
        assert_eq!(status(&[("content-type", "text/plain")]), 415);
        assert_eq!(
            status(&[(
                "content-type",
                "application/x-www-form-urlencoded; charset=UTF-8"
            )]),
            200
        );
        let json = headers(&[("content-type", "application/json")]);
        assert!(verdict("https://gw.example.com", &json, false).is_err());
        assert!(verdict("https://gw.example.com", &json, true).is_ok());
        let plain = headers(&[("content-type", "text/plain")]);
        assert!(verdict("https://gw.example.com", &plain, true).is_err());
    }
}
