//! Responses a provider keeps, tied to the key they answered. The id a
//! client sees is the provider's with a tag only this server can make for
//! that key (`resp_tg<tag>_<provider's id>`), so `previous_response_id` and
//! `GET`/`DELETE /v1/responses/{id}` reach a stored response only with the
//! key it answered, on any instance, and Tollgate stores nothing.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::Sha256;

const PREFIX: &str = "resp_tg";
/// The tag's length in hex digits (80 bits).
const TAG: usize = 20;

fn mac(secret: &SecretString, key_id: &str, id: &str) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()).ok()?;
    mac.update(b"tollgate stored response\0");
    mac.update(key_id.as_bytes());
    mac.update(b"\0");
    mac.update(id.as_bytes());
    Some(mac)
}

/// The id the client sees for the provider's response `id`.
pub fn seal(secret: &SecretString, key_id: &str, id: &str) -> String {
    let tag = mac(secret, key_id, id)
        .map(|m| hex::encode(&m.finalize().into_bytes()[..TAG / 2]))
        .unwrap_or_default();
    format!("{PREFIX}{tag}_{id}")
}

/// The provider's id behind an id the client sent, if this key's.
pub fn open(secret: &SecretString, key_id: &str, sealed: &str) -> Option<String> {
    let rest = sealed.strip_prefix(PREFIX)?;
    let (tag, id) = rest.split_at_checked(TAG)?;
    let id = id.strip_prefix('_')?;
    let tag = hex::decode(tag).ok()?;
    mac(secret, key_id, id)?.verify_truncated_left(&tag).ok()?;
    Some(id.to_owned())
}

/// A response object's `id` (at `pointer`), sealed in place; whether there
/// was one.
pub fn seal_in(v: &mut Value, pointer: &str, secret: &SecretString, key_id: &str) -> bool {
    match v.pointer_mut(pointer) {
        Some(Value::String(id)) => {
            *id = seal(secret, key_id, id);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_opens_only_for_its_key_and_unaltered() {
        let secret = SecretString::from("server secret");
        let sealed = seal(&secret, "key-a", "resp_67cc");
        assert!(
            sealed.starts_with("resp_tg") && sealed.ends_with("_resp_67cc"),
            "{sealed}"
        );
        assert_eq!(
            open(&secret, "key-a", &sealed).as_deref(),
            Some("resp_67cc")
        );
        assert_eq!(open(&secret, "key-b", &sealed), None, "another key");
        assert_eq!(open(&SecretString::from("other"), "key-a", &sealed), None);
        let forged = sealed.replace("_resp_67cc", "_resp_67cd");
        assert_eq!(open(&secret, "key-a", &forged), None, "another id");
        for bad in [
            "resp_67cc",
            "resp_tg",
            "resp_tgzz",
            &sealed[..sealed.len() - 1],
            "resp_tgé",
        ] {
            assert_eq!(open(&secret, "key-a", bad), None, "{bad}");
        }
    }
}
