//! The `models` table: each organization's model catalogue, seeded with the
//! built-in mock models (free) and common public models at their list prices.

use sqlx::{AnyConnection, Row};

use crate::format::Usd;
use crate::policy::{OrgScope, TenantScope};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    pub id: String,
    pub provider: String,
    pub upstream: String,
    /// Micro-USD per million tokens.
    pub input_price: Usd,
    pub output_price: Usd,
    pub context_window: i64,
    /// Further deployments (`provider:upstream`), tried in order when the
    /// first fails before answering.
    pub fallbacks: Vec<String>,
}

/// (id, provider, upstream name, input $/1M, output $/1M in micro-USD, context window)
const SEED: &[(&str, &str, &str, i64, i64, i64)] = &[
    ("mock/echo", "mock", "echo", 0, 0, 128_000),
    ("mock/fast", "mock", "fast", 0, 0, 128_000),
    ("mock/embed", "mock", "embed", 0, 0, 8_192),
    (
        "openai/gpt-4o-mini",
        "openai",
        "gpt-4o-mini",
        150_000,
        600_000,
        128_000,
    ),
    (
        "openai/gpt-4o",
        "openai",
        "gpt-4o",
        2_500_000,
        10_000_000,
        128_000,
    ),
    (
        "openai/gpt-4.1",
        "openai",
        "gpt-4.1",
        2_000_000,
        8_000_000,
        1_047_576,
    ),
    (
        "openai/text-embedding-3-small",
        "openai",
        "text-embedding-3-small",
        20_000,
        0,
        8_191,
    ),
    (
        "anthropic/claude-3-5-haiku",
        "anthropic",
        "claude-3-5-haiku-latest",
        800_000,
        4_000_000,
        200_000,
    ),
    (
        "anthropic/claude-sonnet-4",
        "anthropic",
        "claude-sonnet-4-20250514",
        3_000_000,
        15_000_000,
        200_000,
    ),
];

/// The models a new project may use until an admin says otherwise.
pub fn default_project_models() -> Vec<String> {
    SEED.iter()
        .filter(|m| m.1 == "mock")
        .map(|m| m.0.to_owned())
        .collect()
}

pub async fn seed(conn: &mut AnyConnection, org_id: &str, now: i64) -> Result<(), sqlx::Error> {
    for (id, provider, upstream, input, output, ctx) in SEED {
        sqlx::query(
            "INSERT INTO models (org_id, id, provider, upstream, input_micros_per_mtok, \
             output_micros_per_mtok, context_window, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(org_id)
        .bind(*id)
        .bind(*provider)
        .bind(*upstream)
        .bind(*input)
        .bind(*output)
        .bind(*ctx)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

fn model_of(r: &sqlx::any::AnyRow) -> Result<Model, sqlx::Error> {
    Ok(Model {
        id: r.try_get("id")?,
        provider: r.try_get("provider")?,
        upstream: r.try_get("upstream")?,
        input_price: super::db::usd(r, "input_micros_per_mtok")?,
        output_price: super::db::usd(r, "output_micros_per_mtok")?,
        context_window: r.try_get("context_window")?,
        fallbacks: super::db::json_list(&r.try_get::<String, _>("fallbacks_json")?)?,
    })
}

/// The ids a project or key may name in the scoped organization: its
/// catalogue's models and its virtual models.
pub async fn ids(
    conn: &mut AnyConnection,
    scope: &TenantScope,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM models WHERE org_id = $1 UNION SELECT id FROM virtual_models WHERE org_id = $1 \
         ORDER BY id",
    )
    .bind(scope.org_id())
    .fetch_all(&mut *conn)
    .await
}

/// The catalogue's own model ids (virtual models route over these).
pub async fn model_ids(
    conn: &mut AnyConnection,
    scope: &OrgScope,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM models WHERE org_id = $1 ORDER BY id")
        .bind(scope.org_id())
        .fetch_all(&mut *conn)
        .await
}

pub async fn list(conn: &mut AnyConnection, scope: &OrgScope) -> Result<Vec<Model>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, provider, upstream, input_micros_per_mtok, output_micros_per_mtok, context_window, \
         fallbacks_json FROM models WHERE org_id = $1 ORDER BY id",
    )
    .bind(scope.org_id())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(model_of).collect()
}

/// Adds or replaces a model; returns the previous entry, if any.
pub async fn upsert(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    m: &Model,
    now: i64,
) -> Result<Option<Model>, sqlx::Error> {
    let before = sqlx::query(
        "SELECT id, provider, upstream, input_micros_per_mtok, output_micros_per_mtok, context_window, \
         fallbacks_json FROM models WHERE org_id = $1 AND id = $2",
    )
    .bind(scope.org_id())
    .bind(&m.id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(model_of)
    .transpose()?;
    sqlx::query(
        "INSERT INTO models (org_id, id, provider, upstream, input_micros_per_mtok, output_micros_per_mtok, \
         context_window, created_at, fallbacks_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (org_id, id) DO UPDATE SET provider = $3, upstream = $4, input_micros_per_mtok = $5, \
         output_micros_per_mtok = $6, context_window = $7, fallbacks_json = $9",
    )
    .bind(scope.org_id())
    .bind(&m.id)
    .bind(&m.provider)
    .bind(&m.upstream)
    .bind(m.input_price.micros())
    .bind(m.output_price.micros())
    .bind(m.context_window)
    .bind(now)
    .bind(super::db::to_json(&m.fallbacks))
    .execute(&mut *conn)
    .await?;
    Ok(before)
}

/// Deletes a model (`$1` the organization, `$2` its id).
pub(crate) const DELETE: &str = "DELETE FROM models WHERE org_id = $1 AND id = $2";

/// One organization's catalogue, for the proxy's memory.
pub async fn load_for_proxy(
    conn: &mut AnyConnection,
    org_id: &str,
) -> Result<Vec<Model>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, provider, upstream, input_micros_per_mtok, output_micros_per_mtok, context_window, \
         fallbacks_json FROM models WHERE org_id = $1",
    )
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(model_of).collect()
}
