//! The one error type of the console's server functions: serializable, with a
//! stable code and a human message, never the text of a database or IO error.

use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum AppError {
    #[error("sign in required")]
    Unauthenticated,
    #[error("forbidden: {message}")]
    Forbidden { permission: String, message: String },
    #[error("{resource} not found")]
    NotFound { resource: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{message}")]
    Conflict { message: String },
    #[error("too many attempts; try again in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("internal error (reference {reference}); the server log has the details")]
    Internal { reference: String },
    #[error("bad request: {message}")]
    Request { message: String },
}

impl AppError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        AppError::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub fn not_found(resource: &str) -> Self {
        AppError::NotFound {
            resource: resource.to_owned(),
        }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        AppError::Conflict {
            message: message.into(),
        }
    }

    /// The HTTP status a server function answers with.
    pub fn status(&self) -> u16 {
        match self {
            AppError::Unauthenticated => 401,
            AppError::Forbidden { .. } => 403,
            AppError::NotFound { .. } => 404,
            AppError::Invalid { .. } | AppError::Request { .. } => 400,
            AppError::Conflict { .. } => 409,
            AppError::RateLimited { .. } => 429,
            AppError::Internal { .. } => 500,
        }
    }
}

impl From<crate::policy::Denied> for AppError {
    fn from(d: crate::policy::Denied) -> Self {
        AppError::Forbidden {
            permission: d.action.label().to_owned(),
            message: d.to_string(),
        }
    }
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    /// On the server, arguments that do not decode (a missing field, another
    /// encoding) are the caller's mistake: 400 naming the field, not 500.
    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        #[cfg(feature = "ssr")]
        if let ServerFnErrorErr::Args(m)
        | ServerFnErrorErr::MissingArg(m)
        | ServerFnErrorErr::Deserialization(m) = &value
        {
            let error = match missing_field(m) {
                Some(field) => AppError::invalid(field, "is required"),
                None => AppError::invalid("arguments", "cannot be read as a form"),
            };
            crate::api::ssr::set_status(&error);
            return error;
        }
        AppError::Request {
            message: value.to_string(),
        }
    }
}

/// The field serde names in "missing field `name`".
#[cfg(feature = "ssr")]
fn missing_field(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once("missing field `")?;
    rest.split_once('`').map(|(field, _)| field)
}

#[cfg(feature = "ssr")]
impl AppError {
    /// Logs the cause with a reference and returns an error that carries only
    /// the reference: no SQL, no IO text reaches a client.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> Self {
        let reference = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        tracing::error!(%reference, context, error = %cause, "internal error");
        AppError::Internal { reference }
    }
}

#[cfg(feature = "ssr")]
impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::internal("database", &e)
    }
}
