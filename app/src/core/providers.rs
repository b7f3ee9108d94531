//! The `providers` table: where an organization's models are served from. An
//! upstream API key is sealed with the server secret (ChaCha20-Poly1305) and
//! never read back out except by the proxy.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use crate::error::AppError;
use crate::policy::OrgScope;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Built in: deterministic replies and usage, no network.
    Mock,
    /// Any OpenAI-compatible upstream (OpenAI, vLLM, Ollama, Together…).
    OpenAi,
    /// Anthropic's Messages API, translated to and from the chat schema.
    Anthropic,
}

impl Kind {
    pub fn parse(field: &str, raw: &str) -> Result<Kind, AppError> {
        match raw.trim() {
            "mock" => Ok(Kind::Mock),
            "openai" => Ok(Kind::OpenAi),
            "anthropic" => Ok(Kind::Anthropic),
            other => Err(AppError::invalid(
                field,
                format!("'{other}' is not one of mock, openai, anthropic"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mock => "mock",
            Kind::OpenAi => "openai",
            Kind::Anthropic => "anthropic",
        }
    }
}

/// A provider as the console shows it: never the key, only its hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub kind: Kind,
    pub base_url: String,
    pub key_hint: Option<String>,
    /// Mock only: delay before the answer and between stream chunks.
    pub latency_ms: i64,
    /// Where it processes data (`eu`, `us`, ...); empty where unstated.
    pub region: String,
    pub created_at: i64,
}

impl Provider {
    /// Whether a request that must stay in `region` may be sent here: any
    /// provider where none is required, the built-in mock everywhere
    /// (nothing leaves the process), else only one stated to be in it.
    pub fn serves_region(&self, region: &str) -> bool {
        region.is_empty() || self.kind == Kind::Mock || self.region == region
    }
}

/// A region's name as stored: lower case letters, digits and '-', at most
/// 20; empty for none.
pub fn parse_region(field: &str, raw: &str) -> Result<String, AppError> {
    let r = raw.trim().to_ascii_lowercase();
    if r.len() > 20
        || !r
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(AppError::invalid(
            field,
            "a region such as eu or us-east: up to 20 letters, digits or '-'",
        ));
    }
    Ok(r)
}

/// A provider with its key unsealed, for the proxy's memory only.
pub struct Upstream {
    pub provider: Provider,
    pub api_key: Option<SecretString>,
}

/// What an owner submits.
pub struct NewProvider {
    pub name: String,
    pub kind: Kind,
    pub base_url: String,
    pub api_key: Option<SecretString>,
    pub latency_ms: i64,
    pub region: String,
}

impl NewProvider {
    pub fn parse(
        name: &str,
        kind: &str,
        base_url: &str,
        api_key: &str,
        latency_ms: &str,
        region: &str,
    ) -> Result<NewProvider, AppError> {
        let name = name.trim();
        if name.is_empty()
            || name.len() > 40
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(AppError::invalid(
                "name",
                "1 to 40 letters, digits, '-' or '_' (models name it as their provider)",
            ));
        }
        let kind = Kind::parse("kind", kind)?;
        let base_url = base_url.trim().trim_end_matches('/').to_owned();
        if kind != Kind::Mock {
            let parsed = url::Url::parse(&base_url).map_err(|_| {
                AppError::invalid("base_url", "is not a URL such as https://api.openai.com/v1")
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(AppError::invalid(
                    "base_url",
                    "must start with http:// or https://",
                ));
            }
        }
        let api_key = Some(api_key.trim())
            .filter(|k| !k.is_empty())
            .map(|k| SecretString::from(k.to_owned()));
        let latency_ms = match latency_ms.trim() {
            "" => 0,
            s => match s.parse::<i64>() {
                Ok(n) if (0..=60_000).contains(&n) => n,
                _ => {
                    return Err(AppError::invalid(
                        "latency_ms",
                        "must be a whole number of milliseconds from 0 to 60000",
                    ))
                }
            },
        };
        Ok(NewProvider {
            name: name.to_owned(),
            kind,
            base_url,
            api_key,
            latency_ms,
            region: parse_region("region", region)?,
        })
    }
}

impl NewProvider {
    /// Refuses a base URL on a private network unless the operator allows it
    /// (the mock has none).
    pub async fn check_network(&self, allow_private: bool) -> Result<(), AppError> {
        if self.kind == Kind::Mock {
            return Ok(());
        }
        super::net::check_url("base_url", &self.base_url, allow_private).await
    }
}

fn cipher(secret: &SecretString) -> ChaCha20Poly1305 {
    let mut h = Sha256::new();
    h.update(b"tollgate/provider-keys/v1\0");
    h.update(secret.expose_secret().as_bytes());
    ChaCha20Poly1305::new(Key::from_slice(&h.finalize()))
}

/// `v1:` + base64(nonce ‖ ciphertext); a fresh nonce each time.
pub fn seal(secret: &SecretString, plain: &SecretString) -> Result<String, AppError> {
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let sealed = cipher(secret)
        .encrypt(Nonce::from_slice(&nonce), plain.expose_secret().as_bytes())
        .map_err(|_| AppError::internal("sealing a provider key", &"encryption failed"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(format!(
        "v1:{}",
        base64::engine::general_purpose::STANDARD.encode(out)
    ))
}

/// `None` when the value was sealed with another secret or altered.
pub fn open(secret: &SecretString, sealed: &str) -> Option<SecretString> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(sealed.strip_prefix("v1:")?)
        .ok()?;
    if raw.len() < 12 {
        return None;
    }
    let (nonce, body) = raw.split_at(12);
    let plain = cipher(secret)
        .decrypt(Nonce::from_slice(nonce), body)
        .ok()?;
    String::from_utf8(plain).ok().map(SecretString::from)
}

/// `…` and the last four characters, so an owner can tell keys apart.
pub(crate) fn hint_of(key: &SecretString) -> String {
    let k = key.expose_secret();
    let tail: String = k
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

macro_rules! columns {
    () => {
        "id, org_id, name, kind, base_url, api_key_sealed, key_hint, latency_ms, region, created_at"
    };
}

fn provider_of(r: &sqlx::any::AnyRow) -> Result<Provider, sqlx::Error> {
    let kind: String = r.try_get("kind")?;
    Ok(Provider {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        name: r.try_get("name")?,
        kind: Kind::parse("kind", &kind)
            .map_err(|_| sqlx::Error::Decode(format!("unknown provider kind {kind}").into()))?,
        base_url: r.try_get("base_url")?,
        key_hint: r.try_get("key_hint")?,
        latency_ms: r.try_get("latency_ms")?,
        region: r.try_get("region")?,
        created_at: r.try_get("created_at")?,
    })
}

/// The built-in mock provider every organization starts with.
pub async fn seed(conn: &mut AnyConnection, org_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO providers (id, org_id, name, kind, base_url, latency_ms, created_at, updated_at) \
         VALUES ($1, $2, 'mock', 'mock', '', 0, $3, $3)",
    )
    .bind(super::new_id())
    .bind(org_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn list(
    conn: &mut AnyConnection,
    scope: &OrgScope,
) -> Result<Vec<Provider>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM providers WHERE org_id = $1 ORDER BY name"
    ))
    .bind(scope.org_id())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(provider_of).collect()
}

/// Adds a provider or replaces the one of the same name. A blank key keeps
/// the stored one only while the address and kind stay: a key is never sent
/// to an address it was not given for. Returns the previous provider.
pub async fn upsert(
    conn: &mut AnyConnection,
    scope: &OrgScope,
    secret: &SecretString,
    p: &NewProvider,
    now: i64,
) -> Result<Option<Provider>, AppError> {
    let before = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM providers WHERE org_id = $1 AND name = $2"
    ))
    .bind(scope.org_id())
    .bind(&p.name)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(provider_of)
    .transpose()?;
    let sealed = p.api_key.as_ref().map(|k| seal(secret, k)).transpose()?;
    let hint = p.api_key.as_ref().map(hint_of);
    sqlx::query(
        "INSERT INTO providers (id, org_id, name, kind, base_url, api_key_sealed, key_hint, latency_ms, created_at, \
         updated_at, region) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) \
         ON CONFLICT (org_id, name) DO UPDATE SET kind = $4, base_url = $5, \
         api_key_sealed = CASE WHEN $6 IS NOT NULL THEN $6 WHEN providers.base_url = $5 AND providers.kind = $4 \
         THEN providers.api_key_sealed ELSE NULL END, \
         key_hint = CASE WHEN $7 IS NOT NULL THEN $7 WHEN providers.base_url = $5 AND providers.kind = $4 \
         THEN providers.key_hint ELSE NULL END, \
         latency_ms = $8, updated_at = $9, region = $10",
    )
    .bind(super::new_id())
    .bind(scope.org_id())
    .bind(&p.name)
    .bind(p.kind.as_str())
    .bind(&p.base_url)
    .bind(sealed)
    .bind(hint)
    .bind(p.latency_ms)
    .bind(now)
    .bind(&p.region)
    .execute(&mut *conn)
    .await?;
    Ok(before)
}

/// Deletes a provider (`$1` the organization, `$2` its name).
pub(crate) const DELETE: &str = "DELETE FROM providers WHERE org_id = $1 AND name = $2";

/// Every provider of an organization with its key unsealed: the proxy's load.
/// A key that no longer opens (the server secret changed) is logged, not used.
pub async fn load_for_proxy(
    conn: &mut AnyConnection,
    org_id: &str,
    secret: &SecretString,
) -> Result<Vec<Upstream>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM providers WHERE org_id = $1"
    ))
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let provider = provider_of(r)?;
            let sealed: Option<String> = r.try_get("api_key_sealed")?;
            let api_key = sealed.and_then(|s| {
                let opened = open(secret, &s);
                if opened.is_none() {
                    tracing::error!(provider = %provider.name, org = %org_id,
                        "a provider key cannot be unsealed (was the server secret changed?)");
                }
                opened
            });
            Ok(Upstream { provider, api_key })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_the_same_secret() {
        let s1 = SecretString::from("one");
        let s2 = SecretString::from("two");
        let key = SecretString::from("sk-upstream-123456");
        let sealed = seal(&s1, &key).unwrap();
        assert!(!sealed.contains("123456"));
        assert_eq!(
            open(&s1, &sealed).unwrap().expose_secret(),
            "sk-upstream-123456"
        );
        assert!(open(&s2, &sealed).is_none());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('A');
        assert!(open(&s1, &tampered).is_none() || tampered == sealed);
        assert_ne!(seal(&s1, &key).unwrap(), sealed, "a fresh nonce each time");
    }

    #[test]
    fn a_provider_form_names_the_bad_field() {
        let e = NewProvider::parse("open ai", "openai", "https://x", "", "", "")
            .err()
            .unwrap();
        assert!(format!("{e:?}").contains("name"));
        let e = NewProvider::parse("oa", "openai", "ftp://x", "", "", "")
            .err()
            .unwrap();
        assert!(format!("{e:?}").contains("base_url"));
        let e = NewProvider::parse("oa", "gemini", "https://x", "", "", "")
            .err()
            .unwrap();
        assert!(format!("{e:?}").contains("kind"));
        let e = NewProvider::parse("m", "mock", "", "", "-1", "")
            .err()
            .unwrap();
        assert!(format!("{e:?}").contains("latency_ms"));
        let e = NewProvider::parse("oa", "openai", "https://x", "", "", "eu west")
            .err()
            .unwrap();
        assert!(format!("{e:?}").contains("region"));
        let p = NewProvider::parse("oa", "openai", "https://x", "", "", " EU ").unwrap();
        assert_eq!(p.region, "eu");
    }
}
