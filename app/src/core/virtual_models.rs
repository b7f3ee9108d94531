//! The `virtual_models` table: stable names (`smart/balanced`, `eu/balanced`)
//! that an organization routes over its catalogue, with a strategy and an
//! optional region; and the health of each place a model is served from.

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::error::AppError;
use crate::policy::OrgScope;

/// How a virtual model picks among its targets. Every strategy goes on to
/// the next target when one fails before its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// In the order listed.
    Fallback,
    /// First pick by weight (a share of the traffic), then in order.
    Weighted,
    /// The lowest recent latency first, among healthy targets.
    Latency,
    /// The cheapest for this request that fits its context first.
    Cost,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::Fallback,
        Strategy::Weighted,
        Strategy::Latency,
        Strategy::Cost,
    ];

    pub fn parse(field: &str, raw: &str) -> Result<Strategy, AppError> {
        Strategy::ALL
            .into_iter()
            .find(|s| s.as_str() == raw.trim())
            .ok_or_else(|| {
                AppError::invalid(
                    field,
                    format!(
                        "'{}' is not one of fallback, weighted, latency, cost",
                        raw.trim()
                    ),
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Fallback => "fallback",
            Strategy::Weighted => "weighted",
            Strategy::Latency => "latency",
            Strategy::Cost => "cost",
        }
    }
}

/// One place a virtual model may be served from: a catalogue model, on one
/// named provider where given (else wherever the catalogue serves it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub model: String,
    #[serde(default)]
    pub provider: Option<String>,
    /// Its share of the traffic under `weighted` (1 elsewhere).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl Target {
    /// `model [@provider] [weight]`, as the console writes a target.
    pub fn line(&self) -> String {
        let mut out = self.model.clone();
        if let Some(p) = &self.provider {
            out.push_str(" @");
            out.push_str(p);
        }
        if self.weight != 1 {
            out.push_str(&format!(" {}", self.weight));
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualModel {
    pub id: String,
    pub description: String,
    pub strategy: Strategy,
    /// The region every target must be served in; empty for none.
    pub region: String,
    pub targets: Vec<Target>,
}

/// The most targets one virtual model routes over.
pub const MAX_TARGETS: usize = 10;
/// The largest weight of one target.
pub const MAX_WEIGHT: u32 = 1000;

impl VirtualModel {
    /// Checks an owner's virtual model against the catalogue's model ids:
    /// an id of the `family/name` shape that no catalogue model has, 1 to
    /// [`MAX_TARGETS`] targets, each a catalogue model (not another virtual
    /// model), weights from 1 to [`MAX_WEIGHT`].
    pub fn parse(
        id: &str,
        description: &str,
        strategy: &str,
        region: &str,
        targets: &str,
        catalogue: &[String],
    ) -> Result<VirtualModel, AppError> {
        let id = id.trim();
        let shape = id.split_once('/').is_some_and(|(family, name)| {
            !family.is_empty()
                && !name.is_empty()
                && id.len() <= 120
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:".contains(c))
        });
        if !shape {
            return Err(AppError::invalid(
                "id",
                "a name such as smart/balanced: family/name, letters, digits, '-', '_', '.', ':'",
            ));
        }
        if catalogue.iter().any(|m| m == id) {
            return Err(AppError::invalid(
                "id",
                format!("'{id}' is a model of the catalogue; a virtual model needs its own name"),
            ));
        }
        let description = description.trim();
        if description.chars().count() > 300 {
            return Err(AppError::invalid("description", "at most 300 characters"));
        }
        let strategy = Strategy::parse("strategy", strategy)?;
        let region = super::providers::parse_region("region", region)?;
        let mut parsed = Vec::new();
        for line in targets
            .split(['\n', ','])
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            parsed.push(parse_target(line, catalogue)?);
        }
        if parsed.is_empty() || parsed.len() > MAX_TARGETS {
            return Err(AppError::invalid(
                "targets",
                format!("1 to {MAX_TARGETS} targets, one a line: model [@provider] [weight]"),
            ));
        }
        Ok(VirtualModel {
            id: id.to_owned(),
            description: description.to_owned(),
            strategy,
            region,
            targets: parsed,
        })
    }

    /// The targets as the console's text area shows them.
    pub fn targets_text(&self) -> String {
        self.targets
            .iter()
            .map(Target::line)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `model [@provider] [weight]`.
fn parse_target(line: &str, catalogue: &[String]) -> Result<Target, AppError> {
    let bad = |why: String| AppError::invalid("targets", format!("'{line}': {why}"));
    let mut parts = line.split_whitespace();
    let model = parts.next().unwrap_or_default().to_owned();
    if !catalogue.contains(&model) {
        return Err(bad(format!(
            "'{model}' is not a model of the organization's catalogue"
        )));
    }
    let mut target = Target {
        model,
        provider: None,
        weight: 1,
    };
    for part in parts {
        if let Some(p) = part.strip_prefix('@') {
            let ok = !p.is_empty()
                && p.len() <= 40
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok || target.provider.is_some() {
                return Err(bad("one provider, written @name".to_owned()));
            }
            target.provider = Some(p.to_owned());
        } else {
            target.weight = part
                .parse::<u32>()
                .ok()
                .filter(|w| (1..=MAX_WEIGHT).contains(w))
                .ok_or_else(|| bad(format!("a weight is a whole number from 1 to {MAX_WEIGHT}")))?;
        }
    }
    Ok(target)
}

/// The virtual models every organization starts with: routed over the
/// catalogue's public models, the mock standing in until one of their
/// providers is configured (see `stands_in`).
pub fn defaults() -> Vec<VirtualModel> {
    let t = |model: &str| Target {
        model: model.to_owned(),
        provider: None,
        weight: 1,
    };
    let vm = |id: &str, description: &str, strategy, region: &str, targets: &[&str]| VirtualModel {
        id: id.to_owned(),
        description: description.to_owned(),
        strategy,
        region: region.to_owned(),
        targets: targets.iter().map(|m| t(m)).collect(),
    };
    vec![
        vm(
            "smart/balanced",
            "A good, affordable model for most work; the mock stands in until a provider is configured.",
            Strategy::Fallback,
            "",
            &["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku", "mock/echo"],
        ),
        vm(
            "smart/fast",
            "The fastest answering of the small models.",
            Strategy::Latency,
            "",
            &["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku", "mock/fast"],
        ),
        vm(
            "smart/best",
            "The most capable models, in order.",
            Strategy::Fallback,
            "",
            &["anthropic/claude-sonnet-4", "openai/gpt-4.1", "mock/echo"],
        ),
        vm(
            "eu/balanced",
            "Like smart/balanced, served only by providers in the EU.",
            Strategy::Fallback,
            "eu",
            &["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku", "mock/echo"],
        ),
    ]
}

pub async fn seed(conn: &mut AnyConnection, org_id: &str, now: i64) -> Result<(), sqlx::Error> {
    for v in defaults() {
        insert(conn, org_id, &v, now).await?;
    }
    Ok(())
}

async fn insert(
    conn: &mut AnyConnection,
    org_id: &str,
    v: &VirtualModel,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO virtual_models (org_id, id, description, strategy, region, targets_json, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
         ON CONFLICT (org_id, id) DO UPDATE SET description = $3, strategy = $4, region = $5, \
         targets_json = $6, updated_at = $7",
    )
    .bind(org_id)
    .bind(&v.id)
    .bind(&v.description)
    .bind(v.strategy.as_str())
    .bind(&v.region)
    .bind(serde_json::to_string(&v.targets).unwrap_or_else(|_| "[]".to_owned()))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn of_row(r: &sqlx::any::AnyRow) -> Result<VirtualModel, sqlx::Error> {
    let strategy: String = r.try_get("strategy")?;
    let targets: String = r.try_get("targets_json")?;
    Ok(VirtualModel {
        id: r.try_get("id")?,
        description: r.try_get("description")?,
        strategy: Strategy::parse("strategy", &strategy)
            .map_err(|_| sqlx::Error::Decode(format!("unknown strategy {strategy}").into()))?,
        region: r.try_get("region")?,
        targets: serde_json::from_str(&targets).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
    })
}

const COLUMNS: &str = "SELECT id, description, strategy, region, targets_json FROM virtual_models \
                       WHERE org_id = $1 ORDER BY id";

pub async fn list(
    conn: &mut AnyConnection,
    scope: &OrgScope,
) -> Result<Vec<VirtualModel>, sqlx::Error> {
    load_for_proxy(conn, scope.org_id()).await
}

/// One organization's virtual models, for the proxy's memory.
pub async fn load_for_proxy(
    conn: &mut AnyConnection,
    org_id: &str,
) -> Result<Vec<VirtualModel>, sqlx::Error> {
    let rows = sqlx::query(COLUMNS)
        .bind(org_id)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(of_row).collect()
}

/// Adds or replaces a virtual model; returns the previous one, if any.
pub async fn upsert(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    v: &VirtualModel,
    now: i64,
) -> Result<Option<VirtualModel>, sqlx::Error> {
    let before = sqlx::query(
        "SELECT id, description, strategy, region, targets_json FROM virtual_models \
         WHERE org_id = $1 AND id = $2",
    )
    .bind(scope.org_id())
    .bind(&v.id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(of_row)
    .transpose()?;
    insert(conn, scope.org_id(), v, now).await?;
    Ok(before)
}

/// Deletes a virtual model (`$1` the organization, `$2` its id).
pub(crate) const DELETE: &str = "DELETE FROM virtual_models WHERE org_id = $1 AND id = $2";

/// Where a model is served from, as the health board knows it: the
/// organization, the provider's name and the model's name upstream.
pub type Place = (String, String, String);

/// How one place has been answering, on this instance: consecutive
/// failures, until when it is out (circuit open), and a moving average of
/// its latency. Lock-free: the proxy updates it on every answer.
#[derive(Debug, Default)]
pub struct Health {
    failures: AtomicU32,
    open_until: AtomicI64,
    /// Microseconds, an exponential moving average (0: never measured).
    latency_us: AtomicU64,
    answered: AtomicU64,
}

/// A place's health as the console shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthView {
    pub failures: u32,
    /// Until when (Unix ms) it is out, where it is.
    pub open_until: Option<i64>,
    pub latency_ms: Option<u64>,
    pub answered: u64,
}

impl Health {
    /// Whether it may be tried at `now`: closed, or its cool-down over (then
    /// one more failure takes it out again).
    pub fn available(&self, now: i64) -> bool {
        self.open_until.load(Ordering::Relaxed) <= now
    }

    pub fn latency_us(&self) -> u64 {
        self.latency_us.load(Ordering::Relaxed)
    }

    pub fn succeeded(&self, latency_us: u64) {
        self.failures.store(0, Ordering::Relaxed);
        self.open_until.store(0, Ordering::Relaxed);
        self.answered.fetch_add(1, Ordering::Relaxed);
        // A fifth of each new sample; the first is taken whole.
        let _ = self
            .latency_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(match old {
                    0 => latency_us.max(1),
                    old => (old.saturating_mul(4).saturating_add(latency_us) / 5).max(1),
                })
            });
    }

    /// Counts a failure; the `threshold`th in a row (or any after a
    /// cool-down) takes it out until `now + cool_down_ms`. Returns whether
    /// it was taken out.
    pub fn failed(&self, now: i64, threshold: u32, cool_down_ms: i64) -> bool {
        let n = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if n >= threshold.max(1) {
            self.open_until
                .store(now.saturating_add(cool_down_ms), Ordering::Relaxed);
            return true;
        }
        false
    }

    pub fn view(&self, now: i64) -> HealthView {
        let open = self.open_until.load(Ordering::Relaxed);
        let latency = self.latency_us();
        HealthView {
            failures: self.failures.load(Ordering::Relaxed),
            open_until: (open > now).then_some(open),
            latency_ms: (latency > 0).then(|| latency.div_ceil(1000)),
            answered: self.answered.load(Ordering::Relaxed),
        }
    }
}

/// Every place's health on this instance, shared by the proxy (which
/// writes it) and the console (which shows it). Entries live as long as
/// the process: a reload of an organization keeps its places' history.
#[derive(Debug, Default)]
pub struct HealthBoard {
    places: RwLock<HashMap<Place, Arc<Health>>>,
}

impl HealthBoard {
    /// The health of a place, made on first use.
    pub fn of(&self, org: &str, provider: &str, upstream: &str) -> Arc<Health> {
        let key = (org.to_owned(), provider.to_owned(), upstream.to_owned());
        if let Some(h) = self
            .places
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return h.clone();
        }
        self.places
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone()
    }

    /// The places of one organization that have a history.
    pub fn of_org(&self, org: &str, now: i64) -> Vec<((String, String), HealthView)> {
        let mut out: Vec<_> = self
            .places
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|((o, _, _), h)| {
                o == org
                    && (h.answered.load(Ordering::Relaxed) > 0
                        || h.failures.load(Ordering::Relaxed) > 0)
            })
            .map(|((_, p, u), h)| ((p.clone(), u.clone()), h.view(now)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogue() -> Vec<String> {
        ["mock/echo", "mock/fast", "openai/gpt-4o-mini"]
            .map(str::to_owned)
            .to_vec()
    }

    #[test]
    fn a_virtual_model_names_the_bad_field() {
        let c = catalogue();
        let err = |id, strategy, region, targets| {
            let e = VirtualModel::parse(id, "", strategy, region, targets, &c)
                .err()
                .unwrap();
            format!("{e:?}")
        };
        assert!(err("balanced", "fallback", "", "mock/echo").contains("id"));
        assert!(err("mock/echo", "fallback", "", "mock/fast").contains("catalogue"));
        assert!(err("smart/x", "random", "", "mock/echo").contains("strategy"));
        assert!(err("smart/x", "fallback", "e u", "mock/echo").contains("region"));
        assert!(err("smart/x", "fallback", "", "").contains("targets"));
        assert!(err("smart/x", "fallback", "", "openai/gpt-5").contains("gpt-5"));
        assert!(err("smart/x", "weighted", "", "mock/echo 0").contains("weight"));
        assert!(err("smart/x", "weighted", "", "mock/echo @a @b").contains("provider"));
        let many = ["mock/echo"; MAX_TARGETS + 1].join("\n");
        assert!(err("smart/x", "fallback", "", &many).contains("targets"));
    }

    #[test]
    fn targets_read_back_as_written() {
        let c = catalogue();
        let v = VirtualModel::parse(
            " eu/x ",
            "d",
            "weighted",
            "EU",
            "openai/gpt-4o-mini @azure-eu 70\nmock/echo 30",
            &c,
        )
        .unwrap();
        assert_eq!(v.id, "eu/x");
        assert_eq!(v.region, "eu");
        assert_eq!(v.targets[0].provider.as_deref(), Some("azure-eu"));
        assert_eq!(v.targets[0].weight, 70);
        assert_eq!(
            v.targets_text(),
            "openai/gpt-4o-mini @azure-eu 70\nmock/echo 30"
        );
    }

    #[test]
    fn a_place_is_taken_out_after_failures_and_back_after_the_cool_down() {
        let h = Health::default();
        assert!(!h.failed(1_000, 3, 500));
        assert!(!h.failed(1_000, 3, 500));
        assert!(h.available(1_000));
        assert!(h.failed(1_000, 3, 500));
        assert!(!h.available(1_400));
        assert!(h.available(1_500), "tried again after the cool-down");
        assert!(
            h.failed(1_500, 3, 500),
            "one failure then takes it out again"
        );
        h.succeeded(2_000);
        assert!(h.available(1_600));
        assert_eq!(h.view(0).failures, 0);
        assert_eq!(h.view(0).latency_ms, Some(2));
    }
}
