//! The `Mcp-Session-Id` a client holds: the upstream's session id with
//! the organization, server and key it belongs to, sealed with the server
//! secret. Any instance opens it (no session table to share), and a client
//! cannot read the upstream's id or move it to another key or server.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tollgate_app::core::providers::{open, seal};

#[derive(Serialize, Deserialize, PartialEq, Eq, Debug)]
pub struct Session {
    #[serde(rename = "o")]
    pub org: String,
    #[serde(rename = "s")]
    pub server: String,
    #[serde(rename = "k")]
    pub key_id: String,
    /// The server's URL when the session began: registered again elsewhere
    /// under the same name, the server gets no session id of the old one.
    #[serde(rename = "w")]
    pub url: String,
    /// The upstream's own `Mcp-Session-Id`.
    #[serde(rename = "u")]
    pub upstream: String,
}

/// The longest session id an upstream may give that is kept.
pub const MAX_UPSTREAM_ID: usize = 1024;

impl Session {
    pub fn seal(&self, secret: &SecretString) -> Option<String> {
        let plain = SecretString::from(serde_json::to_string(self).ok()?);
        seal(secret, &plain).ok()
    }

    /// The session behind a client's id, when this server sealed it.
    pub fn open(secret: &SecretString, sealed: &str) -> Option<Session> {
        if sealed.len() > 4 * MAX_UPSTREAM_ID {
            return None;
        }
        let plain = open(secret, sealed)?;
        serde_json::from_str(plain.expose_secret()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_opens_only_with_its_secret_and_unaltered() {
        let secret = SecretString::from("s3cret".to_owned());
        let s = Session {
            org: "o".into(),
            server: "w".into(),
            key_id: "k".into(),
            url: "https://w.example/mcp".into(),
            upstream: "abc".into(),
        };
        let sealed = s.seal(&secret).unwrap();
        assert!(!sealed.contains("abc"));
        assert_eq!(Session::open(&secret, &sealed), Some(s));
        let other = SecretString::from("other".to_owned());
        assert_eq!(Session::open(&other, &sealed), None);
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            Session::open(&secret, &String::from_utf8(bytes).unwrap()),
            None
        );
    }
}
