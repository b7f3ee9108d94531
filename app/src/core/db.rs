//! Connecting to SQLite or PostgreSQL through one `AnyPool`, and running the
//! migrations embedded for each. SQL here uses `$N` parameters, which both accept.

use crate::policy::ProjectScope;
use sqlx::any::{install_default_drivers, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tower_sessions::session::{Id, Record};
use tower_sessions::{session_store, ExpiredDeletion};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// The session store, typed per backend (tower-sessions-sqlx-store has one each).
#[derive(Clone, Debug)]
pub enum SessionStore {
    Sqlite(Hashed<tower_sessions_sqlx_store::SqliteStore>),
    Postgres(Hashed<tower_sessions_sqlx_store::PostgresStore>),
}

/// Keeps each session under a SHA-256 of its cookie's id, so that reading the
/// sessions table does not give a working cookie.
#[derive(Clone, Debug)]
pub struct Hashed<S>(pub S);

fn hashed(id: &Id) -> Id {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"tollgate/session-id/v1\0")
        .chain_update(id.0.to_le_bytes())
        .finalize();
    let mut half = [0_u8; 16];
    half.copy_from_slice(&digest[..16]);
    Id(i128::from_le_bytes(half))
}

#[async_trait::async_trait]
impl<S: tower_sessions::SessionStore> tower_sessions::SessionStore for Hashed<S> {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        loop {
            let want = hashed(&record.id);
            let mut stored = Record {
                id: want,
                ..record.clone()
            };
            // The inner store picks another id when this one is taken; that id
            // is no hash of a cookie, so drop it and draw a new cookie id.
            self.0.create(&mut stored).await?;
            if stored.id == want {
                return Ok(());
            }
            self.0.delete(&stored.id).await?;
            record.id = Id::default();
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let stored = Record {
            id: hashed(&record.id),
            ..record.clone()
        };
        self.0.save(&stored).await
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let found = self.0.load(&hashed(id)).await?;
        Ok(found.map(|r| Record { id: *id, ..r }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.0.delete(&hashed(id)).await
    }
}

#[async_trait::async_trait]
impl<S: ExpiredDeletion> ExpiredDeletion for Hashed<S> {
    async fn delete_expired(&self) -> session_store::Result<()> {
        self.0.delete_expired().await
    }
}

#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
    /// How many times a connection was handed out (new or reused): what a
    /// test reads to prove a path never touched the database.
    pub acquires: Arc<AtomicU64>,
    pub backend: Backend,
    pub sessions: SessionStore,
    /// The typed PostgreSQL pool (sessions, the change feed's listener).
    pub pg: Option<sqlx::PgPool>,
    /// Where the database is (it may hold a password).
    url: Arc<secrecy::SecretString>,
}

impl Db {
    /// A connection of its own, outside the pool: for a background task
    /// that must not take the pool's connections (nor count as taking one).
    pub async fn connect_one(&self) -> Result<sqlx::AnyConnection, sqlx::Error> {
        use secrecy::ExposeSecret;
        <sqlx::AnyConnection as sqlx::Connection>::connect(self.url.expose_secret()).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database URL must start with sqlite: or postgres://")]
    UnknownScheme,
    #[error("cannot open the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot migrate the database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("cannot set up the session store: {0}")]
    Sessions(#[source] sqlx::Error),
    #[error("cannot make the database files private: {0}")]
    Files(#[source] std::io::Error),
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Opens (creating where needed) and migrates the database at `url`.
pub async fn connect(url: &str) -> Result<Db, DbError> {
    install_default_drivers();
    let backend = Backend::of_url(url).ok_or(DbError::UnknownScheme)?;
    let acquires = Arc::new(AtomicU64::new(0));
    let reused = acquires.clone();
    let fresh = acquires.clone();
    let counted = AnyPoolOptions::new().before_acquire(move |_, _| {
        reused.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(true) })
    });
    let pool = match backend {
        Backend::Sqlite => {
            let opts =
                sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(DbError::Connect)?;
            // An in-memory database has no file (sqlx names it
            // `file:sqlx-in-memory-N`, which must not be created on disk).
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            if !in_memory {
                owner_only(opts.get_filename()).map_err(DbError::Files)?;
            }
            let opts = opts
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .foreign_keys(true)
                .busy_timeout(std::time::Duration::from_secs(10));
            // Open once with the typed driver so the file exists in WAL mode.
            let typed = sqlx::SqlitePool::connect_with(opts)
                .await
                .map_err(DbError::Connect)?;
            typed.close().await;
            counted
                .max_connections(8)
                .after_connect(move |conn, _| {
                    fresh.fetch_add(1, Ordering::Relaxed);
                    Box::pin(async move {
                        conn.execute("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;")
                            .await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await
                .map_err(DbError::Connect)?
        }
        Backend::Postgres => counted
            .max_connections(16)
            .after_connect(move |_, _| {
                fresh.fetch_add(1, Ordering::Relaxed);
                Box::pin(async { Ok(()) })
            })
            .connect(url)
            .await
            .map_err(DbError::Connect)?,
    };
    let migrator = match backend {
        Backend::Sqlite => &SQLITE_MIGRATIONS,
        Backend::Postgres => &POSTGRES_MIGRATIONS,
    };
    migrator.run(&pool).await.map_err(DbError::Migrate)?;
    let mut pg = None;
    let sessions = match backend {
        Backend::Sqlite => {
            let p = sqlx::SqlitePool::connect(url)
                .await
                .map_err(DbError::Connect)?;
            let store = tower_sessions_sqlx_store::SqliteStore::new(p);
            store.migrate().await.map_err(DbError::Sessions)?;
            SessionStore::Sqlite(Hashed(store))
        }
        Backend::Postgres => {
            let p = sqlx::PgPool::connect(url).await.map_err(DbError::Connect)?;
            pg = Some(p.clone());
            let store = tower_sessions_sqlx_store::PostgresStore::new(p);
            store.migrate().await.map_err(DbError::Sessions)?;
            SessionStore::Postgres(Hashed(store))
        }
    };
    Ok(Db {
        pool,
        acquires,
        backend,
        sessions,
        pg,
        url: Arc::new(url.into()),
    })
}

/// Creates the SQLite file readable by its owner only before SQLite opens it
/// (SQLite gives `-wal` and `-shm` the main file's mode), and tightens files
/// an older version left readable by others.
#[cfg(unix)]
fn owner_only(db: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if db.as_os_str().is_empty() || db.as_os_str() == ":memory:" {
        return Ok(());
    }
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db);
    match created {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn owner_only(_db: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

/// Runs `sql`, a DELETE of one row of the organization (`$1` the
/// organization's id, `$2` the row's key): whether there was such a row.
pub(crate) async fn delete_in_org(
    conn: &mut sqlx::AnyConnection,
    sql: &'static str,
    scope: &crate::policy::OrgScope,
    key: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(sql)
        .bind(scope.org_id())
        .bind(key)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A query with its binds, as the repositories build them.
pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// The one row `q` finds, or a 404 naming `what`.
pub(crate) async fn row_or_404(
    q: AnyQuery<'_>,
    conn: &mut sqlx::AnyConnection,
    what: &str,
) -> Result<sqlx::any::AnyRow, crate::error::AppError> {
    q.fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| crate::error::AppError::not_found(what))
}

/// The one row `q` finds, read by `read`, or a 404 naming `what`.
pub(crate) async fn one_or_404<T>(
    q: AnyQuery<'_>,
    conn: &mut sqlx::AnyConnection,
    what: &str,
    read: impl FnOnce(&sqlx::any::AnyRow) -> Result<T, sqlx::Error>,
) -> Result<T, crate::error::AppError> {
    Ok(read(&row_or_404(q, conn, what).await?)?)
}

/// `q` with the scope's project and organization bound next, in that order.
pub(crate) fn in_project<'q>(q: AnyQuery<'q>, scope: &'q ProjectScope) -> AnyQuery<'q> {
    q.bind(scope.project_id()).bind(scope.org_id())
}

/// Whether a query failed on a unique constraint (a lost race, a duplicate).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// The JSON-in-text codec: a list stored as a JSON array in a TEXT column.
pub(crate) fn json_list(s: &str) -> Result<Vec<String>, sqlx::Error> {
    serde_json::from_str(s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

pub(crate) fn to_json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned())
}

/// A TEXT column read as its type (roles, reset intervals, key kinds): the
/// one place a stored name that no longer parses becomes a decode error.
pub(crate) fn text_as<T>(s: &str) -> Result<T, sqlx::Error>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e: T::Err| sqlx::Error::Decode(e.to_string().into()))
}

/// A column of micro-dollars read as money: the one place `Usd` leaves the
/// database (it goes in by `Usd::micros`).
pub(crate) fn usd(r: &sqlx::any::AnyRow, column: &str) -> Result<crate::format::Usd, sqlx::Error> {
    use sqlx::Row;
    r.try_get::<i64, _>(column)
        .map(crate::format::Usd::from_micros)
}

/// Reads a project's or key's [`Caps`](super::limits::Caps) from `models_json`, `tpm_limit`, `rpm_limit`,
/// `budget_micros` and `budget_reset`.
pub(crate) fn caps(r: &sqlx::any::AnyRow) -> Result<super::limits::Caps, sqlx::Error> {
    use sqlx::Row;
    Ok(super::limits::Caps {
        models: json_list(&r.try_get::<String, _>("models_json")?)?,
        tpm_limit: r.try_get("tpm_limit")?,
        rpm_limit: r.try_get("rpm_limit")?,
        budget: usd_opt(r, "budget_micros")?,
        budget_reset: text_as(&r.try_get::<String, _>("budget_reset")?)?,
    })
}

/// A nullable column of micro-dollars (no limit where NULL).
pub(crate) fn usd_opt(
    r: &sqlx::any::AnyRow,
    column: &str,
) -> Result<Option<crate::format::Usd>, sqlx::Error> {
    use sqlx::Row;
    r.try_get::<Option<i64>, _>(column)
        .map(|m| m.map(crate::format::Usd::from_micros))
}
