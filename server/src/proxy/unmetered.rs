//! The calls of the Responses and Messages APIs that generate nothing, so
//! are checked but neither reserved nor billed: a stored response read or
//! deleted (`/v1/responses/{id}`, where the provider keeps it) and Anthropic's
//! token count (`/v1/messages/count_tokens`).

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tollgate_app::core::providers::Kind;

use super::body::RequestBody;
use super::counters::Admission;
use super::dialect::{messages, owned};
use super::error::ProxyError;
use super::memory::Caller;
use super::upstream::{Call, Endpoint, Native};
use super::{admit_caller, answer, anthropic_headers, read_body, tokens, Gateway, Peer};

/// Counts the request against the key's and project's RPM (it costs no
/// tokens and no money, but it reaches a provider under the organization's
/// key).
async fn admit_request(gw: &Gateway, caller: &Caller) -> Result<(), ProxyError> {
    let now = tollgate_app::core::now_ms();
    let admission = Admission {
        caller,
        tokens: 0,
        cost: 0,
        now,
    };
    let (ticket, _) = gw.counters.admit(admission).await?;
    gw.counters.settle(ticket, 0, 0, now);
    Ok(())
}

/// Whether `id` may name a stored response in a provider's URL.
fn plain_id(id: &str) -> bool {
    (1..=200).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether a query string may be passed on as it is (paging a response's
/// input items).
fn plain_query(q: &str) -> bool {
    q.len() <= 512
        && q.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'_' | b'-' | b'=' | b'&' | b'.' | b'%' | b'[' | b']')
        })
}

/// `GET` or `DELETE /v1/responses/{id}` (and `GET …/input_items`): asked
/// of each OpenAI-compatible provider with the Responses API that serves a
/// model this key may call, until one knows the response. Only responses a
/// provider stored exist: one answered through chat is not kept.
pub(crate) async fn stored(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): Peer,
    method: Method,
    Path(id): Path<String>,
    uri: Uri,
    h: HeaderMap,
) -> Response {
    let g = gw.clone();
    answer(gw, Endpoint::Responses, move |_| async move {
        let caller = admit_caller(&g, peer, &h)?;
        admit_request(&g, &caller).await?;
        let key_id = caller.key.id.to_string();
        let secret = g.memory.secret();
        // Only a response this key was answered, by the provider's id.
        let Some(upstream_id) = owned::open(secret, &key_id, &id).filter(|i| plain_id(i)) else {
            return Err(ProxyError::not_found(
                "response_not_found",
                "response_id",
                format!("this key has no stored response '{id}'; responses answered through chat-only providers are not stored"),
            ));
        };
        let mut rest = format!("/{upstream_id}");
        if uri.path().ends_with("/input_items") {
            rest.push_str("/input_items");
        }
        if let Some(q) = uri.query().filter(|q| plain_query(q)) {
            rest.push('?');
            rest.push_str(q);
        }
        let mut asked = HashSet::new();
        for (model, _) in caller.models() {
            let Some(route) = caller.org.routes.get(&model) else {
                continue;
            };
            for d in route.deployments.iter() {
                let p = &d.provider.provider;
                if p.kind != Kind::OpenAi
                    || d.urls.chat_only.load(Ordering::Relaxed)
                    || !asked.insert(p.name.clone())
                {
                    continue;
                }
                let Some(base) = &d.urls.responses else {
                    continue;
                };
                let Ok(url) = reqwest::Url::parse(&format!("{base}{rest}")) else {
                    continue;
                };
                match g.clients.fetch(d, method.clone(), url).await {
                    Ok((404, _)) => continue,
                    Ok((status, body)) => {
                        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                        // The response's id as the client knows it (a
                        // list of input items keeps the provider's ids).
                        let body = match serde_json::from_slice::<Value>(&body) {
                            Ok(mut v) if v.get("object").and_then(Value::as_str) != Some("list") => {
                                match owned::seal_in(&mut v, "/id", secret, &key_id) {
                                    true => Bytes::from(v.to_string()),
                                    false => body,
                                }
                            }
                            _ => body,
                        };
                        return Ok((status, [(header::CONTENT_TYPE, "application/json")], body)
                            .into_response());
                    }
                    Err(e) => {
                        tracing::warn!(provider = %p.name, error = ?e, "a stored response could not be asked for");
                    }
                }
            }
        }
        Err(ProxyError::not_found(
            "response_not_found",
            "response_id",
            format!(
                "no provider of this key's models has the response '{id}'; responses answered through chat-only providers are not stored"
            ),
        ))
    })
    .await
}

/// `POST /v1/messages/count_tokens`: an Anthropic provider's own count,
/// else Tollgate's estimate (the one requests are admitted on).
pub(crate) async fn count_tokens(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): Peer,
    h: HeaderMap,
    body: Body,
) -> Response {
    let g = gw.clone();
    answer(gw, Endpoint::Messages, move |request_id| async move {
        let caller = admit_caller(&g, peer, &h)?;
        admit_request(&g, &caller).await?;
        let raw = read_body(&h, body).await?;
        let native = RequestBody::parse(raw)?;
        let mut request: Value = serde_json::from_slice(native.raw())
            .map_err(|e| ProxyError::invalid("body", format!("the body is not valid JSON: {e}")))?;
        // A count needs no answer length.
        if let Some(o) = request.as_object_mut() {
            o.entry("max_tokens").or_insert(json!(1));
        }
        let t = messages::to_chat(&request)?;
        let model = request
            .get("model")
            .and_then(Value::as_str)
            .ok_or_else(|| ProxyError::invalid("model", "'model' is required"))?
            .to_owned();
        let plan = caller.route(&model)?;
        let now = tollgate_app::core::now_ms();
        let attempts = plan.attempts(now, 0, 0)?;
        let estimate = || tokens::chat_prompt(t.chat.get("messages"), t.chat.get("tools"));
        let Some(a) = attempts
            .iter()
            .find(|a| a.deployment.provider.provider.kind == Kind::Anthropic)
        else {
            return Ok(axum::Json(json!({ "input_tokens": estimate() })).into_response());
        };
        let chat = RequestBody::parse(Bytes::from(t.chat.to_string()))?;
        let native = Native {
            body: native,
            native_only: t.native_only,
            headers: anthropic_headers(Endpoint::Messages, &h),
            previous: None,
        };
        let call = Call {
            endpoint: Endpoint::Messages,
            body: &chat,
            native: Some(&native),
            stream: false,
            deployment: a.deployment,
            client_model: &model,
            request_id: &request_id,
            max_tokens: 1,
        };
        match super::upstream::count_tokens(&g.clients, &call).await {
            Ok(v) => Ok(axum::Json(v).into_response()),
            Err(e) => {
                tracing::warn!(provider = %a.deployment.provider.provider.name, error = ?e,
                    "the provider did not count the tokens; answering Tollgate's estimate");
                Ok(axum::Json(json!({ "input_tokens": estimate() })).into_response())
            }
        }
    })
    .await
}
