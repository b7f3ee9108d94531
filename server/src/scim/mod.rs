//! The SCIM 2.0 server (RFC 7643, 7644) at `/scim/v2`: an organization's
//! identity provider creates, changes, deactivates and deletes its users and
//! groups with a SCIM token (`sk-tgs-…`), which acts in its own organization
//! only. Handlers parse and check the request here, authorize through the
//! policy module and call `core::ops::scim`; deprovisioning happens there.

pub mod filter;
pub mod patch;
pub mod schema;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tollgate_app::core::audit::Actor;
use tollgate_app::core::identity::{self, Mapping};
use tollgate_app::core::now_ms;
use tollgate_app::core::ops::scim::{self as ops, GroupInput, Provisioner, UserInput};
use tollgate_app::core::scim::{self as store, Authenticated, ScimEvent, ScimGroup, ScimUser};
use tollgate_app::core::state::AppState;
use tollgate_app::error::AppError;
use tollgate_app::policy::{self, Action};

use crate::machine::iso;

/// Where the SCIM server answers.
pub const ROOT: &str = "/scim/v2";

/// The SCIM server, its requests logged for the console.
pub fn router(state: AppState) -> Router {
    routes()
        .0
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), logged))
        .with_state(state)
}

/// Every SCIM route, with the paths the authentication walk requests.
fn routes() -> (Router<AppState>, Vec<String>) {
    let paths = [
        "/scim/v2/ServiceProviderConfig",
        "/scim/v2/Schemas",
        "/scim/v2/Schemas/{id}",
        "/scim/v2/ResourceTypes",
        "/scim/v2/ResourceTypes/{id}",
        "/scim/v2/Users",
        "/scim/v2/Users/.search",
        "/scim/v2/Users/{id}",
        "/scim/v2/Groups",
        "/scim/v2/Groups/.search",
        "/scim/v2/Groups/{id}",
        "/scim/v2/.search",
        "/scim/v2/{*rest}",
    ];
    let router = Router::new()
        .route(paths[0], get(service_provider_config))
        .route(paths[1], get(schemas))
        .route(paths[2], get(one_schema))
        .route(paths[3], get(resource_types))
        .route(paths[4], get(one_resource_type))
        .route(paths[5], get(list_users).post(create_user))
        .route(paths[6], post(search_users))
        .route(
            paths[7],
            get(get_user)
                .put(put_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route(paths[8], get(list_groups).post(create_group))
        .route(paths[9], post(search_groups))
        .route(
            paths[10],
            get(get_group)
                .put(put_group)
                .patch(patch_group)
                .delete(delete_group),
        )
        .route(paths[11], post(search_all))
        .route(paths[12], axum::routing::any(no_such_endpoint));
    (router, paths.iter().map(|p| (*p).to_owned()).collect())
}

pub fn paths() -> Vec<String> {
    routes().1
}

/// A known SCIM path asked with a method it does not take.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ScimError {
    ScimError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        format!("{} does not take {method}", uri.path()),
    )
}

/// A SCIM error (RFC 7644 §3.12): status as a string, `scimType` where one
/// applies, and a detail that names the field. Never a secret or SQL.
#[derive(Debug)]
pub struct ScimError {
    pub status: StatusCode,
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

impl ScimError {
    fn new(
        status: StatusCode,
        scim_type: Option<&'static str>,
        detail: impl Into<String>,
    ) -> ScimError {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }
    pub fn invalid_value(d: impl Into<String>) -> ScimError {
        ScimError::new(StatusCode::BAD_REQUEST, Some("invalidValue"), d)
    }
    pub fn invalid_syntax(d: impl Into<String>) -> ScimError {
        ScimError::new(StatusCode::BAD_REQUEST, Some("invalidSyntax"), d)
    }
    pub fn invalid_filter(d: impl Into<String>) -> ScimError {
        ScimError::new(StatusCode::BAD_REQUEST, Some("invalidFilter"), d)
    }
    pub fn invalid_path(d: impl Into<String>) -> ScimError {
        ScimError::new(StatusCode::BAD_REQUEST, Some("invalidPath"), d)
    }
    pub fn no_target(d: impl Into<String>) -> ScimError {
        ScimError::new(StatusCode::BAD_REQUEST, Some("noTarget"), d)
    }
    pub fn not_found(what: &str, id: &str) -> ScimError {
        ScimError::new(
            StatusCode::NOT_FOUND,
            None,
            format!("{what} '{id}' not found"),
        )
    }
    pub fn unauthorized(d: &str) -> ScimError {
        ScimError::new(StatusCode::UNAUTHORIZED, None, d)
    }
}

impl From<AppError> for ScimError {
    fn from(e: AppError) -> ScimError {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let scim_type = match &e {
            AppError::Invalid { .. } => Some("invalidValue"),
            AppError::Conflict { message } if message.contains("already exists") => {
                Some("uniqueness")
            }
            AppError::Conflict { .. } => Some("mutability"),
            AppError::Request { .. } => Some("invalidSyntax"),
            _ => None,
        };
        ScimError::new(status, scim_type, e.to_string())
    }
}

impl From<sqlx::Error> for ScimError {
    fn from(e: sqlx::Error) -> ScimError {
        AppError::from(e).into()
    }
}

impl From<policy::Denied> for ScimError {
    fn from(d: policy::Denied) -> ScimError {
        AppError::from(d).into()
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "schemas": [schema::ERROR],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            body["scimType"] = json!(t);
        }
        let mut res = scim_json(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // The log middleware records the detail, not the body.
        res.extensions_mut().insert(Summary(self.detail));
        res
    }
}

type ScimResult<T> = Result<T, ScimError>;

fn scim_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/scim+json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// What the SCIM event log says a request did.
#[derive(Clone)]
struct Summary(String);

fn with_summary(mut res: Response, summary: String) -> Response {
    res.extensions_mut().insert(Summary(summary));
    res
}

/// The live SCIM token presented as `Authorization: Bearer sk-tgs-…`.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> ScimResult<Authenticated> {
    let presented = crate::auth::bearer(headers).ok_or_else(|| {
        ScimError::unauthorized("send a SCIM token as 'Authorization: Bearer sk-tgs-…'")
    })?;
    let mut conn = state.db.pool.acquire().await?;
    store::authenticate(&mut conn, presented, now_ms())
        .await?
        .ok_or_else(|| ScimError::unauthorized("the SCIM token is unknown or revoked"))
}

/// The caller of a SCIM route: its token, its organization (as the policy
/// granted it) and the mapping of its connection.
pub struct Scim {
    state: AppState,
    token: Authenticated,
    base: String,
}

impl FromRequestParts<AppState> for Scim {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ScimResult<Scim> {
        let token = match parts.extensions.get::<Authenticated>() {
            Some(t) => t.clone(),
            None => authenticate(state, &parts.headers).await?,
        };
        Ok(Scim {
            base: format!("{}{ROOT}", state.public_url),
            state: state.clone(),
            token,
        })
    }
}

impl Scim {
    fn org_id(&self) -> &str {
        &self.token.client.org_id
    }

    async fn provisioner(&self) -> ScimResult<Provisioner> {
        let scope = policy::authorize_scim(&self.token.client, Action::ProvisionIdentities)?;
        let mapping = match &self.token.connection_id {
            Some(c) => {
                let mut conn = self.state.db.pool.acquire().await?;
                identity::get(&mut conn, self.org_id(), c)
                    .await?
                    .map_or_else(Mapping::plain, |c| c.mapping)
            }
            None => Mapping::plain(),
        };
        Ok(Provisioner {
            scope,
            actor: Actor::scim(&self.token.client.token_id, &self.token.name),
            mapping,
        })
    }

    /// Reading is the same permission: only the organization's own token.
    fn check_read(&self) -> ScimResult<()> {
        policy::authorize_scim(&self.token.client, Action::ProvisionIdentities)?;
        Ok(())
    }

    fn location(&self, kind: &str, id: &str) -> String {
        format!("{}/{kind}/{id}", self.base)
    }

    async fn render_user(&self, u: &ScimUser) -> ScimResult<Value> {
        let mut conn = self.state.db.pool.acquire().await?;
        let groups = store::groups_of_user(&mut conn, &u.id).await?;
        Ok(user_json(self, u, &groups))
    }
}

fn version(v: i64) -> String {
    format!("W/\"{v}\"")
}

fn user_json(s: &Scim, u: &ScimUser, groups: &[(String, String)]) -> Value {
    let mut doc = match &u.attributes {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut schemas = vec![json!(schema::USER)];
    if doc.contains_key(schema::ENTERPRISE) {
        schemas.push(json!(schema::ENTERPRISE));
    }
    doc.insert("schemas".into(), Value::Array(schemas));
    doc.insert("id".into(), json!(u.id));
    if let Some(e) = &u.external_id {
        doc.insert("externalId".into(), json!(e));
    }
    doc.insert("userName".into(), json!(u.user_name));
    if doc.contains_key("active") {
        doc.insert("active".into(), json!(u.active));
    }
    if !groups.is_empty() {
        doc.insert(
            "groups".into(),
            groups
                .iter()
                .map(|(id, name)| {
                    json!({ "value": id, "display": name, "$ref": s.location("Groups", id), "type": "direct" })
                })
                .collect(),
        );
    }
    doc.insert(
        "meta".into(),
        json!({
            "resourceType": "User", "created": iso(u.created_at), "lastModified": iso(u.updated_at),
            "location": s.location("Users", &u.id), "version": version(u.version),
        }),
    );
    Value::Object(doc)
}

fn group_json(s: &Scim, g: &ScimGroup) -> Value {
    let mut doc = json!({
        "schemas": [schema::GROUP],
        "id": g.id,
        "displayName": g.display_name,
        // RFC 7643 §8.7.1: a member is its value, $ref and type.
        "members": g.members.iter().map(|m| {
            json!({ "value": m, "$ref": s.location("Users", m), "type": "User" })
        }).collect::<Vec<_>>(),
        "meta": {
            "resourceType": "Group", "created": iso(g.created_at), "lastModified": iso(g.updated_at),
            "location": s.location("Groups", &g.id), "version": version(g.version),
        },
    });
    if let Some(e) = &g.external_id {
        doc["externalId"] = json!(e);
    }
    if g.members.is_empty() {
        if let Some(o) = doc.as_object_mut() {
            o.remove("members");
        }
    }
    doc
}

/// The query of a list: filter, pagination, attribute selection.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    filter: Option<String>,
    #[serde(rename = "startIndex")]
    start_index: Option<String>,
    count: Option<String>,
    attributes: Option<String>,
    #[serde(rename = "excludedAttributes")]
    excluded_attributes: Option<String>,
}

impl ListQuery {
    fn of_search(body: &Value) -> ScimResult<ListQuery> {
        let text = |k: &str| -> Option<String> {
            filter::get(body, k).and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Array(a) => Some(
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                _ => None,
            })
        };
        Ok(ListQuery {
            filter: text("filter"),
            start_index: text("startIndex"),
            count: text("count"),
            attributes: text("attributes"),
            excluded_attributes: text("excludedAttributes"),
        })
    }
}

fn number(field: &str, raw: Option<&str>, default: i64) -> ScimResult<i64> {
    match raw.map(str::trim) {
        None | Some("") => Ok(default),
        Some(t) => t
            .parse::<i64>()
            .map_err(|_| ScimError::invalid_value(format!("{field}: '{t}' is not an integer"))),
    }
}

/// A page of `all` (already rendered), filtered and cut as the query says.
fn list_response(q: &ListQuery, all: Vec<Value>) -> ScimResult<Response> {
    // sort.supported is false: `sortBy` is ignored, the order is creation order.
    let f = q
        .filter
        .as_deref()
        .filter(|f| !f.trim().is_empty())
        .map(filter::parse)
        .transpose()?;
    let start = number("startIndex", q.start_index.as_deref(), 1)?.max(1);
    let count = number("count", q.count.as_deref(), schema::MAX_RESULTS as i64)?
        .clamp(0, schema::MAX_RESULTS as i64);
    let hits: Vec<Value> = all
        .into_iter()
        .filter(|r| f.as_ref().is_none_or(|f| filter::matches(r, f)))
        .collect();
    let total = hits.len();
    let page: Vec<Value> = hits
        .into_iter()
        .skip(usize::try_from(start - 1).unwrap_or(usize::MAX))
        .take(usize::try_from(count).unwrap_or(0))
        .map(|r| select_attributes(r, q))
        .collect();
    let body = json!({
        "schemas": [schema::LIST],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": page.len(),
        "Resources": page,
    });
    Ok(with_summary(
        scim_json(StatusCode::OK, &body),
        format!("listed {total} match(es)"),
    ))
}

/// `attributes` keeps only the named ones (and `id`, `schemas`); then
/// `excludedAttributes` drops the named ones. Names may be `a.b` or URN-qualified.
fn select_attributes(mut r: Value, q: &ListQuery) -> Value {
    let names = |raw: &Option<String>| -> Vec<String> {
        raw.as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let keep = names(&q.attributes);
    let drop = names(&q.excluded_attributes);
    let Some(obj) = r.as_object_mut() else {
        return r;
    };
    if !keep.is_empty() {
        let wanted = |key: &str| {
            matches!(key, "id" | "schemas")
                || keep.iter().any(|k| {
                    let k = strip_core(k);
                    let top = k.split('.').next().unwrap_or(k);
                    top.eq_ignore_ascii_case(key)
                        || (key.starts_with("urn:")
                            && k.to_ascii_lowercase()
                                .starts_with(&key.to_ascii_lowercase()))
                })
        };
        obj.retain(|k, _| wanted(k));
        // Sub-attributes: "name.givenName" keeps only that one of name.
        for k in &keep {
            let k = strip_core(k);
            if let Some((top, sub)) = k.split_once('.') {
                if keep.iter().any(|x| strip_core(x).eq_ignore_ascii_case(top)) {
                    continue;
                }
                if let Some(key) = obj.keys().find(|x| x.eq_ignore_ascii_case(top)).cloned() {
                    let subs: Vec<&str> = keep
                        .iter()
                        .filter_map(|x| strip_core(x).split_once('.'))
                        .filter(|(t, _)| t.eq_ignore_ascii_case(top))
                        .map(|(_, s)| s)
                        .collect();
                    let trim = |v: &mut Value| {
                        if let Value::Object(o) = v {
                            o.retain(|sk, _| subs.iter().any(|s| s.eq_ignore_ascii_case(sk)));
                        }
                    };
                    if let Some(v) = obj.get_mut(&key) {
                        match v {
                            Value::Array(items) => items.iter_mut().for_each(trim),
                            other => trim(other),
                        }
                    }
                }
                let _ = sub;
            }
        }
    }
    for d in &drop {
        let d = strip_core(d);
        if matches!(d, "id" | "schemas") {
            continue;
        }
        match d.split_once('.') {
            Some((top, sub)) => {
                if let Some(key) = obj.keys().find(|x| x.eq_ignore_ascii_case(top)).cloned() {
                    if let Some(Value::Object(o)) = obj.get_mut(&key) {
                        o.retain(|sk, _| !sk.eq_ignore_ascii_case(sub));
                    }
                }
            }
            None => obj.retain(|k, _| !k.eq_ignore_ascii_case(d)),
        }
    }
    r
}

/// `urn:…:core:2.0:User:userName` → `userName`.
fn strip_core(name: &str) -> &str {
    for urn in [schema::USER, schema::GROUP] {
        if let Some(rest) = name.strip_prefix(urn).and_then(|r| r.strip_prefix(':')) {
            return rest;
        }
    }
    name
}

/// A single resource, with `attributes` / `excludedAttributes` applied.
fn resource(status: StatusCode, r: Value, q: &ListQuery, summary: String) -> Response {
    let body = select_attributes(r, q);
    let location = body
        .pointer("/meta/location")
        .and_then(Value::as_str)
        .and_then(|l| HeaderValue::from_str(l).ok());
    let etag = body
        .pointer("/meta/version")
        .and_then(Value::as_str)
        .and_then(|l| HeaderValue::from_str(l).ok());
    let mut res = scim_json(status, &body);
    if let Some(l) = location.filter(|_| status == StatusCode::CREATED) {
        res.headers_mut().insert(header::LOCATION, l);
    }
    if let Some(e) = etag {
        res.headers_mut().insert(header::ETAG, e);
    }
    with_summary(res, summary)
}

/// The request body as JSON, whatever its content type (SCIM clients send
/// `application/scim+json`).
fn body_json(bytes: &Bytes) -> ScimResult<Value> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ScimError::invalid_syntax(format!("body: not JSON ({e})")))?;
    if !v.is_object() {
        return Err(ScimError::invalid_syntax("body: expected a JSON object"));
    }
    Ok(v)
}

fn text_field(doc: &Value, name: &str) -> ScimResult<Option<String>> {
    match filter::get(doc, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ScimError::invalid_value(format!(
            "{name}: expected a string, got {}",
            schema::short(other)
        ))),
    }
}

/// A user body (POST, PUT, or a patched resource) as the store keeps it.
fn user_input(doc: &Value) -> ScimResult<UserInput> {
    let obj = doc
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("body: expected a JSON object"))?;
    let user_name = text_field(doc, "userName")?
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ScimError::invalid_value("userName: required"))?;
    if user_name.chars().count() > 256 {
        return Err(ScimError::invalid_value("userName: at most 256 characters"));
    }
    let external_id = text_field(doc, "externalId")?;
    let mut attrs = schema::clean(schema::USER_ATTRS, obj, "")?;
    attrs.remove("userName");
    // Kept in the attributes only when given; absent, a new user is active
    // and a replaced one keeps its state.
    let active = match attrs.get("active") {
        Some(Value::Bool(b)) => Some(*b),
        _ => None,
    };
    let ext = obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(schema::ENTERPRISE))
        .map(|(_, v)| v);
    if let Some(ext) = ext {
        let m = ext.as_object().ok_or_else(|| {
            ScimError::invalid_value(format!("{}: expected an object", schema::ENTERPRISE))
        })?;
        let cleaned = schema::clean(schema::ENTERPRISE_ATTRS, m, schema::ENTERPRISE)?;
        if !cleaned.is_empty() {
            attrs.insert(schema::ENTERPRISE.to_owned(), Value::Object(cleaned));
        }
    }
    let emails: Vec<&Value> = attrs
        .get("emails")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let primary = emails
        .iter()
        .find(|e| e.get("primary") == Some(&Value::Bool(true)))
        .or_else(|| emails.first())
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let email = primary
        .or_else(|| user_name.contains('@').then(|| user_name.clone()))
        .ok_or_else(|| {
            ScimError::invalid_value(
                "emails: a user needs an email address (in emails, or as a userName)",
            )
        })?;
    let name = attrs
        .get("displayName")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            let n = attrs.get("name")?;
            let given = n
                .get("givenName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let family = n
                .get("familyName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let full = format!("{given} {family}").trim().to_owned();
            (!full.is_empty()).then_some(full)
        })
        .unwrap_or_else(|| user_name.clone());
    Ok(UserInput {
        user_name,
        external_id,
        active,
        attributes: Value::Object(attrs),
        email,
        name,
    })
}

fn group_input(doc: &Value) -> ScimResult<GroupInput> {
    let obj = doc
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("body: expected a JSON object"))?;
    let display_name = text_field(doc, "displayName")?
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ScimError::invalid_value("displayName: required"))?;
    if display_name.chars().count() > 256 {
        return Err(ScimError::invalid_value(
            "displayName: at most 256 characters",
        ));
    }
    let attrs = schema::clean(schema::GROUP_ATTRS, obj, "")?;
    let mut members = Vec::new();
    for (i, m) in attrs
        .get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let v = m
            .get("value")
            .and_then(Value::as_str)
            .ok_or_else(|| ScimError::invalid_value(format!("members[{i}].value: required")))?;
        members.push(v.to_owned());
    }
    Ok(GroupInput {
        display_name,
        external_id: text_field(doc, "externalId")?,
        members,
    })
}

/// Records each authenticated request in the organization's SCIM log.
async fn logged(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let token = req.extensions().get::<Authenticated>().cloned();
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    if let Some(t) = token {
        let summary = res
            .extensions()
            .get::<Summary>()
            .map(|s| s.0.clone())
            .unwrap_or_default();
        let event = ScimEvent {
            at: now_ms(),
            method,
            path,
            status: i64::from(res.status().as_u16()),
            summary,
        };
        match state.db.pool.acquire().await {
            Ok(mut conn) => {
                if let Err(e) =
                    store::record_event(&mut conn, &t.client.org_id, &t.client.token_id, &event)
                        .await
                {
                    tracing::warn!(error = %e, "a SCIM event was not recorded");
                }
            }
            Err(e) => tracing::warn!(error = %e, "a SCIM event was not recorded"),
        }
    }
    res
}

async fn service_provider_config(s: Scim) -> ScimResult<Response> {
    s.check_read()?;
    Ok(scim_json(
        StatusCode::OK,
        &schema::service_provider_config(&s.base),
    ))
}

fn list_of(all: Vec<Value>) -> Response {
    let body = json!({
        "schemas": [schema::LIST], "totalResults": all.len(), "startIndex": 1,
        "itemsPerPage": all.len(), "Resources": all,
    });
    scim_json(StatusCode::OK, &body)
}

async fn schemas(s: Scim) -> ScimResult<Response> {
    s.check_read()?;
    Ok(list_of(schema::schemas(&s.base)))
}

async fn one_schema(s: Scim, Path(id): Path<String>) -> ScimResult<Response> {
    s.check_read()?;
    schema::schemas(&s.base)
        .into_iter()
        .find(|v| v["id"] == id.as_str())
        .map(|v| scim_json(StatusCode::OK, &v))
        .ok_or_else(|| ScimError::not_found("schema", &id))
}

async fn resource_types(s: Scim) -> ScimResult<Response> {
    s.check_read()?;
    Ok(list_of(schema::resource_types(&s.base)))
}

async fn one_resource_type(s: Scim, Path(id): Path<String>) -> ScimResult<Response> {
    s.check_read()?;
    schema::resource_types(&s.base)
        .into_iter()
        .find(|v| v["id"] == id.as_str())
        .map(|v| scim_json(StatusCode::OK, &v))
        .ok_or_else(|| ScimError::not_found("resource type", &id))
}

async fn all_users(s: &Scim) -> ScimResult<Vec<Value>> {
    let mut conn = s.state.db.pool.acquire().await?;
    let users = store::users(&mut conn, s.org_id()).await?;
    let groups = store::groups(&mut conn, s.org_id()).await?;
    drop(conn);
    Ok(users
        .iter()
        .map(|u| {
            let of: Vec<(String, String)> = groups
                .iter()
                .filter(|g| g.members.contains(&u.id))
                .map(|g| (g.id.clone(), g.display_name.clone()))
                .collect();
            user_json(s, u, &of)
        })
        .collect())
}

async fn list_users(s: Scim, Query(q): Query<ListQuery>) -> ScimResult<Response> {
    s.check_read()?;
    list_response(&q, all_users(&s).await?)
}

async fn search_users(s: Scim, body: Bytes) -> ScimResult<Response> {
    s.check_read()?;
    let q = ListQuery::of_search(&body_json(&body)?)?;
    list_response(&q, all_users(&s).await?)
}

async fn user_of(s: &Scim, id: &str) -> ScimResult<ScimUser> {
    let mut conn = s.state.db.pool.acquire().await?;
    store::user(&mut conn, s.org_id(), id)
        .await?
        .ok_or_else(|| ScimError::not_found("user", id))
}

async fn get_user(
    s: Scim,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> ScimResult<Response> {
    s.check_read()?;
    let u = user_of(&s, &id).await?;
    let summary = format!("read user {}", u.user_name);
    Ok(resource(
        StatusCode::OK,
        s.render_user(&u).await?,
        &q,
        summary,
    ))
}

async fn create_user(s: Scim, body: Bytes) -> ScimResult<Response> {
    let p = s.provisioner().await?;
    let input = user_input(&body_json(&body)?)?;
    let u = ops::create_user(&s.state, &p, input).await?;
    let summary = format!("created user {} (active: {})", u.user_name, u.active);
    Ok(resource(
        StatusCode::CREATED,
        s.render_user(&u).await?,
        &ListQuery::default(),
        summary,
    ))
}

fn summary_of_change(before: &ScimUser, after: &ScimUser) -> String {
    match (before.active, after.active) {
        (true, false) => format!(
            "deactivated user {}: access removed, keys revoked, sessions ended",
            after.user_name
        ),
        (false, true) => format!("reactivated user {}", after.user_name),
        _ => format!("updated user {}", after.user_name),
    }
}

async fn put_user(s: Scim, Path(id): Path<String>, body: Bytes) -> ScimResult<Response> {
    let p = s.provisioner().await?;
    let before = user_of(&s, &id).await?;
    let input = user_input(&body_json(&body)?)?;
    let u = ops::replace_user(&s.state, &p, &id, input, None).await?;
    let summary = summary_of_change(&before, &u);
    Ok(resource(
        StatusCode::OK,
        s.render_user(&u).await?,
        &ListQuery::default(),
        summary,
    ))
}

async fn patch_user(s: Scim, Path(id): Path<String>, body: Bytes) -> ScimResult<Response> {
    let p = s.provisioner().await?;
    let body = body_json(&body)?;
    // Applied to the version read; a concurrent change makes it read again.
    for _ in 0..PATCH_TRIES {
        let before = user_of(&s, &id).await?;
        let mut doc = s.render_user(&before).await?;
        patch::apply(&mut doc, &body)?;
        let input = user_input(&doc)?;
        match ops::replace_user(&s.state, &p, &id, input, Some(before.version)).await {
            Err(AppError::Conflict { message }) if message == ops::STALE => continue,
            done => {
                let u = done?;
                let summary = summary_of_change(&before, &u);
                return Ok(resource(
                    StatusCode::OK,
                    s.render_user(&u).await?,
                    &ListQuery::default(),
                    summary,
                ));
            }
        }
    }
    Err(AppError::conflict(ops::STALE).into())
}

/// How often a PATCH is applied again when the resource changed meanwhile.
const PATCH_TRIES: usize = 8;

async fn delete_user(s: Scim, Path(id): Path<String>) -> ScimResult<Response> {
    let p = s.provisioner().await?;
    let before = user_of(&s, &id).await?;
    ops::delete_user(&s.state, &p, &id).await?;
    Ok(with_summary(
        StatusCode::NO_CONTENT.into_response(),
        format!(
            "deleted user {}: access removed, keys revoked, sessions ended",
            before.user_name
        ),
    ))
}

/// `POST /.search`: users and groups together.
async fn search_all(s: Scim, body: Bytes) -> ScimResult<Response> {
    s.check_read()?;
    let q = ListQuery::of_search(&body_json(&body)?)?;
    let mut all = all_users(&s).await?;
    all.extend(all_groups(&s).await?);
    list_response(&q, all)
}

async fn all_groups(s: &Scim) -> ScimResult<Vec<Value>> {
    let mut conn = s.state.db.pool.acquire().await?;
    let groups = store::groups(&mut conn, s.org_id()).await?;
    Ok(groups.iter().map(|g| group_json(s, g)).collect())
}

async fn list_groups(s: Scim, Query(q): Query<ListQuery>) -> ScimResult<Response> {
    s.check_read()?;
    list_response(&q, all_groups(&s).await?)
}

async fn search_groups(s: Scim, body: Bytes) -> ScimResult<Response> {
    s.check_read()?;
    let q = ListQuery::of_search(&body_json(&body)?)?;
    list_response(&q, all_groups(&s).await?)
}

async fn group_of(s: &Scim, id: &str) -> ScimResult<ScimGroup> {
    let mut conn = s.state.db.pool.acquire().await?;
    store::group(&mut conn, s.org_id(), id)
        .await?
        .ok_or_else(|| ScimError::not_found("group", id))
}

async fn get_group(
    s: Scim,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> ScimResult<Response> {
    s.check_read()?;
    let g = group_of(&s, &id).await?;
    let summary = format!("read group {}", g.display_name);
    Ok(resource(StatusCode::OK, group_json(&s, &g), &q, summary))
}

async fn create_group(s: Scim, body: Bytes) -> ScimResult<Response> {
    let p = s.provisioner().await?;
    let input = group_input(&body_json(&body)?)?;
    let g = ops::create_group(&s.state, &p, input).await?;
    let summary = format!(
        "created group {} ({} members)",
        g.display_name,
        g.members.len()
    );
    Ok(resource(
        StatusCode::CREATED,
        group_json(&s, &g),
        &ListQuery::default(),
        summary,
    ))
}

async fn put_group(s: Scim, Path(id): Path<String>, body: Bytes) -> ScimResult<Response> {
    let p = s.provisioner().await?;
    group_of(&s, &id).await?;
    let input = group_input(&body_json(&body)?)?;
    let g = ops::replace_group(&s.state, &p, &id, input, None).await?;
    let summary = format!(
        "replaced group {} ({} members)",
        g.display_name,
        g.members.len()
    );
    Ok(resource(
        StatusCode::OK,
        group_json(&s, &g),
        &ListQuery::default(),
        summary,
    ))
}

async fn patch_group(s: Scim, Path(id): Path<String>, body: Bytes) -> ScimResult<Response> {
    let p = s.provisioner().await?;
    let body = body_json(&body)?;
    for _ in 0..PATCH_TRIES {
        let before = group_of(&s, &id).await?;
        let mut doc = group_json(&s, &before);
        patch::apply(&mut doc, &body)?;
        let input = group_input(&doc)?;
        match ops::replace_group(&s.state, &p, &id, input, Some(before.version)).await {
            Err(AppError::Conflict { message }) if message == ops::STALE => continue,
            done => {
                let g = done?;
                let summary = format!(
                    "updated group {} ({} members)",
                    g.display_name,
                    g.members.len()
                );
                return Ok(resource(
                    StatusCode::OK,
                    group_json(&s, &g),
                    &ListQuery::default(),
                    summary,
                ));
            }
        }
    }
    Err(AppError::conflict(ops::STALE).into())
}

async fn delete_group(s: Scim, Path(id): Path<String>) -> ScimResult<Response> {
    let p = s.provisioner().await?;
    let before = group_of(&s, &id).await?;
    ops::delete_group(&s.state, &p, &id).await?;
    Ok(with_summary(
        StatusCode::NO_CONTENT.into_response(),
        format!("deleted group {}", before.display_name),
    ))
}

/// A path under `/scim/v2` that names no endpoint: a SCIM 404.
async fn no_such_endpoint(s: Scim, req: Request) -> ScimResult<Response> {
    s.check_read()?;
    Err(ScimError::new(
        StatusCode::NOT_FOUND,
        None,
        format!("no SCIM endpoint at '{}'", req.uri().path()),
    ))
}
