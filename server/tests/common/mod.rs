//! The test harness: the real app on port 0 with a fresh database per test
//! (a SQLite file, or a new PostgreSQL database), driven over HTTP.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use serde_json::Value;
use std::net::SocketAddr;
use tempfile::TempDir;
use tollgate_server::config::Config;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async test body once per backend: `both!(name)` for `async fn name(Backend)`.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    };
}

pub fn pg_admin_url() -> String {
    std::env::var("TOLLGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test; PostgreSQL ones are dropped afterwards.
pub struct TestDb {
    pub url: String,
    pub dir: TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => TestDb {
                url: format!("sqlite://{}", dir.path().join("tollgate.db").display()),
                dir,
                pg_name: None,
            },
            Backend::Postgres => {
                let name = format!("tollgate_test_{}", uuid::Uuid::new_v4().simple());
                let admin = pg_admin_url();
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .unwrap();
                sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap();
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
                TestDb {
                    url: format!("{base}/{name}"),
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // A runtime of its own: Drop cannot await, and the test's may be gone.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut c) =
                        <sqlx::PgConnection as sqlx::Connection>::connect(&pg_admin_url()).await
                    {
                        let _ = sqlx::Executor::execute(
                            &mut c,
                            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
                        )
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

pub struct TestApp {
    pub url: String,
    pub db: TestDb,
    pub state: tollgate_app::core::state::AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn test_config(db: &TestDb, addr: SocketAddr) -> Config {
    Config {
        listen: addr,
        database_url: Some(db.url.clone()),
        data_dir: db.dir.path().join("data"),
        public_url: Some(format!("http://{addr}")),
        secret_key: Some(secrecy::SecretString::from(
            "test-secret-not-for-production",
        )),
        ..Config::default()
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .try_init();
        let db = TestDb::new(backend).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = test_config(&db, addr);
        tweak(&mut config);
        let state = tollgate_server::state(&config).await.unwrap();
        let app = tollgate_server::router(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(tollgate_server::serve(listener, app, async {
            let _ = rx.await;
        }));
        TestApp {
            url: format!("http://{addr}"),
            db,
            state,
            shutdown: Some(tx),
        }
    }

    /// A browser-like client: its own cookie jar.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap()
    }

    /// Calls a server function with form fields; returns status and JSON body.
    pub async fn call(
        &self,
        client: &reqwest::Client,
        name: &str,
        form: &[(&str, &str)],
    ) -> (u16, Value) {
        let res = client
            .post(format!("{}/api/console/{name}", self.url))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// Like `call`, but the call must succeed.
    pub async fn ok(&self, client: &reqwest::Client, name: &str, form: &[(&str, &str)]) -> Value {
        let (status, body) = self.call(client, name, form).await;
        assert_eq!(status, 200, "{name} failed: {body}");
        body
    }

    /// Runs first-run setup; returns the owner's client and organization id.
    pub async fn setup(&self, email: &str, password: &str) -> (reqwest::Client, String) {
        let c = self.client();
        let body = self
            .ok(
                &c,
                "setup",
                &[
                    ("email", email),
                    ("name", "Owner"),
                    ("password", password),
                    ("org_name", "Acme"),
                ],
            )
            .await;
        (c, body["org_id"].as_str().unwrap().to_owned())
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> reqwest::Client {
        let c = self.client();
        self.ok(&c, "sign_in", &[("email", email), ("password", password)])
            .await;
        c
    }

    /// The owner invites `email` with `role`; the invitee accepts in a new
    /// client (creating the account with `password`). Returns that client.
    pub async fn add_member(
        &self,
        owner: &reqwest::Client,
        org_id: &str,
        email: &str,
        role: &str,
    ) -> reqwest::Client {
        let token = self.invite(owner, org_id, email, role).await;
        let c = self.client();
        self.ok(
            &c,
            "accept_invitation",
            &[
                ("token", &token),
                ("name", email),
                ("password", MEMBER_PASSWORD),
            ],
        )
        .await;
        c
    }

    /// Creates an invitation; returns its token (the last part of the link).
    pub async fn invite(
        &self,
        owner: &reqwest::Client,
        org_id: &str,
        email: &str,
        role: &str,
    ) -> String {
        let body = self
            .ok(
                owner,
                "invite_member",
                &[("org_id", org_id), ("email", email), ("role", role)],
            )
            .await;
        let link = body["link"].as_str().unwrap();
        assert!(link.starts_with(&format!("{}/invite/", self.url)), "{link}");
        link.rsplit('/').next().unwrap().to_owned()
    }

    pub async fn user_id(&self, client: &reqwest::Client) -> String {
        self.ok(client, "current_user", &[]).await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A direct connection to the test's database (for assertions only).
    pub async fn sql(&self) -> sqlx::AnyConnection {
        sqlx::any::install_default_drivers();
        <sqlx::AnyConnection as sqlx::Connection>::connect(&self.db.url)
            .await
            .unwrap()
    }
}

pub const OWNER_PASSWORD: &str = "owner-password-1234";
pub const MEMBER_PASSWORD: &str = "member-password-1234";
