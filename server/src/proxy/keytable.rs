//! The proxy's key table: every key held compactly — its ids, the SHA-256
//! of its secret and the limits a request checks, under 150 bytes a key —
//! in one slab indexed by public id and by id. Names, tags and metadata
//! stay in the database; a key's organization, project and model list (its
//! [`Scope`]) are held once for all the keys that share them.

use compact_str::CompactString;
use hashbrown::{DefaultHashBuilder, HashTable};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use tollgate_app::core::keys::ProxyKeyRow;
use tollgate_app::core::limits::ResetInterval;
use tollgate_app::core::mcp::Grant;

/// A key's id: the 32 lowercase hex digits `new_id` makes, held as their
/// 16 bytes; any other text as it is.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum KeyId {
    Hex([u8; 16]),
    Text(Box<str>),
}

impl KeyId {
    pub fn new(s: &str) -> KeyId {
        let mut bytes = [0_u8; 16];
        let lower_hex = s.len() == 32 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        if lower_hex && hex::decode_to_slice(s, &mut bytes).is_ok() {
            KeyId::Hex(bytes)
        } else {
            KeyId::Text(s.into())
        }
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyId::Hex(b) => {
                let mut text = [0_u8; 32];
                hex::encode_to_slice(b, &mut text).map_err(|_| fmt::Error)?;
                f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
            }
            KeyId::Text(s) => f.write_str(s),
        }
    }
}

/// An optional whole number in eight bytes: `i64::MIN` stands for none (a
/// stored `i64::MIN` is held as `i64::MIN + 1`, the same in every rule).
#[derive(Clone, Copy)]
struct Opt(i64);

impl Opt {
    const NONE: i64 = i64::MIN;

    fn new(v: Option<i64>) -> Opt {
        Opt(v.map_or(Opt::NONE, |x| x.max(Opt::NONE + 1)))
    }

    fn get(self) -> Option<i64> {
        (self.0 != Opt::NONE).then_some(self.0)
    }
}

/// The secret a rotation with grace replaced, while it still works.
#[derive(Clone)]
struct Previous {
    hash: [u8; 32],
    valid_until: Option<i64>,
}

/// Where a key belongs and what it may call: shared by every key with the
/// same organization, project, model list and MCP narrowing.
#[derive(PartialEq, Eq, Hash)]
pub struct Scope {
    org_id: Box<str>,
    project_id: Box<str>,
    /// As stored (JSON), to find the scope a row belongs to unparsed.
    models_json: Box<str>,
    models: Box<[Box<str>]>,
    /// The key's own narrowing of its project's MCP grants, as stored and
    /// parsed (`None`: none).
    mcp_json: Option<Box<str>>,
    mcp: Option<Box<[Grant]>>,
}

/// What finds a scope: its organization, project, models and MCP grants
/// as stored.
type ScopeKey<'a> = (&'a str, &'a str, &'a str, Option<&'a str>);

impl Scope {
    fn key(&self) -> ScopeKey<'_> {
        (
            &self.org_id,
            &self.project_id,
            &self.models_json,
            self.mcp_json.as_deref(),
        )
    }
}

/// One key as a request needs it.
#[derive(Clone)]
pub struct KeyEntry {
    pub id: KeyId,
    pub public_id: CompactString,
    secret_hash: [u8; 32],
    previous: Option<Box<Previous>>,
    scope: Arc<Scope>,
    tpm_limit: Opt,
    rpm_limit: Opt,
    budget_micros: Opt,
    expires_at: Opt,
    revoked_at: Opt,
    pub budget_reset: ResetInterval,
    pub no_content_logging: bool,
}

impl KeyEntry {
    pub fn tpm_limit(&self) -> Option<i64> {
        self.tpm_limit.get()
    }
    pub fn rpm_limit(&self) -> Option<i64> {
        self.rpm_limit.get()
    }
    pub fn budget_micros(&self) -> Option<i64> {
        self.budget_micros.get()
    }
    pub fn expires_at(&self) -> Option<i64> {
        self.expires_at.get()
    }
    pub fn revoked_at(&self) -> Option<i64> {
        self.revoked_at.get()
    }
    pub fn org_id(&self) -> &str {
        &self.scope.org_id
    }
    pub fn project_id(&self) -> &str {
        &self.scope.project_id
    }
    pub fn models(&self) -> &[Box<str>] {
        &self.scope.models
    }
    pub fn allows(&self, model: &str) -> bool {
        self.models().iter().any(|m| &**m == model)
    }
    /// The key's own narrowing of its project's MCP grants (`None`: none).
    pub fn mcp(&self) -> Option<&[Grant]> {
        self.scope.mcp.as_deref()
    }

    /// Whether `digest` (the SHA-256 of a presented secret) is this key's
    /// secret, or the one a rotation replaced while it still works; in
    /// constant time.
    pub fn secret_matches(&self, digest: &[u8; 32], now: i64) -> bool {
        let current = constant_time_eq(digest, &self.secret_hash);
        let previous = self.previous.as_ref().is_some_and(|p| {
            p.valid_until.is_some_and(|t| t > now) && constant_time_eq(digest, &p.hash)
        });
        current | previous
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A stored secret hash (64 hex digits) as its bytes.
fn digest_of(hex_hash: &str) -> Option<[u8; 32]> {
    let mut out = [0_u8; 32];
    hex::decode_to_slice(hex_hash, &mut out).ok().map(|()| out)
}

/// The scopes keys hold, each once.
#[derive(Default)]
struct Scopes {
    all: HashTable<Arc<Scope>>,
    hasher: DefaultHashBuilder,
}

impl Scopes {
    fn hash(&self, key: ScopeKey<'_>) -> u64 {
        self.hasher.hash_one(key)
    }

    fn find(&self, h: u64, key: ScopeKey<'_>) -> Option<Arc<Scope>> {
        self.all.find(h, |s| s.key() == key).cloned()
    }

    fn add(&mut self, h: u64, scope: Arc<Scope>) -> Arc<Scope> {
        let hasher = &self.hasher;
        self.all
            .insert_unique(h, scope.clone(), |s| hasher.hash_one(s.key()));
        scope
    }

    /// The scope of `row` (its model list and MCP grants parsed where it is new).
    fn of(&mut self, row: &ProxyKeyRow<'_>) -> Result<Arc<Scope>, sqlx::Error> {
        let key = (row.org_id, row.project_id, row.models_json, row.mcp_json);
        let h = self.hash(key);
        if let Some(s) = self.find(h, key) {
            return Ok(s);
        }
        let mcp = match row.mcp_json {
            Some(json) => Some(
                serde_json::from_str::<Vec<Grant>>(json)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?
                    .into_boxed_slice(),
            ),
            None => None,
        };
        let scope = Scope {
            org_id: row.org_id.into(),
            project_id: row.project_id.into(),
            models_json: row.models_json.into(),
            models: row
                .models()?
                .into_iter()
                .map(String::into_boxed_str)
                .collect(),
            mcp_json: row.mcp_json.map(Box::from),
            mcp,
        };
        Ok(self.add(h, Arc::new(scope)))
    }

    /// This table's scope equal to `scope`, which another table made.
    fn same(&mut self, scope: Arc<Scope>) -> Arc<Scope> {
        let h = self.hash(scope.key());
        match self.find(h, scope.key()) {
            Some(s) => s,
            None => self.add(h, scope),
        }
    }

    /// Forgets the scopes no key holds any more.
    fn prune(&mut self) {
        self.all.retain(|s| Arc::strong_count(s) > 1);
    }
}

/// Every key the proxy knows.
#[derive(Default)]
pub struct KeyTable {
    slots: Vec<Option<KeyEntry>>,
    free: Vec<u32>,
    by_public: HashTable<u32>,
    by_id: HashTable<u32>,
    hasher: DefaultHashBuilder,
    scopes: Scopes,
}

impl KeyTable {
    pub fn with_capacity(n: usize) -> KeyTable {
        KeyTable {
            slots: Vec::with_capacity(n),
            by_public: HashTable::with_capacity(n),
            by_id: HashTable::with_capacity(n),
            ..KeyTable::default()
        }
    }

    pub fn len(&self) -> usize {
        self.by_public.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_public.is_empty()
    }

    fn slot(slots: &[Option<KeyEntry>], i: u32) -> Option<&KeyEntry> {
        slots.get(i as usize).and_then(Option::as_ref)
    }

    pub fn get(&self, public_id: &str) -> Option<&KeyEntry> {
        let h = self.hasher.hash_one(public_id);
        let slots = &self.slots;
        self.by_public
            .find(h, |&i| {
                Self::slot(slots, i).is_some_and(|k| k.public_id == public_id)
            })
            .and_then(|&i| Self::slot(slots, i))
    }

    pub fn by_id(&self, id: &str) -> Option<&KeyEntry> {
        let id = KeyId::new(id);
        let h = self.hasher.hash_one(&id);
        let slots = &self.slots;
        self.by_id
            .find(h, |&i| Self::slot(slots, i).is_some_and(|k| k.id == id))
            .and_then(|&i| Self::slot(slots, i))
    }

    /// Adds the key in `row`, in place of any with its id or public id. A
    /// row whose secret hash is not a SHA-256 in hex is left out: such a
    /// key could never authenticate.
    pub fn insert_row(&mut self, row: ProxyKeyRow<'_>) -> Result<(), sqlx::Error> {
        let Some(secret_hash) = digest_of(row.secret_hash) else {
            tracing::error!(key = %row.id, "a key's stored secret hash is not a SHA-256 in hex; it cannot be used");
            return Ok(());
        };
        let previous = row.prev_secret_hash.and_then(digest_of).map(|hash| {
            Box::new(Previous {
                hash,
                valid_until: row.prev_valid_until,
            })
        });
        let entry = KeyEntry {
            id: KeyId::new(row.id),
            public_id: CompactString::from(row.public_id),
            secret_hash,
            previous,
            scope: self.scopes.of(&row)?,
            tpm_limit: Opt::new(row.tpm_limit),
            rpm_limit: Opt::new(row.rpm_limit),
            budget_micros: Opt::new(row.budget_micros),
            expires_at: Opt::new(row.expires_at),
            revoked_at: Opt::new(row.revoked_at),
            budget_reset: row.budget_reset,
            no_content_logging: row.no_content_logging,
        };
        self.insert(entry);
        Ok(())
    }

    fn insert(&mut self, entry: KeyEntry) {
        self.remove_where_id(&entry.id);
        self.remove_public(&entry.public_id);
        let hasher = &self.hasher;
        let (hp, hi) = (
            hasher.hash_one(entry.public_id.as_str()),
            hasher.hash_one(&entry.id),
        );
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(entry);
                i
            }
            None => {
                let Ok(i) = u32::try_from(self.slots.len()) else {
                    tracing::error!("the key table is full (2^32 keys); a key was left out");
                    return;
                };
                self.slots.push(Some(entry));
                i
            }
        };
        let slots = &self.slots;
        let public_of =
            |&j: &u32| Self::slot(slots, j).map_or(0, |k| hasher.hash_one(k.public_id.as_str()));
        self.by_public.insert_unique(hp, i, public_of);
        let id_of = |&j: &u32| Self::slot(slots, j).map_or(0, |k| hasher.hash_one(&k.id));
        self.by_id.insert_unique(hi, i, id_of);
    }

    fn remove_slot(&mut self, i: u32) {
        let Some(k) = self.slots.get_mut(i as usize).and_then(Option::take) else {
            return;
        };
        let (hp, hi) = (
            self.hasher.hash_one(k.public_id.as_str()),
            self.hasher.hash_one(&k.id),
        );
        if let Ok(e) = self.by_public.find_entry(hp, |&j| j == i) {
            e.remove();
        }
        if let Ok(e) = self.by_id.find_entry(hi, |&j| j == i) {
            e.remove();
        }
        self.free.push(i);
    }

    fn remove_where_id(&mut self, id: &KeyId) {
        let h = self.hasher.hash_one(id);
        let slots = &self.slots;
        let found = self
            .by_id
            .find(h, |&i| Self::slot(slots, i).is_some_and(|k| k.id == *id))
            .copied();
        if let Some(i) = found {
            self.remove_slot(i);
        }
    }

    fn remove_public(&mut self, public_id: &str) {
        let h = self.hasher.hash_one(public_id);
        let slots = &self.slots;
        let found = self
            .by_public
            .find(h, |&i| {
                Self::slot(slots, i).is_some_and(|k| k.public_id == public_id)
            })
            .copied();
        if let Some(i) = found {
            self.remove_slot(i);
        }
    }

    pub fn remove_id(&mut self, id: &str) {
        self.remove_where_id(&KeyId::new(id));
        self.scopes.prune();
    }

    /// Removes every key `gone` selects (a scan of the whole table).
    pub fn remove_where(&mut self, gone: impl Fn(&KeyEntry) -> bool) {
        let doomed: Vec<u32> = (0..self.slots.len())
            .filter_map(|i| u32::try_from(i).ok())
            .filter(|&i| Self::slot(&self.slots, i).is_some_and(&gone))
            .collect();
        for i in doomed {
            self.remove_slot(i);
        }
        self.scopes.prune();
    }

    /// Moves every key of `other` in, each in place of any with its id or
    /// public id, sharing this table's scopes.
    pub fn absorb(&mut self, other: KeyTable) {
        for mut k in other.slots.into_iter().flatten() {
            k.scope = self.scopes.same(k.scope);
            self.insert(k);
        }
        self.scopes.prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(id: &'a str, public_id: &'a str, hash: &'a str, models: &'a str) -> ProxyKeyRow<'a> {
        ProxyKeyRow {
            id,
            public_id,
            secret_hash: hash,
            prev_secret_hash: None,
            prev_valid_until: None,
            org_id: "org",
            project_id: "project",
            models_json: models,
            tpm_limit: None,
            rpm_limit: Some(60),
            budget_micros: Some(i64::MIN),
            budget_reset: ResetInterval::Monthly,
            expires_at: None,
            no_content_logging: false,
            revoked_at: None,
            mcp_json: None,
        }
    }

    const H1: &str = "0101010101010101010101010101010101010101010101010101010101010101";
    const H2: &str = "0202020202020202020202020202020202020202020202020202020202020202";

    #[test]
    fn ids_round_trip_as_bytes_or_text() {
        for s in [
            "0123456789abcdef0123456789abcdef",
            "0123456789ABCDEF0123456789ABCDEF",
            "key-1",
            "",
        ] {
            assert_eq!(KeyId::new(s).to_string(), s);
        }
        assert!(matches!(
            KeyId::new("0123456789abcdef0123456789abcdef"),
            KeyId::Hex(_)
        ));
        assert!(matches!(
            KeyId::new("0123456789ABCDEF0123456789ABCDEF"),
            KeyId::Text(_)
        ));
    }

    #[test]
    fn keys_are_found_replaced_and_removed_by_either_id() {
        let mut t = KeyTable::default();
        let a = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        t.insert_row(row(a, "PUBA", H1, r#"["m1"]"#)).unwrap();
        t.insert_row(row("b", "PUBB", H1, r#"["m1"]"#)).unwrap();
        assert_eq!(t.len(), 2);
        let k = t.get("PUBA").unwrap();
        assert_eq!(k.id.to_string(), a);
        assert!(k.allows("m1") && !k.allows("m2"));
        assert_eq!(k.rpm_limit(), Some(60));
        assert_eq!(k.tpm_limit(), None);
        assert_eq!(
            k.budget_micros(),
            Some(i64::MIN + 1),
            "i64::MIN is no 'none'"
        );
        assert!(k.secret_matches(&digest_of(H1).unwrap(), 0));
        assert!(!k.secret_matches(&digest_of(H2).unwrap(), 0));
        // The same key again (a change): replaced, not added.
        t.insert_row(row(a, "PUBA", H2, r#"["m2"]"#)).unwrap();
        assert_eq!(t.len(), 2);
        let k = t.get("PUBA").unwrap();
        assert!(k.allows("m2") && k.secret_matches(&digest_of(H2).unwrap(), 0));
        assert!(t.by_id(a).is_some_and(|k| k.public_id == "PUBA"));
        t.remove_id(a);
        assert!(t.get("PUBA").is_none() && t.by_id(a).is_none());
        assert_eq!(t.len(), 1);
        // A freed slot is reused; both indexes point at the newcomer.
        t.insert_row(row("c", "PUBC", H1, r#"["m1"]"#)).unwrap();
        assert_eq!(t.slots.len(), 2);
        assert!(t.get("PUBC").is_some() && t.by_id("c").is_some() && t.get("PUBB").is_some());
        t.remove_where(|k| k.project_id() == "project");
        assert!(t.is_empty() && t.by_id("b").is_none());
    }

    #[test]
    fn a_previous_secret_works_only_until_its_time() {
        let mut t = KeyTable::default();
        let mut r = row("a", "PUBA", H1, "[]");
        r.prev_secret_hash = Some(H2);
        r.prev_valid_until = Some(1_000);
        t.insert_row(r).unwrap();
        let k = t.get("PUBA").unwrap();
        assert!(k.secret_matches(&digest_of(H2).unwrap(), 999));
        assert!(!k.secret_matches(&digest_of(H2).unwrap(), 1_000));
    }

    #[test]
    fn a_key_with_a_hash_that_is_not_hex_is_left_out() {
        let mut t = KeyTable::default();
        t.insert_row(row("a", "PUBA", "not-a-hash", "[]")).unwrap();
        assert!(t.is_empty());
    }

    #[test]
    fn shared_parts_are_shared_and_absorbed_keys_share_them() {
        let mut t = KeyTable::default();
        t.insert_row(row("a", "PUBA", H1, r#"["m1"]"#)).unwrap();
        let mut staged = KeyTable::default();
        staged
            .insert_row(row("b", "PUBB", H1, r#"["m1"]"#))
            .unwrap();
        t.absorb(staged);
        let (a, b) = (t.get("PUBA").unwrap(), t.get("PUBB").unwrap());
        assert!(Arc::ptr_eq(&a.scope, &b.scope));
        assert_eq!(t.scopes.all.len(), 1);
        t.remove_id("a");
        t.remove_id("b");
        assert_eq!(t.scopes.all.len(), 0, "a scope no key holds is forgotten");
    }

    #[test]
    fn keys_share_a_scope_only_with_the_same_mcp_narrowing() {
        let mut t = KeyTable::default();
        t.insert_row(row("a", "PUBA", H1, r#"["m1"]"#)).unwrap();
        let narrowed = ProxyKeyRow {
            mcp_json: Some(r#"[{"server":"gh","tools":["search"]}]"#),
            ..row("b", "PUBB", H1, r#"["m1"]"#)
        };
        t.insert_row(narrowed).unwrap();
        let (a, b) = (t.get("PUBA").unwrap(), t.get("PUBB").unwrap());
        assert!(!Arc::ptr_eq(&a.scope, &b.scope));
        assert!(a.mcp().is_none());
        let g = &b.mcp().unwrap()[0];
        assert!(g.server == "gh" && g.allows("search") && !g.allows("delete"));
        let bad = ProxyKeyRow {
            mcp_json: Some("{not json"),
            ..row("c", "PUBC", H1, r#"["m1"]"#)
        };
        assert!(t.insert_row(bad).is_err());
    }

    #[test]
    fn an_entry_stays_small() {
        assert!(
            std::mem::size_of::<Option<KeyEntry>>() <= 144,
            "{}",
            std::mem::size_of::<Option<KeyEntry>>()
        );
    }
}
