//! The one error type of `/v1`: OpenAI-shaped JSON
//! (`{"error": {"message", "type", "param", "code"}}`), or Anthropic's shape
//! on the Messages API, that names the rule that was hit and never holds
//! the key.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::upstream::Endpoint;

#[derive(Debug)]
pub struct ProxyError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: &'static str,
    pub param: Option<&'static str>,
    pub message: String,
    pub headers: Vec<(HeaderName, String)>,
}

impl ProxyError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ProxyError {
            status,
            kind,
            code,
            param: None,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            code,
            message,
        )
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", code, message)
    }

    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message,
        );
        e.param = Some(param);
        e
    }

    pub fn too_large(param: &'static str, message: impl Into<String>) -> Self {
        let mut e = Self::invalid(param, message);
        e.status = StatusCode::PAYLOAD_TOO_LARGE;
        e.code = "body_too_large";
        e
    }

    pub fn model_not_found(model: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("the model '{model}' does not exist in this organization's catalogue"),
        );
        e.param = Some("model");
        e
    }

    /// Something the request names by `param` that does not exist.
    /// A served path asked with a method it does not take.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            message,
        )
    }

    pub fn not_found(code: &'static str, param: &'static str, message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            code,
            message,
        );
        e.param = Some(param);
        e
    }

    pub fn rate_limited(message: String, headers: Vec<(HeaderName, String)>) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limit_exceeded",
            message,
        );
        e.headers = headers;
        e
    }

    pub fn budget(code: &'static str, message: String) -> Self {
        Self::new(
            StatusCode::PAYMENT_REQUIRED,
            "budget_exceeded",
            code,
            message,
        )
    }

    pub fn bad_gateway(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_error", code, message)
    }

    /// The provider refused the request (a 4xx): its status, Tollgate's words.
    pub fn upstream_refused(status: u16, message: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(StatusCode::is_client_error)
            .unwrap_or(StatusCode::BAD_GATEWAY);
        Self::new(status, "upstream_error", "upstream_error", message)
    }

    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_error",
            "upstream_timeout",
            message,
        )
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_error",
            code,
            message,
        )
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl ProxyError {
    /// The refusal as the endpoint's API writes one: Anthropic's error
    /// shape on the Messages API, OpenAI's everywhere else.
    pub fn respond(self, endpoint: Endpoint) -> Response {
        let body = match endpoint {
            Endpoint::Messages => super::dialect::messages::error_body(&self),
            _ => self.body(),
        };
        let mut res = (self.status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                res.headers_mut().insert(name, v);
            }
        }
        res
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        self.respond(Endpoint::Chat)
    }
}
