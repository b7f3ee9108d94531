//! Passwords (argon2id, hashed off the async threads), the sign-in throttle, and
//! the first-run setup.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::audit::{self, Actor, Change};
use super::domain::{Email, OrgName, Password, PersonName};
use super::{orgs, users};
use crate::error::AppError;
use crate::policy::OrgRole;

pub async fn hash_password(password: Password) -> Result<String, AppError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(|e| AppError::internal("hash task", &e))?
    .map_err(|e| AppError::internal("argon2 hash", &e))
}

/// Checks a password against a stored hash; with no hash (unknown account)
/// still does the same work, so timing does not tell which accounts exist.
pub async fn verify_password(password: Password, hash: Option<String>) -> Result<bool, AppError> {
    tokio::task::spawn_blocking(move || {
        let stored = hash.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        let ok = Argon2::default()
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_ok();
        ok && stored != DUMMY_HASH
    })
    .await
    .map_err(|e| AppError::internal("verify task", &e))
}

/// An argon2id hash of a random string nobody knows, for unknown accounts.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0p1FHIbuTjNfL1SpKp3nzyhAKtNwqk8Xb0rn1ATpaS4";

/// Sign-in attempts allowed per account from one client address, and per
/// client address. Counting an account's attempts per address, not overall,
/// means wrong passwords from one client do not lock its owner out elsewhere.
#[derive(Clone)]
pub struct Throttle {
    per_account: Arc<DefaultKeyedRateLimiter<(String, Option<IpAddr>)>>,
    per_ip: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    /// Attempts counted; every [`PRUNE_EVERY`] the idle entries are dropped,
    /// so that many addresses or accounts do not grow the maps for ever.
    checks: Arc<AtomicU64>,
}

/// How many attempts pass between two prunings of the throttle's maps.
const PRUNE_EVERY: u64 = 4096;

impl Throttle {
    /// `per_account` and `per_ip` attempts a minute, each as a burst too.
    pub fn new(per_account: NonZeroU32, per_ip: NonZeroU32) -> Throttle {
        Throttle {
            per_account: Arc::new(RateLimiter::keyed(Quota::per_minute(per_account))),
            per_ip: Arc::new(RateLimiter::keyed(Quota::per_minute(per_ip))),
            checks: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Drops the entries whose limit has fully recovered (they count as new).
    pub fn prune(&self) {
        self.per_account.retain_recent();
        self.per_account.shrink_to_fit();
        self.per_ip.retain_recent();
        self.per_ip.shrink_to_fit();
    }

    /// How many accounts and addresses the throttle holds.
    pub fn len(&self) -> (usize, usize) {
        (self.per_account.len(), self.per_ip.len())
    }

    /// Counts one attempt; `Err` says how long to wait.
    pub fn check(&self, account: &str, ip: Option<IpAddr>) -> Result<(), AppError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune();
        }
        let now = DefaultClock::default().now();
        let wait = |n: governor::NotUntil<_>| AppError::RateLimited {
            retry_after_secs: n.wait_time_from(now).as_secs().max(1),
        };
        if let Some(ip) = ip {
            self.per_ip.check_key(&ip).map_err(wait)?;
        }
        self.per_account
            .check_key(&(account.to_owned(), ip))
            .map_err(wait)?;
        Ok(())
    }
}

/// What setup creates.
pub struct SetupDone {
    pub user: users::User,
    pub org: orgs::Org,
}

/// Creates the first user and their organization, once. Two racing calls:
/// both insert the single `instance` row, and the database lets one win.
pub async fn setup(
    pool: &sqlx::AnyPool,
    email: &Email,
    name: &PersonName,
    password: Password,
    org_name: &OrgName,
) -> Result<SetupDone, AppError> {
    let hash = hash_password(password).await?;
    let now = super::now_ms();
    let mut tx = pool.begin().await?;
    if !claim_instance(&mut tx, now).await? {
        return Err(setup_done());
    }
    if users::count(&mut tx).await? > 0 {
        return Err(setup_done());
    }
    let done = create_owner(&mut tx, email, name, &hash, org_name, None, now).await?;
    tx.commit().await.map_err(|e| {
        if super::db::is_unique_violation(&e) {
            setup_done()
        } else {
            e.into()
        }
    })?;
    Ok(done)
}

/// Marks the instance as set up; `false` when it already was. A racing
/// claim waits for the first to commit, then claims nothing.
pub async fn claim_instance(conn: &mut sqlx::AnyConnection, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO instance (id, setup_at) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
    )
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

fn setup_done() -> AppError {
    AppError::conflict("setup is already done; sign in instead")
}

/// Whether the first-run setup page should still be offered.
pub async fn setup_needed(pool: &sqlx::AnyPool) -> Result<bool, AppError> {
    let mut conn = pool.acquire().await?;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM instance")
        .fetch_one(&mut *conn)
        .await?;
    Ok(n == 0 && users::count(&mut conn).await? == 0)
}

/// A new user who owns a new organization, audited; used by setup and the CLI.
pub async fn create_owner(
    conn: &mut sqlx::AnyConnection,
    email: &Email,
    name: &PersonName,
    password_hash: &str,
    org_name: &OrgName,
    actor: Option<Actor>,
    now: i64,
) -> Result<SetupDone, AppError> {
    let user = match users::insert(conn, email, name, password_hash, now).await {
        Ok(u) => u,
        Err(e) if super::db::is_unique_violation(&e) => {
            return Err(AppError::invalid(
                "email",
                "an account with this email already exists",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let org = orgs::insert(conn, org_name, now).await?;
    super::members::insert(conn, &org.id, &user.id, OrgRole::Owner, now).await?;
    let actor = actor.unwrap_or_else(|| Actor::user(&user.id, &user.email));
    audit::record(
        conn,
        &actor,
        Change {
            org_id: Some(&org.id),
            action: "setup.owner_created",
            resource_type: "user",
            resource_id: &user.id,
            before: None,
            after: Some(serde_json::json!({
                "email": user.email, "name": user.name,
                "organization": org.name, "role": "owner",
            })),
        },
        now,
    )
    .await?;
    Ok(SetupDone { user, org })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_throttle_entries_are_pruned() {
        // A cell every 10 ms: one attempt is forgotten well within 50 ms.
        let n = NonZeroU32::new(6000).unwrap();
        let t = Throttle::new(n, n);
        for i in 0..PRUNE_EVERY - 1 {
            let ip = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
            t.check(&format!("user{i}@example.com"), Some(ip)).unwrap();
        }
        assert_eq!(t.len(), (4095, 4095));
        std::thread::sleep(std::time::Duration::from_millis(50));
        // The 4096th attempt prunes first, then counts itself.
        t.check("last@example.com", None).unwrap();
        assert_eq!(t.len(), (1, 0));
    }
}
