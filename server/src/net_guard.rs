//! The connect-time half of `core::net`: an HTTP client that refuses private
//! addresses after DNS resolution (so a name that resolves, or later
//! re-resolves, to an internal address is refused) and on redirects.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::SocketAddr;
use tollgate_app::core::net::is_private;

/// Resolves with the system resolver and drops private addresses; a name
/// with only private addresses does not resolve.
#[derive(Clone, Copy, Debug)]
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let public: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_private(a.ip()))
                .collect();
            if public.is_empty() {
                let refused = std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{host} resolves only to private addresses (allow_private_networks)"),
                );
                return Err(refused.into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// Whether a URL names a private address literally (literals bypass the
/// resolver, so they are checked on their own).
pub fn is_private_literal(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => is_private(ip.into()),
        Some(url::Host::Ipv6(ip)) => is_private(ip.into()),
        Some(url::Host::Domain(_)) | None => false,
    }
}

/// Applies the guard to a client under construction, unless private
/// networks are allowed: the filtering resolver, and redirects (at most 10,
/// reqwest's default) that never lead to a private literal.
pub fn guard(builder: reqwest::ClientBuilder, allow_private: bool) -> reqwest::ClientBuilder {
    if allow_private {
        return builder;
    }
    // No HTTP(S)_PROXY from the environment either: a proxy would resolve
    // names itself, past this resolver.
    builder
        .no_proxy()
        .dns_resolver(std::sync::Arc::new(PublicOnly))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= 10 {
                attempt.error("too many redirects")
            } else if is_private_literal(attempt.url()) {
                attempt.error("redirected to a private address (allow_private_networks)")
            } else {
                attempt.follow()
            }
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receiver on this machine is reached by name only when allowed.
    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_not_connected_to() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let app = axum::Router::new().route("/", axum::routing::get(|| async { "internal" }));
            axum::serve(listener, app).await.unwrap();
        });
        let url = format!("http://localhost:{port}/");
        let guarded = guard(reqwest::Client::builder(), false).build().unwrap();
        let err = guarded.get(&url).send().await.unwrap_err();
        assert!(format!("{err:?}").contains("private"), "{err:?}");
        let open = guard(reqwest::Client::builder(), true).build().unwrap();
        let body = open.get(&url).send().await.unwrap().text().await.unwrap();
        assert_eq!(body, "internal");
        assert!(is_private_literal(&"http://[::1]:80/".parse().unwrap()));
        assert!(is_private_literal(
            &"http://169.254.169.254/".parse().unwrap()
        ));
        assert!(!is_private_literal(
            &"https://api.openai.com/v1".parse().unwrap()
        ));
    }
}
