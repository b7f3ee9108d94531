//! The values that limit a project or a key — money, reset periods, rate
//! limits, models, tags, expiry, IP allowlists — parsed once, with errors that
//! name the field; and the rule that a key never exceeds its project.

use time::{Date, Duration, OffsetDateTime, Time};

use crate::error::AppError;
use crate::format::Usd;

pub use crate::format::ResetInterval;

/// The caps a project sets and each of its keys carries within them: the
/// models it may call, its rate limits, its budget and when that starts over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caps {
    pub models: Vec<String>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub budget: Option<Usd>,
    pub budget_reset: ResetInterval,
}

impl Caps {
    /// `models`, and no limit of any kind.
    pub fn open(models: Vec<String>) -> Caps {
        Caps {
            models,
            tpm_limit: None,
            rpm_limit: None,
            budget: None,
            budget_reset: ResetInterval::Never,
        }
    }

    /// The console's form fields `tpm`, `rpm`, `max_budget` and `budget_reset`
    /// (a blank is no limit).
    pub fn parse(
        models: Vec<String>,
        tpm: &str,
        rpm: &str,
        max_budget: &str,
        budget_reset: &str,
    ) -> Result<Caps, AppError> {
        Ok(Caps {
            models,
            tpm_limit: parse_rate("tpm", tpm)?,
            rpm_limit: parse_rate("rpm", rpm)?,
            budget: Usd::parse_optional("max_budget", max_budget)?,
            budget_reset: ResetInterval::parse("budget_reset", budget_reset)?,
        })
    }
}

/// The calendar of a reset period (server only: it needs `time`).
impl ResetInterval {
    /// The start of the period that contains `now_ms` (days at 00:00 UTC,
    /// weeks on Monday, months on the 1st); `None` for never.
    pub fn period_start(self, now_ms: i64) -> Option<i64> {
        let date = utc(now_ms).date();
        let start = match self {
            ResetInterval::Never => return None,
            ResetInterval::Daily => date,
            ResetInterval::Weekly => {
                date - Duration::days(i64::from(date.weekday().number_days_from_monday()))
            }
            ResetInterval::Monthly => {
                Date::from_calendar_date(date.year(), date.month(), 1).ok()?
            }
        };
        Some(ms_of(start))
    }

    /// When the period that contains `now_ms` ends.
    pub fn next_reset(self, now_ms: i64) -> Option<i64> {
        let start = utc(self.period_start(now_ms)?).date();
        let next = match self {
            ResetInterval::Never => return None,
            ResetInterval::Daily => start.next_day()?,
            ResetInterval::Weekly => start + Duration::days(7),
            ResetInterval::Monthly => {
                let (y, m) = (start.year(), start.month());
                let y = if m == time::Month::December { y + 1 } else { y };
                Date::from_calendar_date(y, m.next(), 1).ok()?
            }
        };
        Some(ms_of(next))
    }
}

fn utc(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn ms_of(date: Date) -> i64 {
    let t = date.with_time(Time::MIDNIGHT).assume_utc();
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Requests or tokens per minute; blank means the cap above (or none).
pub fn parse_rate(field: &str, raw: &str) -> Result<Option<i64>, AppError> {
    let s = raw.trim();
    if s.is_empty() {
        return Ok(None);
    }
    match s.parse::<i64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        Ok(_) => Err(AppError::invalid(field, "must be a positive whole number")),
        Err(_) => Err(AppError::invalid(
            field,
            format!("'{s}' is not a whole number"),
        )),
    }
}

/// Up to 20 tags of up to 40 characters: letters, digits, `-`, `_`, `:`, `.`.
pub fn parse_tags(field: &str, raw: &str) -> Result<Vec<String>, AppError> {
    let mut tags: Vec<String> = Vec::new();
    for t in raw
        .split([',', '\n'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        if t.chars().count() > 40 {
            return Err(AppError::invalid(
                field,
                format!("tag '{t}' is longer than 40 characters"),
            ));
        }
        if !t.chars().all(|c| c.is_alphanumeric() || "-_:.".contains(c)) {
            return Err(AppError::invalid(
                field,
                format!("tag '{t}' may only hold letters, digits, '-', '_', ':' and '.'"),
            ));
        }
        let t = t.to_lowercase();
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    if tags.len() > 20 {
        return Err(AppError::invalid(field, "at most 20 tags"));
    }
    Ok(tags)
}

/// An expiry in the future: RFC 3339, or `YYYY-MM-DDTHH:MM` read as UTC (what
/// a browser's datetime-local field sends). Blank: never expires.
pub fn parse_expiry(field: &str, raw: &str, now_ms: i64) -> Result<Option<i64>, AppError> {
    let s = raw.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let local = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let local_secs =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let at = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .or_else(|| {
            time::PrimitiveDateTime::parse(s, local)
                .ok()
                .map(|p| p.assume_utc())
        })
        .or_else(|| {
            time::PrimitiveDateTime::parse(s, local_secs)
                .ok()
                .map(|p| p.assume_utc())
        })
        .ok_or_else(|| {
            AppError::invalid(
                field,
                format!("'{s}' is not a date and time such as 2026-12-31T23:59 (UTC)"),
            )
        })?;
    let ms = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    if ms <= now_ms {
        return Err(AppError::invalid(field, "must be in the future"));
    }
    Ok(Some(ms))
}

/// CIDRs (or single addresses) a project's keys may be used from; empty: any.
pub fn parse_ip_allowlist(field: &str, raw: &str) -> Result<Vec<String>, AppError> {
    let mut out = Vec::new();
    for item in raw
        .split([',', '\n', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let net = item
            .parse::<ipnet::IpNet>()
            .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                AppError::invalid(
                    field,
                    format!("'{item}' is not an IP address or CIDR such as 10.0.0.0/8"),
                )
            })?;
        let s = net.trunc().to_string();
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// A key may only name models its project allows.
pub fn check_models_within(
    field: &str,
    models: &[String],
    allowed: &[String],
) -> Result<(), AppError> {
    for m in models {
        if !allowed.contains(m) {
            return Err(AppError::invalid(
                field,
                format!(
                    "model '{m}' is not among the project's models ({})",
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// A key's TPM or RPM may not exceed its project's.
pub fn check_rate_within(
    field: &str,
    value: Option<i64>,
    cap: Option<i64>,
) -> Result<(), AppError> {
    if let (Some(v), Some(c)) = (value, cap) {
        if v > c {
            return Err(AppError::invalid(
                field,
                format!("{field} {v} exceeds the project's cap of {c}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        let t = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap()
    }

    #[test]
    fn resets_are_calendar_aligned_in_utc() {
        // 2026-11-25 is a Wednesday.
        let now = at("2026-11-25T15:30:00Z");
        for (interval, from, next) in [
            (
                ResetInterval::Daily,
                "2026-11-25T15:30:00Z",
                "2026-11-26T00:00:00Z",
            ),
            (
                ResetInterval::Weekly,
                "2026-11-25T15:30:00Z",
                "2026-11-30T00:00:00Z",
            ),
            (
                ResetInterval::Monthly,
                "2026-11-25T15:30:00Z",
                "2026-12-01T00:00:00Z",
            ),
            (
                ResetInterval::Monthly,
                "2026-12-31T23:59:59Z",
                "2027-01-01T00:00:00Z",
            ),
        ] {
            assert_eq!(interval.next_reset(at(from)), Some(at(next)), "{from}");
        }
        assert_eq!(
            ResetInterval::Weekly.period_start(now),
            Some(at("2026-11-23T00:00:00Z"))
        );
        assert_eq!(ResetInterval::Never.next_reset(now), None);
        // A Monday at midnight starts its own week.
        let monday = at("2026-11-30T00:00:00Z");
        assert_eq!(ResetInterval::Weekly.period_start(monday), Some(monday));
        assert!(ResetInterval::parse("budget_reset", "hourly").is_err());
    }

    #[test]
    fn expiry_must_be_in_the_future() {
        let now = at("2026-11-23T10:00:00Z");
        assert_eq!(
            parse_expiry("expires_at", "2026-12-24T10:00", now),
            Ok(Some(at("2026-12-24T10:00:00Z")))
        );
        assert_eq!(
            parse_expiry("expires_at", "2026-12-24T10:00:00+01:00", now),
            Ok(Some(at("2026-12-24T09:00:00Z")))
        );
        assert_eq!(parse_expiry("expires_at", "", now), Ok(None));
        assert_eq!(
            parse_expiry("expires_at", "2026-01-01T00:00", now)
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some("expires_at: must be in the future")
        );
        assert!(parse_expiry("expires_at", "next week", now).is_err());
    }

    #[test]
    fn tags_and_allowlists_are_normalised() {
        assert_eq!(
            parse_tags("tags", "CI, prod ,ci,,"),
            Ok(vec!["ci".to_owned(), "prod".to_owned()])
        );
        assert!(parse_tags("tags", "has space").is_err());
        assert_eq!(
            parse_ip_allowlist("ip_allowlist", "10.1.2.3/8, 192.168.0.7\n::1"),
            Ok(vec![
                "10.0.0.0/8".to_owned(),
                "192.168.0.7/32".to_owned(),
                "::1/128".to_owned()
            ])
        );
        assert!(parse_ip_allowlist("ip_allowlist", "10.0.0.0/33").is_err());
    }

    #[test]
    fn key_limits_stay_within_the_project() {
        assert_eq!(
            check_rate_within("rpm", Some(120), Some(100))
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some("rpm: rpm 120 exceeds the project's cap of 100")
        );
        assert!(check_rate_within("rpm", Some(100), Some(100)).is_ok());
        assert!(check_rate_within("rpm", Some(1000), None).is_ok());
        let allowed = vec!["mock/echo".to_owned()];
        assert!(check_models_within("models", &["mock/echo".to_owned()], &allowed).is_ok());
        assert!(check_models_within("models", &["openai/gpt-4o".to_owned()], &allowed).is_err());
    }
}
