//! The key token: `sk-tg-<public id>-<secret><checksum>` (provisioning keys:
//! `sk-tgp-…`). The public id finds the key, the secret proves it (only its
//! SHA-256 is stored), and a CRC-32 of the rest lets secret scanners
//! recognise a Tollgate key offline.

use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "sk-tg-";
/// Provisioning keys: they manage keys through the machine APIs and can
/// never call models, so they look different at a glance.
pub const PROVISIONING_PREFIX: &str = "sk-tgp-";
/// SCIM tokens: an identity provider provisions users with them.
pub const SCIM_PREFIX: &str = "sk-tgs-";
const PUBLIC_ID_LEN: usize = 12;
const SECRET_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly minted token. Not `Debug`, not `Serialize`: it leaves the server
/// once, in the answer to create or rotate.
pub struct Token {
    full: String,
    public_id: String,
    secret_hash: String,
    hint: String,
}

impl Token {
    pub fn mint() -> Token {
        Token::mint_with(PREFIX)
    }

    /// A provisioning key's token.
    pub fn mint_provisioning() -> Token {
        Token::mint_with(PROVISIONING_PREFIX)
    }

    /// A SCIM token.
    pub fn mint_scim() -> Token {
        Token::mint_with(SCIM_PREFIX)
    }

    fn mint_with(prefix: &str) -> Token {
        let mut rng = rand::rngs::OsRng;
        let public_id = Alphanumeric.sample_string(&mut rng, PUBLIC_ID_LEN);
        Token::make(prefix, public_id)
    }

    /// A key a migration brings (`key` on LiteLLM's `/key/generate`): kept
    /// only if it is as hard to guess as a minted one. Its public id is
    /// derived from it, so the proxy finds it the same way.
    pub fn imported(raw: &str) -> Result<Token, String> {
        if let Some(p) = parse(raw) {
            // Its checksum anyone can compute: the secret must be strong too.
            strong_secret(p.secret)?;
            return Ok(Token {
                full: raw.to_owned(),
                public_id: p.public_id.into_owned(),
                secret_hash: hash_secret(p.secret),
                hint: format!("{PREFIX}…{}", &raw[raw.len() - 4..]),
            });
        }
        strong_enough(raw)?;
        Ok(Token {
            full: raw.to_owned(),
            public_id: imported_public_id(raw),
            secret_hash: hash_secret(raw),
            hint: format!("…{}", &raw[raw.len() - 4..]),
        })
    }

    /// A new secret for an existing public id (rotation keeps the key's identity).
    pub fn with_public_id(public_id: String) -> Token {
        Token::make(PREFIX, public_id)
    }

    fn make(prefix: &str, public_id: String) -> Token {
        let secret = Alphanumeric.sample_string(&mut rand::rngs::OsRng, SECRET_LEN);
        let body = format!("{prefix}{public_id}-{secret}");
        let full = format!("{body}{}", checksum(&body));
        let hint = format!("{prefix}…{}", &full[full.len() - 4..]);
        Token {
            secret_hash: hash_secret(&secret),
            full,
            public_id,
            hint,
        }
    }

    pub fn expose(&self) -> &str {
        &self.full
    }
    pub fn public_id(&self) -> &str {
        &self.public_id
    }
    pub fn secret_hash(&self) -> &str {
        &self.secret_hash
    }
    pub fn hint(&self) -> &str {
        &self.hint
    }
}

fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(secret_digest(secret))
}

/// The SHA-256 of a secret, as the bytes [`hash_secret`] writes in hex.
pub fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The identifier APIs use for a key (`api_key_id_hash`): one-way, stable
/// across rotation, and not enough to call models.
pub fn id_hash(public_id: &str) -> String {
    hex::encode(Sha256::digest(
        format!("tollgate-key-id:{public_id}").as_bytes(),
    ))
}

/// The parts of a well-formed token with a valid checksum (an imported
/// key: its derived public id, and the whole token as the secret).
pub struct Parsed<'a> {
    pub public_id: std::borrow::Cow<'a, str>,
    pub secret: &'a str,
}

/// An API key's token, minted here.
pub fn parse(token: &str) -> Option<Parsed<'_>> {
    parse_with(PREFIX, token)
}

/// An API key's token: minted here, or imported (see [`Token::imported`]).
pub fn parse_any(token: &str) -> Option<Parsed<'_>> {
    if let Some(p) = parse(token) {
        return Some(p);
    }
    imported_shape(token).then(|| Parsed {
        public_id: std::borrow::Cow::Owned(imported_public_id(token)),
        secret: token,
    })
}

const IMPORTED_MIN: usize = 32;
const IMPORTED_MAX: usize = 256;

/// Characters an imported key may hold: what API keys are made of.
fn imported_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// Whether a token could be an imported key (not one of Tollgate's own
/// kinds, a length and characters keys have).
fn imported_shape(token: &str) -> bool {
    (IMPORTED_MIN..=IMPORTED_MAX).contains(&token.len())
        && token.bytes().all(imported_char)
        && !token.starts_with("sk-tg")
}

/// The public id of an imported key: 12 base62 characters of its SHA-256.
fn imported_public_id(token: &str) -> String {
    let digest = Sha256::digest(format!("tollgate-imported-key:{token}").as_bytes());
    digest
        .iter()
        .take(PUBLIC_ID_LEN)
        .map(|b| BASE62[usize::from(*b) % 62] as char)
        .collect()
}

/// The checks of an imported key: the shape above, not an id hash's shape
/// (64 lower-case hex digits name keys in the machine APIs), and a strong
/// secret after any prefix (`sk-`, `sk-proj-`).
fn strong_enough(raw: &str) -> Result<(), String> {
    if raw.starts_with("sk-tg") {
        return Err("looks like a Tollgate key but is not a valid one".to_owned());
    }
    if !imported_shape(raw) {
        return Err(format!(
            "must be {IMPORTED_MIN} to {IMPORTED_MAX} letters, digits, '-', '_' or '.'"
        ));
    }
    if raw.len() == 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("must not look like a key's id hash (64 hex digits)".to_owned());
    }
    let body = match raw.rfind('-') {
        Some(i) if i <= 16 => &raw[i + 1..],
        _ => raw,
    };
    strong_secret(body)
}

/// At least 128 bits by a character-class estimate, at least 16 different
/// characters, none over a quarter of it, not a repeated pattern and not a
/// run of neighbouring characters (`abcd…`, `0123…`).
fn strong_secret(body: &str) -> Result<(), String> {
    let b = body.as_bytes();
    let classes = [
        b.iter().any(u8::is_ascii_lowercase).then_some(26.0),
        b.iter().any(u8::is_ascii_uppercase).then_some(26.0),
        b.iter().any(u8::is_ascii_digit).then_some(10.0),
        b.iter()
            .any(|c| matches!(c, b'-' | b'_' | b'.'))
            .then_some(3.0),
    ];
    let alphabet: f64 = classes.iter().flatten().sum();
    let bits = alphabet.log2() * b.len() as f64;
    let counts = BASE62
        .iter()
        .chain(b"-_.")
        .map(|c| b.iter().filter(|x| *x == c).count());
    let most = counts.clone().max().unwrap_or(0);
    let distinct = counts.filter(|n| *n > 0).count();
    let periodic = (1..=b.len() / 2).any(|p| (p..b.len()).all(|i| b[i] == b[i - p]));
    let steps = b
        .windows(2)
        .filter(|w| w[1] == w[0].wrapping_add(1) || w[0] == w[1].wrapping_add(1))
        .count();
    if bits < 128.0 || most * 4 > b.len() || distinct < 16 || periodic || steps * 4 > b.len() {
        return Err(format!(
            "is too easy to guess (about {} bits after its prefix; a key needs 128 bits of random letters and digits, such as 32 of them)",
            bits as u32
        ));
    }
    Ok(())
}

/// A provisioning key's token.
pub fn parse_provisioning(token: &str) -> Option<Parsed<'_>> {
    parse_with(PROVISIONING_PREFIX, token)
}

/// A SCIM token.
pub fn parse_scim(token: &str) -> Option<Parsed<'_>> {
    parse_with(SCIM_PREFIX, token)
}

fn parse_with<'a>(prefix: &str, token: &'a str) -> Option<Parsed<'a>> {
    let rest = token.strip_prefix(prefix)?;
    let (public_id, tail) = rest.split_once('-')?;
    if public_id.len() != PUBLIC_ID_LEN || tail.len() != SECRET_LEN + CHECKSUM_LEN {
        return None;
    }
    if !public_id
        .bytes()
        .chain(tail.bytes())
        .all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    let (secret, sum) = tail.split_at(SECRET_LEN);
    let body = &token[..token.len() - CHECKSUM_LEN];
    (checksum(body) == sum).then_some(Parsed {
        public_id: std::borrow::Cow::Borrowed(public_id),
        secret,
    })
}

/// Whether `s` is a Tollgate key: prefix, shape and checksum, offline.
pub fn looks_like_tollgate_key(s: &str) -> bool {
    parse(s).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_parse_and_carry_their_hash_and_hint() {
        let t = Token::mint();
        assert!(t.expose().starts_with("sk-tg-"));
        assert_eq!(
            t.expose().len(),
            PREFIX.len() + PUBLIC_ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN
        );
        assert!(looks_like_tollgate_key(t.expose()));
        let p = parse(t.expose()).unwrap();
        assert_eq!(p.public_id, t.public_id());
        assert_eq!(hash_secret(p.secret), t.secret_hash());
        assert!(t.hint().starts_with("sk-tg-…"));
        assert!(t.expose().ends_with(&t.hint()["sk-tg-…".len()..]));
        assert_ne!(Token::mint().expose(), t.expose());
    }

    #[test]
    fn imported_keys_must_be_strong_and_parse_back() {
        for weak in [
            "sk-my-static-key",
            "sk-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "sk-0123456789012345678901234567890123",
            "sk-tg-notreallyatollgatekeyatallnotreally",
            "sk-has spaces in it and is long enough to pass",
            "Password123Password123Password123",
            "0123456789abcdef0123456789abcdef",
            "sk-abcdefghijklmnopqrstuvwxyz012345",
            "0f3a9c1e7b5d2a8c4e6f0b1d3c5a7e9f2b4d6f8a0c1e3b5d7f9a2c4e6b8d0f1a",
        ] {
            assert!(Token::imported(weak).is_err(), "{weak}");
        }
        let raw = "sk-proj-Q3fZ8kLm2Vx9Rt4Yw7Np1Hs6Jd0Gb5Ce";
        let t = Token::imported(raw).unwrap();
        assert_eq!(t.expose(), raw);
        assert_eq!(t.hint(), "…b5Ce");
        let p = parse_any(raw).unwrap();
        assert_eq!(p.public_id, t.public_id());
        assert_eq!(hash_secret(p.secret), t.secret_hash());
        assert!(parse(raw).is_none() && !looks_like_tollgate_key(raw));
        // A Tollgate key from another install keeps its own public id.
        let ours = Token::mint();
        let again = Token::imported(ours.expose()).unwrap();
        assert_eq!(again.public_id(), ours.public_id());
        assert_eq!(again.secret_hash(), ours.secret_hash());
    }

    #[test]
    fn a_changed_character_fails_the_checksum() {
        let t = Token::mint();
        let full = t.expose();
        for i in [
            PREFIX.len(),
            PREFIX.len() + PUBLIC_ID_LEN + 5,
            full.len() - 1,
        ] {
            let mut b = full.as_bytes().to_vec();
            b[i] = if b[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(b).unwrap();
            assert!(!looks_like_tollgate_key(&changed), "position {i}");
        }
        assert!(!looks_like_tollgate_key("sk-proj-abc"));
        assert!(!looks_like_tollgate_key(""));
    }

    #[test]
    fn provisioning_tokens_are_not_api_keys_and_back() {
        let p = Token::mint_provisioning();
        assert!(p.expose().starts_with("sk-tgp-"));
        assert!(p.hint().starts_with("sk-tgp-…"));
        assert!(parse(p.expose()).is_none());
        let parsed = parse_provisioning(p.expose()).unwrap();
        assert_eq!(hash_secret(parsed.secret), p.secret_hash());
        assert!(parse_provisioning(Token::mint().expose()).is_none());
    }

    #[test]
    fn rotation_keeps_the_public_id_and_its_hash() {
        let t = Token::mint();
        let r = Token::with_public_id(t.public_id().to_owned());
        assert_eq!(r.public_id(), t.public_id());
        assert_ne!(r.secret_hash(), t.secret_hash());
        assert_eq!(id_hash(t.public_id()), id_hash(r.public_id()));
        assert_eq!(id_hash("x").len(), 64);
    }
}
