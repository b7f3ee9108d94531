//! Money, time and count formatting for both targets (server and browser),
//! `Usd`, the one type for an amount of money, and `ResetInterval`, the one
//! type for a budget's period (its calendar is in `core::limits`); nothing
//! here imports upward.

use crate::error::AppError;

/// Formats Unix milliseconds as `YYYY-MM-DD HH:MM UTC`, identically on the
/// server and in the browser (no locale, no time zone: no hydration mismatch).
pub fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// The month `ms` falls in, as `YYYY-MM`.
pub fn month_of(ms: i64) -> String {
    format_time(ms)[..7].to_owned()
}

/// `MM-DD` of a day number (days since 1970-01-01).
pub fn day_label(day: i64) -> String {
    format_time(day.saturating_mul(86_400_000))[5..10].to_owned()
}

/// A count as a chart plots it (text shows the exact integer).
pub fn count_f64(n: i64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "charts only")]
    let f = n as f64;
    f
}

/// Formats micro-dollars as `$5.00`, keeping digits past the cents where
/// they matter (`$0.000125`). The same as `Usd`'s `Display`.
pub fn format_usd(micros: i64) -> String {
    Usd(micros).to_string()
}

const MICROS: i64 = 1_000_000;

/// An amount of US dollars in micro-dollars (1e-6), exact. The field is
/// private: an amount comes from [`Usd::parse`], [`Usd::from_micros`] or
/// arithmetic that cannot wrap.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Usd(i64);

impl Usd {
    pub const ZERO: Usd = Usd(0);
    pub const MAX: Usd = Usd(i64::MAX);

    pub const fn from_micros(micros: i64) -> Usd {
        Usd(micros)
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Parses "5", "5.5", "$5.00", "0.000125"; at most 6 decimals, not negative.
    pub fn parse(field: &str, raw: &str) -> Result<Usd, AppError> {
        let s = raw.trim().trim_start_matches('$');
        let bad = || {
            AppError::invalid(
                field,
                format!("'{raw}' is not an amount in USD such as 5 or 12.50"),
            )
        };
        if s.starts_with('-') {
            return Err(AppError::invalid(field, "must not be negative"));
        }
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty() && frac.is_empty() || !whole.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        if frac.len() > 6 || !frac.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let frac: i64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
        whole
            .checked_mul(MICROS)
            .and_then(|w| w.checked_add(frac))
            .map(Usd)
            .ok_or_else(|| AppError::invalid(field, "is too large"))
    }

    /// An amount sent as a JSON number of dollars (machine APIs): finite, not
    /// negative, at most $1,000,000,000 (1e15 micro-dollars).
    pub fn from_dollars(field: &str, dollars: f64) -> Result<Usd, AppError> {
        if !dollars.is_finite() || dollars < 0.0 {
            return Err(AppError::invalid(
                field,
                "must be an amount of USD, 0 or more",
            ));
        }
        let micros = (dollars * 1_000_000.0).round();
        if micros > 1e15 {
            return Err(AppError::invalid(field, "is too large"));
        }
        #[expect(clippy::cast_possible_truncation, reason = "finite, ≥ 0 and ≤ 1e15")]
        Ok(Usd(micros as i64))
    }

    /// Blank means "no limit".
    pub fn parse_optional(field: &str, raw: &str) -> Result<Option<Usd>, AppError> {
        if raw.trim().is_empty() {
            Ok(None)
        } else {
            Usd::parse(field, raw).map(Some)
        }
    }

    pub fn checked_add(self, other: Usd) -> Option<Usd> {
        self.0.checked_add(other.0).map(Usd)
    }
    pub fn checked_sub(self, other: Usd) -> Option<Usd> {
        self.0.checked_sub(other.0).map(Usd)
    }
    pub fn saturating_add(self, other: Usd) -> Usd {
        Usd(self.0.saturating_add(other.0))
    }
    pub fn saturating_sub(self, other: Usd) -> Usd {
        Usd(self.0.saturating_sub(other.0))
    }

    /// The price of `tokens` at `per_million` tokens, rounded up to the next
    /// micro-dollar; saturates at [`Usd::MAX`] (negative token counts cost 0).
    pub fn for_tokens(tokens: i64, per_million: Usd) -> Usd {
        let micros = i128::from(tokens.max(0)) * i128::from(per_million.0.max(0));
        let up = (micros + i128::from(MICROS) - 1) / i128::from(MICROS);
        Usd(i64::try_from(up).unwrap_or(i64::MAX))
    }

    /// Dollars with six decimals, for machines and CSV (`12.500000`).
    pub fn plain(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let m = self.0.unsigned_abs();
        format!(
            "{sign}{}.{:06}",
            m / MICROS.unsigned_abs(),
            m % MICROS.unsigned_abs()
        )
    }

    /// Dollars as a float, for charts and JSON numbers only: amounts shown
    /// as text stay exact (`Display`).
    pub fn dollars(self) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "charts and JSON numbers only")]
        let d = self.0 as f64 / 1e6;
        d
    }
}

impl std::fmt::Display for Usd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let m = self.0.unsigned_abs();
        let (whole, frac) = (m / MICROS.unsigned_abs(), m % MICROS.unsigned_abs());
        let frac = format!("{frac:06}");
        let frac = frac.trim_end_matches('0');
        write!(f, "{sign}${whole}.{frac:0<2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_format_to_the_cent_or_finer() {
        for (micros, shown) in [
            (5_000_000, "$5.00"),
            (12_500_000, "$12.50"),
            (125, "$0.000125"),
            (0, "$0.00"),
            (-1_500_000, "-$1.50"),
        ] {
            assert_eq!(format_usd(micros), shown);
        }
        assert_eq!(Usd::from_micros(12_500_000).plain(), "12.500000");
        assert_eq!(Usd::from_micros(-5).plain(), "-0.000005");
    }

    #[test]
    fn times_format_in_utc() {
        for (ms, shown) in [
            (0, "1970-01-01 00:00 UTC"),
            (1_795_435_020_000, "2026-11-23 11:57 UTC"),
            (951_782_400_000, "2000-02-29 00:00 UTC"),
        ] {
            assert_eq!(format_time(ms), shown);
        }
        assert_eq!(month_of(1_795_435_020_000), "2026-11");
        assert_eq!(day_label(1), "01-02");
    }

    #[test]
    fn dollars_parse_exactly() {
        assert_eq!(Usd::parse("b", "5"), Ok(Usd::from_micros(5_000_000)));
        assert_eq!(Usd::parse("b", "$12.50"), Ok(Usd::from_micros(12_500_000)));
        assert_eq!(Usd::parse("b", "0.000125"), Ok(Usd::from_micros(125)));
        assert_eq!(Usd::parse("b", ".5"), Ok(Usd::from_micros(500_000)));
        for bad in ["", "abc", "1.2.3", "1.0000001", "1e3"] {
            assert!(Usd::parse("b", bad).is_err(), "{bad}");
        }
        assert_eq!(
            Usd::parse("max_budget", "-1")
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some("max_budget: must not be negative")
        );
        assert_eq!(Usd::parse_optional("b", " "), Ok(None));
    }

    #[test]
    fn sums_never_wrap() {
        assert_eq!(Usd::MAX.checked_add(Usd::from_micros(1)), None);
        assert_eq!(Usd::MAX.saturating_add(Usd::from_micros(1)), Usd::MAX);
        assert_eq!(
            Usd::for_tokens(1, Usd::from_micros(1_000_000)),
            Usd::from_micros(1)
        );
        assert_eq!(Usd::for_tokens(1, Usd::from_micros(1)), Usd::from_micros(1));
        assert_eq!(Usd::for_tokens(i64::MAX, Usd::MAX), Usd::MAX);
        assert_eq!(Usd::for_tokens(-5, Usd::MAX), Usd::ZERO);
    }
}

/// When a budget starts over: calendar-aligned in UTC. Stored and sent as
/// its name (`never`, `daily`, `weekly`, `monthly`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResetInterval {
    Never,
    Daily,
    Weekly,
    Monthly,
}

/// The stored name only (forms go through [`ResetInterval::parse`], which
/// also takes a blank for never).
impl std::str::FromStr for ResetInterval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ResetInterval::Never,
            ResetInterval::Daily,
            ResetInterval::Weekly,
            ResetInterval::Monthly,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| format!("unknown reset interval '{s}'"))
    }
}

impl ResetInterval {
    pub fn parse(field: &str, raw: &str) -> Result<ResetInterval, AppError> {
        match raw.trim() {
            "" | "never" => Ok(ResetInterval::Never),
            "daily" => Ok(ResetInterval::Daily),
            "weekly" => Ok(ResetInterval::Weekly),
            "monthly" => Ok(ResetInterval::Monthly),
            other => Err(AppError::invalid(
                field,
                format!("'{other}' is not one of never, daily, weekly, monthly"),
            )),
        }
    }

    /// The name as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetInterval::Never => "never",
            ResetInterval::Daily => "daily",
            ResetInterval::Weekly => "weekly",
            ResetInterval::Monthly => "monthly",
        }
    }
}

impl std::fmt::Display for ResetInterval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
