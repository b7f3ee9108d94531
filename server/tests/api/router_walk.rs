//! Authentication by default: every route of the assembled router, with every
//! method and no credentials, answers 401, 404 or 405 unless `auth::PUBLIC`
//! lists it. A route added later without being made public is walked too.

use crate::helpers::{Backend, TestApp, OWNER_PASSWORD};
use reqwest::Method;
use tollgate_server::auth::{Public, PUBLIC};

const METHODS: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
];

/// A request path for a route template: each `{param}` becomes `x`.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| {
            if seg.starts_with("{*") {
                "anything"
            } else if seg.starts_with('{') {
                "x"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether `PUBLIC` lets this declared route answer without credentials.
fn public(template: &str, method: &Method, pages: &[String]) -> bool {
    let path = concrete(template);
    PUBLIC.iter().any(|p| match p {
        Public::Path(p) => path == *p,
        Public::Under(prefix) => path.starts_with(prefix),
        Public::Pages => {
            (method == Method::GET || method == Method::HEAD) && pages.iter().any(|p| p == template)
        }
        Public::ServerFns(fns) => fns.contains(&path.as_str()),
        // Declared routes only: an unrouted path is not one of them.
        Public::Unrouted => false,
    })
}

async fn every_route_needs_credentials_unless_public(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // An instance with an owner, so that nothing answers as a fresh install would.
    let (_owner, _org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let routes = tollgate_server::route_paths();
    let pages = tollgate_server::page_paths();
    // The walk covers the console, the machine APIs, the proxy and the checks.
    for needed in [
        "/api/console/create_org",
        "/api/console/list_keys",
        "/key/generate",
        "/team/new",
        "/prod/createServiceKey",
        "/api/v1/projects/{project}",
        "/v1/chat/completions",
        "/orgs/{org_id}",
        "/healthz",
    ] {
        assert!(
            routes.iter().any(|r| r == needed),
            "{needed} missing from {routes:?}"
        );
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut walked = 0;
    let mut open = Vec::new();
    let mut wrong = Vec::new();
    for template in &routes {
        let path = concrete(template);
        for method in &METHODS {
            let res = client
                .request(method.clone(), format!("{}{path}", app.url))
                .send()
                .await
                .unwrap();
            walked += 1;
            let status = res.status().as_u16();
            if public(template, method, &pages) {
                open.push(format!("{method} {path} {status}"));
            } else if ![401, 404, 405].contains(&status) {
                wrong.push(format!("{method} {path} answered {status}"));
            }
        }
    }
    eprintln!(
        "walked {walked} requests over {} routes; public: {open:?}",
        routes.len()
    );
    assert!(wrong.is_empty(), "answered without credentials: {wrong:#?}");
    // The public list is not a blanket: the health check and a page answer.
    assert!(open.iter().any(|o| o == "GET /healthz 200"), "{open:?}");
    assert!(open.iter().any(|o| o == "GET /login 200"), "{open:?}");
}
both!(every_route_needs_credentials_unless_public);

/// Unknown paths under an API root answer a JSON 404, not the console's HTML.
async fn unknown_api_paths_are_json_404s(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for path in [
        "/api/v1/nothing",
        "/api/nothing",
        "/api/console",
        "/key/nothing",
        "/team/nothing/deeper",
        "/prod/nothing",
        "/user/nothing",
        "/v1",
    ] {
        for method in [Method::GET, Method::POST] {
            let res = reqwest::Client::new()
                .request(method.clone(), format!("{}{path}", app.url))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let kind = res
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            assert_eq!(status, 404, "{method} {path}");
            assert!(
                kind.starts_with("application/json"),
                "{method} {path}: {kind}"
            );
        }
    }
    // Outside the API roots the console still answers: its static files and pages.
    let res = reqwest::get(format!("{}/favicon.svg", app.url))
        .await
        .unwrap();
    assert_ne!(res.status().as_u16(), 401);
}
both!(unknown_api_paths_are_json_404s);
