//! The test harness: the real app on port 0 with a fresh database per test
//! (a SQLite file, or a new PostgreSQL database), driven over HTTP.

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
            #[test]
            fn sqlite() {
                $crate::helpers::run(super::$name($crate::helpers::Backend::Sqlite))
            }
            #[test]
            fn postgres() {
                $crate::helpers::run(super::$name($crate::helpers::Backend::Postgres))
            }
        }
    };
}

/// Runs a test on a runtime of its own (two workers, as `#[tokio::test]`
/// had) and then waits at most 10 s for its threads. reactive_graph 0.2.16
/// can deadlock a worker that is still rendering a page when the request is
/// dropped (`Owner::with_context` drops the last reference to an owner
/// while it holds a child's lock); a plain runtime drop would wait for that
/// worker for ever and stall the whole run.
pub fn run(test: impl std::future::Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(test)));
    rt.shutdown_timeout(std::time::Duration::from_secs(10));
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
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
    /// The PostgreSQL database's name (`None` on SQLite).
    pub fn pg_name(&self) -> Option<&str> {
        self.pg_name.as_deref()
    }

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
    pub gateway: std::sync::Arc<tollgate_server::proxy::Gateway>,
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
        // Fake upstreams and webhook receivers listen on 127.0.0.1; tests of
        // the refusal turn this off.
        allow_private_networks: true,
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
        let gateway = tollgate_server::proxy::Gateway::start(&state, &config.proxy)
            .await
            .unwrap();
        let app = tollgate_server::router(state.clone(), gateway.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(tollgate_server::serve(listener, app, async {
            let _ = rx.await;
        }));
        let url = format!("http://{addr}");
        wait_ready(&reqwest::Client::new(), &url).await;
        TestApp {
            url,
            db,
            state,
            gateway,
            shutdown: Some(tx),
        }
    }

    /// Waits until the proxy's change feed has read the log up to its head
    /// (on SQLite, once: there it reads only on its timer).
    pub async fn feed_caught_up(&self) {
        use std::sync::atomic::Ordering;
        let feed = &self.gateway.feed;
        for _ in 0..3000 {
            if feed.read_at.load(Ordering::SeqCst) > 0 {
                if self.db.pg_name.is_none() {
                    return;
                }
                let mut conn = self.sql().await;
                let head: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM change_log")
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                if feed.applied.load(Ordering::SeqCst) >= head.unwrap_or(0) {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the change feed did not catch up in 30 s");
    }

    /// A browser-like client (cookies kept). A request that has not
    /// finished after two minutes fails the test rather than stalling the
    /// run: a guard against hangs, not a speed check.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .timeout(std::time::Duration::from_secs(120))
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

    /// Calls `name`, which must fail with `status` and a message containing
    /// `needle`; returns the body.
    pub async fn refused(
        &self,
        client: &reqwest::Client,
        name: &str,
        form: &[(&str, &str)],
        status: u16,
        needle: &str,
    ) -> Value {
        let (got, body) = self.call(client, name, form).await;
        assert_eq!(got, status, "{name}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{name}: {body}"
        );
        body
    }

    /// Calls `name`, which must be refused as a bad request naming `field`.
    pub async fn bad_field(
        &self,
        client: &reqwest::Client,
        name: &str,
        form: &[(&str, &str)],
        field: &str,
    ) {
        let (status, body) = self.call(client, name, form).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (400, Some(field)),
            "{name}: {body}"
        );
    }

    /// A mock model billed at $10 per million tokens each way.
    pub async fn priced_model(&self, owner: &reqwest::Client, org: &str, id: &str) {
        self.ok(owner, "upsert_model", &priced_model(org, id)).await;
    }

    /// Creates a project as `client`; returns its id.
    pub async fn create_project(&self, client: &reqwest::Client, org: &str, name: &str) -> String {
        self.ok(client, "create_project", &[("org_id", org), ("name", name)])
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned()
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

    /// The owner of another organization: `email` joins `org`, creates an
    /// organization named `name`, then the owner removes them from `org`.
    /// Returns their client and their organization's id.
    pub async fn outside_owner(
        &self,
        owner: &reqwest::Client,
        org: &str,
        email: &str,
        name: &str,
    ) -> (reqwest::Client, String) {
        let c = self.add_member(owner, org, email, "member").await;
        let other_org = self.create_org(&c, name).await;
        let id = self.user_id(&c).await;
        self.ok(owner, "remove_member", &[("org_id", org), ("user_id", &id)])
            .await;
        (c, other_org)
    }

    /// `add_member` for each `(email, role)`, in order; returns their clients.
    pub async fn add_members<const N: usize>(
        &self,
        owner: &reqwest::Client,
        org_id: &str,
        who: [(&str, &str); N],
    ) -> [reqwest::Client; N] {
        let mut clients = Vec::with_capacity(N);
        for (email, role) in who {
            clients.push(self.add_member(owner, org_id, email, role).await);
        }
        clients.try_into().unwrap()
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

    /// Signs in without a cookie jar; returns the `set-cookie` header.
    pub async fn sign_in_cookie(&self, email: &str, password: &str) -> String {
        let res = reqwest::Client::new()
            .post(format!("{}/api/console/sign_in", self.url))
            .form(&[("email", email), ("password", password)])
            .send()
            .await
            .unwrap();
        res.headers()["set-cookie"].to_str().unwrap().to_owned()
    }

    /// Creates an organization as `client`; returns its id.
    pub async fn create_org(&self, client: &reqwest::Client, name: &str) -> String {
        self.ok(client, "create_org", &[("name", name)]).await["id"]
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

/// Everything the database holds, as text: the raw SQLite file and its WAL,
/// or every PostgreSQL table cast to text. For "this never reaches the
/// database" checks.
pub async fn dump(db: &TestDb) -> String {
    let mut dump = String::new();
    if db.pg_name.is_none() {
        let path = db.url.trim_start_matches("sqlite://");
        for f in [path.to_owned(), format!("{path}-wal")] {
            if let Ok(bytes) = std::fs::read(&f) {
                dump.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        return dump;
    }
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables \
         WHERE table_schema IN ('public', 'tower_sessions') AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(tables.len() >= 8, "{tables:?}");
    for t in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT CAST(t AS TEXT) FROM {t} t"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        dump.push_str(&rows.join("\n"));
    }
    dump
}

/// Runs `cmd` with `stdin` written to its standard input; its output.
pub fn run_with_stdin(mut cmd: std::process::Command, stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Polls `{url}/readyz` until it answers with success (for up to 30 s).
pub async fn wait_ready(client: &reqwest::Client, url: &str) {
    for _ in 0..600 {
        if client
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The real `tollgate` binary serving on a free port, its log in a file.
pub struct Binary {
    pub url: String,
    pub child: std::process::Child,
    pub log_path: std::path::PathBuf,
}

impl Binary {
    pub async fn start(db: &TestDb, env: &[(&str, &str)]) -> Binary {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}");
        let log_path = db.dir.path().join(format!("server-{port}.log"));
        let log_file = std::fs::File::create(&log_path).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.env("TOLLGATE_DATABASE_URL", &db.url)
            .env("TOLLGATE_DATA_DIR", db.dir.path().join("data"))
            .env("TOLLGATE_LISTEN", format!("127.0.0.1:{port}"))
            .env("TOLLGATE_ALLOW_PRIVATE_NETWORKS", "true")
            .env("RUST_LOG", "debug")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        wait_ready(&reqwest::Client::new(), &url).await;
        Binary {
            url,
            child,
            log_path,
        }
    }

    /// SIGTERM, then waits for the process to end; returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().ok().and_then(|s| s.code())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay in front of a service (PostgreSQL, Redis) that a test can
/// pause: while paused it refuses new connections; the ones it carries go on
/// until either end closes them, or until [`Relay::cut`] drops them.
pub struct Relay {
    pub port: u16,
    paused: std::sync::Arc<std::sync::atomic::AtomicBool>,
    carried: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(upstream: &str) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let paused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let carried = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (refuse, carrying) = (paused.clone(), carried.clone());
        let upstream = upstream.to_owned();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if refuse.load(Ordering::SeqCst) {
                    continue;
                }
                let upstream = upstream.clone();
                let relay = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                carrying.lock().unwrap().push(relay.abort_handle());
            }
        });
        Relay {
            port,
            paused,
            carried,
            task,
        }
    }

    pub fn pause(&self, paused: bool) {
        self.paused
            .store(paused, std::sync::atomic::Ordering::SeqCst);
    }

    /// Pauses and closes every connection carried: the service is gone.
    pub fn cut(&self) {
        self.pause(true);
        for c in self.carried.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        for c in self.carried.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// A console session on a server (the binary), signed in as its first owner.
pub struct Console {
    pub url: String,
    pub http: reqwest::Client,
    pub org: String,
    pub project: String,
}

impl Console {
    pub async fn call(&self, name: &str, form: &[(&str, &str)]) -> Value {
        let res = self
            .http
            .post(format!("{}/api/console/{name}", self.url))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert!(status.is_success(), "{name}: {body}");
        body
    }

    pub async fn set_up(url: &str) -> Console {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        let mut c = Console {
            url: url.to_owned(),
            http,
            org: String::new(),
            project: String::new(),
        };
        let body = c
            .call(
                "setup",
                &[
                    ("email", "owner@a.test"),
                    ("name", "Owner"),
                    ("password", "owner-password-1234"),
                    ("org_name", "Acme"),
                ],
            )
            .await;
        c.org = body["org_id"].as_str().unwrap().to_owned();
        let p = c
            .call("create_project", &[("org_id", &c.org), ("name", "P")])
            .await;
        c.project = p["id"].as_str().unwrap().to_owned();
        c
    }

    pub async fn key(&self, extra: &[(&str, &str)]) -> (String, String) {
        let form = key_form(&self.org, &self.project, extra);
        let issued = self.call("create_key", &form).await;
        (
            issued["key"]["id"].as_str().unwrap().to_owned(),
            issued["token"].as_str().unwrap().to_owned(),
        )
    }
}

/// The owner's project serves `paid/echo` ($10 per million tokens), with
/// `limits` replacing the project's open ones.
pub async fn paid_project(o: &Console, limits: &[(&str, &str)]) {
    o.call("upsert_model", &priced_model(&o.org, "paid/echo"))
        .await;
    let mut project = vec![
        ("org_id", o.org.as_str()),
        ("project_id", o.project.as_str()),
        ("name", "P"),
        ("models[0]", "paid/echo"),
    ];
    project.extend(OPEN_PROJECT);
    for (k, v) in limits {
        project.retain(|(f, _)| f != k);
        project.push((k, v));
    }
    o.call("update_project", &project).await;
}

/// `upsert_model`'s form for model `id`: the mock echo at $10 per million
/// tokens in and out.
pub fn priced_model<'a>(org: &'a str, id: &'a str) -> [(&'a str, &'a str); 7] {
    [
        ("org_id", org),
        ("id", id),
        ("provider", "mock"),
        ("upstream", "echo"),
        ("input_price", "10"),
        ("output_price", "10"),
        ("context_window", "128000"),
    ]
}

/// A project's limit and logging fields for `update_project`: no limits,
/// content logging on.
pub const OPEN_PROJECT: [(&str, &str); 6] = [
    ("tpm", ""),
    ("rpm", ""),
    ("max_budget", ""),
    ("budget_reset", "never"),
    ("ip_allowlist", ""),
    ("content_logging", "on"),
];

/// A key's limit fields, all unset.
pub const NO_LIMITS: [(&str, &str); 6] = [
    ("max_budget", ""),
    ("budget_reset", "never"),
    ("tpm", ""),
    ("rpm", ""),
    ("expires_at", ""),
    ("tags", ""),
];

/// The fields of `create_key` with no limits, then `extra` (replacing a
/// default of the same name): every key in these tests starts here.
pub fn key_form<'a>(
    org: &'a str,
    project: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut form: Vec<(&str, &str)> = vec![("org_id", org), ("project_id", project), ("name", "k")];
    form.extend(NO_LIMITS);
    for (k, v) in extra {
        form.retain(|(f, _)| f != k);
        form.push((k, v));
    }
    form
}

impl TestApp {
    /// Creates a key as `client`; returns its id and its token.
    pub async fn create_key(
        &self,
        client: &reqwest::Client,
        org: &str,
        project: &str,
        extra: &[(&str, &str)],
    ) -> (String, String) {
        let issued = self
            .ok(client, "create_key", &key_form(org, project, extra))
            .await;
        (
            issued["key"]["id"].as_str().unwrap().to_owned(),
            issued["token"].as_str().unwrap().to_owned(),
        )
    }
}
