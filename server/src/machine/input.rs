//! Request bodies and query strings of the machine APIs, parsed with errors
//! that name the field; and the key settings every API shares, held within
//! the project's caps.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tollgate_app::core::keys::KeyLimits;
use tollgate_app::core::limits::{
    check_models_within, check_rate_within, parse_expiry, parse_tags, Caps, ResetInterval,
};
use tollgate_app::core::projects::Project;
use tollgate_app::format::Usd;

use super::ApiError;

/// A JSON body, read whatever the content type says: these APIs' users send
/// JSON with `curl -d`, which labels it a form.
pub struct Input<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Input<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::invalid("body", e.body_text()))?;
        let value: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Object(serde_json::Map::new())
        } else {
            serde_json::from_slice(&bytes).map_err(|e| ApiError {
                code: "malformed_json",
                ..ApiError::invalid("body", format!("malformed JSON: {e}"))
            })?
        };
        if !value.is_object() {
            return Err(ApiError::invalid("body", "must be a JSON object"));
        }
        serde_path_to_error::deserialize(value)
            .map(Input)
            .map_err(|e| {
                let path = e.path().to_string();
                serde_problem(&path, &e.into_inner().to_string())
            })
    }
}

/// A query string, with unknown parameters refused by name.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Params)
            .map_err(|e| {
                let path = e.path().to_string();
                serde_problem(&path, &e.into_inner().to_string())
            })
    }
}

/// Serde's complaint as a 400 naming the field: the path where it happened,
/// or the field an "unknown field `x`" or "missing field `x`" names.
fn serde_problem(path: &str, message: &str) -> ApiError {
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    let named = message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("unknown field") || message.starts_with("missing field"));
    let field = match (path, named) {
        (".", Some(n)) => n.to_owned(),
        (p, Some(n)) if p == n || p.ends_with(&format!(".{n}")) => p.to_owned(),
        (p, Some(n)) => format!("{p}.{n}"),
        (".", None) => "body".to_owned(),
        (p, None) => p.to_owned(),
    };
    let message = if message.starts_with("unknown field") {
        format!("unknown field (not accepted here); {message}")
    } else {
        without_values(message)
    };
    ApiError::invalid(&field, message)
}

/// Serde's complaint without the value it quotes (`invalid type: string
/// "sk-…", expected …`): a wrongly placed secret is never echoed back.
fn without_values(message: &str) -> String {
    match (message.find(" \""), message.rfind("\",")) {
        (Some(start), Some(end)) if end > start => {
            format!("{}{}", &message[..start], &message[end + 1..])
        }
        _ => message.to_owned(),
    }
}

/// For `Option<Option<T>>` fields: absent stays `None`, `null` becomes
/// `Some(None)` (clear it), a value `Some(Some(v))`.
pub fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Dollars as a JSON number, to micro-dollars.
pub fn usd(field: &str, dollars: f64) -> Result<Usd, ApiError> {
    Ok(Usd::from_dollars(field, dollars)?)
}

/// A rate limit as a JSON number: a positive whole number.
pub fn rate(field: &str, n: i64) -> Result<i64, ApiError> {
    if n > 0 {
        Ok(n)
    } else {
        Err(ApiError::invalid(field, "must be a positive whole number"))
    }
}

/// LiteLLM's durations: `30s`, `30m`, `30h`, `30d`, `1mo` (30 days), `1w`.
/// A rate limit as a change: absent keeps it, `null` clears it.
pub fn limit_change(
    field: &'static str,
    n: Option<Option<i64>>,
) -> Result<Option<(&'static str, Option<i64>)>, ApiError> {
    n.map(|n| n.map(|n| rate(field, n)).transpose().map(|n| (field, n)))
        .transpose()
}

/// A budget in dollars as a change: absent keeps it, `null` clears it.
pub fn budget_change(
    field: &str,
    dollars: Option<Option<f64>>,
) -> Result<Option<Option<Usd>>, ApiError> {
    dollars
        .map(|d| d.map(|d| usd(field, d)).transpose())
        .transpose()
}

pub fn duration_ms(field: &str, raw: &str) -> Result<i64, ApiError> {
    let s = raw.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let per: i64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "mo" => 30 * 86_400_000,
        _ => 0,
    };
    match n.parse::<i64>() {
        Ok(n) if n > 0 && per > 0 => n
            .checked_mul(per)
            .ok_or_else(|| ApiError::invalid(field, "is too long")),
        _ => Err(ApiError::invalid(
            field,
            format!("'{raw}' is not a duration such as 30s, 30m, 30h, 30d or 1mo"),
        )),
    }
}

/// LiteLLM's `budget_duration` as one of Tollgate's calendar resets (UTC
/// days, weeks from Monday, months from the 1st).
pub fn reset_of_duration(field: &str, raw: &str) -> Result<ResetInterval, ApiError> {
    let ms = duration_ms(field, raw)?;
    match ms {
        86_400_000 => Ok(ResetInterval::Daily),
        604_800_000 => Ok(ResetInterval::Weekly),
        2_592_000_000 => Ok(ResetInterval::Monthly),
        _ => Err(ApiError::invalid(
            field,
            format!(
                "'{raw}' is not a reset Tollgate keeps: budgets reset on calendar days, weeks \
                 or months (UTC), so use 1d, 7d or 1mo (30d is read as monthly too)"
            ),
        )),
    }
}

pub fn reset(field: &str, raw: &str) -> Result<ResetInterval, ApiError> {
    Ok(ResetInterval::parse(field, raw)?)
}

/// An expiry: an RFC 3339 time (or `YYYY-MM-DDTHH:MM`, UTC), or a duration
/// from now such as `90d`.
pub fn expiry(field: &str, raw: &str, now: i64) -> Result<i64, ApiError> {
    if raw.trim().ends_with(|c: char| c.is_ascii_alphabetic()) && !raw.contains('-') {
        return Ok(now.saturating_add(duration_ms(field, raw)?));
    }
    parse_expiry(field, raw, now)?
        .ok_or_else(|| ApiError::invalid(field, "must be a date and time or a duration"))
}

/// `[from, to)` in Unix ms from two `YYYY-MM-DD` days, both inclusive (each
/// named by its field); the last 30 days by default, at most 366.
pub fn days(
    (from_field, from): (&str, Option<&str>),
    (to_field, to): (&str, Option<&str>),
) -> Result<(i64, i64), ApiError> {
    let day = |field: &str, raw: &str| -> Result<i64, ApiError> {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(raw.trim(), fmt)
            .map(|d| d.midnight().assume_utc().unix_timestamp() * 1000)
            .map_err(|_| {
                ApiError::invalid(field, format!("'{raw}' is not a date such as 2026-11-01"))
            })
    };
    let today = tollgate_app::core::now_ms().div_euclid(86_400_000) * 86_400_000;
    let end = match to {
        Some(t) => day(to_field, t)? + 86_400_000,
        None => today + 86_400_000,
    };
    let start = match from {
        Some(f) => day(from_field, f)?,
        None => end - 30 * 86_400_000,
    };
    if start >= end {
        return Err(ApiError::invalid(
            from_field,
            format!("must not be after {to_field}"),
        ));
    }
    if end - start > 366 * 86_400_000 {
        return Err(ApiError::invalid(
            from_field,
            "a report spans at most 366 days",
        ));
    }
    Ok((start, end))
}

/// A page of a list: `limit` (100 unless given, 1 to 1,000) and `offset`
/// (0 unless given, at most 10,000,000).
pub fn page(
    limit_field: &str,
    limit: Option<i64>,
    offset_field: &str,
    offset: Option<i64>,
) -> Result<(i64, i64), ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(limit_field, "must be from 1 to 1000"));
    }
    let offset = offset.unwrap_or(0);
    if !(0..=10_000_000).contains(&offset) {
        return Err(ApiError::invalid(
            offset_field,
            "must be from 0 to 10000000",
        ));
    }
    Ok((limit, offset))
}

/// The settings of a key any machine API may set, each paired with the name
/// that API gives the field (for its errors). `None`: leave as it is.
#[derive(Default)]
pub struct KeySpec {
    pub name: Option<(&'static str, String)>,
    pub models: Option<(&'static str, Vec<String>)>,
    pub budget_micros: Option<Option<Usd>>,
    pub budget_reset: Option<ResetInterval>,
    pub tpm: Option<(&'static str, Option<i64>)>,
    pub rpm: Option<(&'static str, Option<i64>)>,
    pub expires_at: Option<Option<i64>>,
    pub metadata: Option<(&'static str, Value)>,
    pub tags: Option<(&'static str, Vec<String>)>,
}

impl KeySpec {
    /// The fields every machine API names alike (models, rate limits,
    /// metadata, tags); the caller adds the ones each API names its own way.
    pub fn shared(
        models: Option<Vec<String>>,
        tpm_limit: Option<Option<i64>>,
        rpm_limit: Option<Option<i64>>,
        metadata: Option<Value>,
        tags: Option<Vec<String>>,
    ) -> Result<KeySpec, ApiError> {
        Ok(KeySpec {
            models: models.map(|m| ("models", m)),
            tpm: limit_change("tpm_limit", tpm_limit)?,
            rpm: limit_change("rpm_limit", rpm_limit)?,
            metadata: metadata.map(|m| ("metadata", m)),
            tags: tags.map(|t| ("tags", t)),
            ..KeySpec::default()
        })
    }

    /// The key's limits after this change: from `base` (an update) or from
    /// nothing (a create, where the name is required), held within `project`.
    pub fn apply(self, base: Option<&KeyLimits>, project: &Project) -> Result<KeyLimits, ApiError> {
        let mut l = match base {
            Some(b) => b.clone(),
            None => {
                if self.name.is_none() {
                    return Err(ApiError::invalid("name", "is required"));
                }
                KeyLimits {
                    name: String::new(),
                    caps: Caps::open(project.caps.models.clone()),
                    expires_at: None,
                    no_content_logging: false,
                    tags: Vec::new(),
                    metadata: Value::Object(serde_json::Map::new()),
                }
            }
        };
        if let Some((field, name)) = self.name {
            l.name = tollgate_app::core::domain::name(field, &name, 100)?;
        }
        if let Some((field, mut models)) = self.models {
            models.retain(|m| !m.trim().is_empty());
            models.dedup();
            if models.is_empty() {
                models = project.caps.models.clone();
            }
            check_models_within(field, &models, &project.caps.models)?;
            l.caps.models = models;
        }
        if let Some(b) = self.budget_micros {
            l.caps.budget = b;
        }
        if let Some(r) = self.budget_reset {
            l.caps.budget_reset = r;
        }
        if let Some((field, tpm)) = self.tpm {
            check_rate_within(field, tpm, project.caps.tpm_limit)?;
            l.caps.tpm_limit = tpm;
        }
        if let Some((field, rpm)) = self.rpm {
            check_rate_within(field, rpm, project.caps.rpm_limit)?;
            l.caps.rpm_limit = rpm;
        }
        if let Some(e) = self.expires_at {
            l.expires_at = e;
        }
        if let Some((field, metadata)) = self.metadata {
            if !metadata.is_object() {
                return Err(ApiError::invalid(field, "must be a JSON object"));
            }
            if metadata.to_string().len() > 16_384 {
                return Err(ApiError::invalid(field, "must be at most 16 KiB of JSON"));
            }
            l.metadata = metadata;
        }
        if let Some((field, tags)) = self.tags {
            l.tags = parse_tags(field, &tags.join(","))?;
        }
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_litellm_writes_them() {
        assert_eq!(duration_ms("d", "30s").ok(), Some(30_000));
        assert_eq!(duration_ms("d", "30m").ok(), Some(1_800_000));
        assert_eq!(duration_ms("d", "30h").ok(), Some(108_000_000));
        assert_eq!(duration_ms("d", "90d").ok(), Some(90 * 86_400_000));
        assert_eq!(duration_ms("d", "1mo").ok(), Some(30 * 86_400_000));
        for bad in ["", "30", "d", "-1d", "1y", "0d"] {
            let e = duration_ms("duration", bad).err().map(|e| e.message);
            assert!(e.is_some_and(|m| m.starts_with("duration: ")), "{bad}");
        }
        assert_eq!(
            reset_of_duration("b", "1mo").ok(),
            Some(ResetInterval::Monthly)
        );
        assert_eq!(
            reset_of_duration("b", "24h").ok(),
            Some(ResetInterval::Daily)
        );
        assert!(reset_of_duration("b", "3d").is_err());
    }

    #[test]
    fn serde_complaints_never_quote_the_value() {
        let e = serde_problem(
            "keys",
            "invalid type: string \"sk-secret-value\", expected a sequence",
        );
        assert_eq!(e.message, "keys: invalid type: string, expected a sequence");
    }

    #[test]
    fn serde_complaints_name_the_field() {
        let e = serde_problem(".", "unknown field `colour`, expected one of `name`");
        assert_eq!(e.field.as_deref(), Some("colour"));
        let e = serde_problem("colour", "unknown field `colour`, expected one of `name`");
        assert_eq!(e.field.as_deref(), Some("colour"));
        let e = serde_problem("general_settings", "unknown field `x`, expected `alerting`");
        assert_eq!(e.field.as_deref(), Some("general_settings.x"));
        let e = serde_problem(".", "missing field `api_key_name` at line 1 column 2");
        assert_eq!(e.field.as_deref(), Some("api_key_name"));
        assert_eq!(e.message, "api_key_name: missing field `api_key_name`");
        let e = serde_problem("tpm_limit", "invalid type: string \"x\", expected i64");
        assert_eq!(e.field.as_deref(), Some("tpm_limit"));
    }
}
