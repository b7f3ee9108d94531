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

/// The parts of a well-formed token with a valid checksum.
pub struct Parsed<'a> {
    pub public_id: &'a str,
    pub secret: &'a str,
}

/// An API key's token.
pub fn parse(token: &str) -> Option<Parsed<'_>> {
    parse_with(PREFIX, token)
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
    (checksum(body) == sum).then_some(Parsed { public_id, secret })
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
