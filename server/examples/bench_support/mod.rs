//! What the console benchmarks share: a fresh database (a SQLite file, or a
//! new PostgreSQL database), the real server on a free port, and a signed-in
//! client calling server functions.

use tollgate_app::core::state::AppState;

mod server;

pub struct Bench {
    /// "sqlite" or "postgres".
    pub backend: String,
    pub state: AppState,
    /// `http://…/api/console`.
    pub url: String,
    pub http: reqwest::Client,
    /// Holds the SQLite file and the data dir until the benchmark ends.
    pub _dir: tempfile::TempDir,
}

/// Reads the command line (a backend, "sqlite" by default, and a count),
/// starts the server there and runs first-run setup; returns the bench, the
/// organization's id and the count.
pub async fn from_args<T: std::str::FromStr>(default: T) -> (Bench, String, T)
where
    T::Err: std::fmt::Debug,
{
    let mut args = std::env::args().skip(1);
    let backend = args.next().unwrap_or_else(|| "sqlite".into());
    let n = args.next().map_or(default, |s| s.parse().unwrap());
    let bench = start(&backend).await;
    let org = bench.setup().await;
    (bench, org, n)
}

/// Starts the server on `backend` ("sqlite" or "postgres").
pub async fn start(backend: &str) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let db_url = match backend {
        "postgres" => {
            let admin = std::env::var("TOLLGATE_TEST_PG")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let name = format!("tollgate_bench_{}", std::process::id());
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                .await
                .unwrap();
            sqlx::Executor::execute(&mut c, format!("DROP DATABASE IF EXISTS {name}").as_str())
                .await
                .unwrap();
            sqlx::Executor::execute(&mut c, format!("CREATE DATABASE {name}").as_str())
                .await
                .unwrap();
            format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
        }
        _ => format!("sqlite://{}", dir.path().join("bench.db").display()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = server::config(addr, db_url, dir.path().join("data"));
    let (state, gateway) = server::state(&config).await;
    tokio::spawn(tollgate_server::serve(
        listener,
        tollgate_server::router(state.clone(), gateway),
        std::future::pending(),
    ));
    Bench {
        backend: backend.to_owned(),
        state,
        url: format!("http://{addr}/api/console"),
        http: reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap(),
        _dir: dir,
    }
}

impl Bench {
    /// Calls a server function; it must succeed.
    pub async fn post(&self, f: &str, form: Vec<(&str, String)>) -> serde_json::Value {
        let res = self
            .http
            .post(format!("{}/{f}", self.url))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
        res.json::<serde_json::Value>().await.unwrap()
    }

    /// First-run setup; returns the organization's id.
    pub async fn setup(&self) -> String {
        let setup = self
            .post(
                "setup",
                vec![
                    ("email", "bench@example.com".into()),
                    ("name", "Bench".into()),
                    ("password", "benchmark-password".into()),
                    ("org_name", "Bench".into()),
                ],
            )
            .await;
        setup["org_id"].as_str().unwrap().to_owned()
    }

    /// A project "Big" in `org_id` with `n` keys: the first 1,000 made by
    /// the core function the console uses (a budget, RPM, a model and two
    /// tags each), in one batch; the rest copied from the first by one SQL
    /// statement with ids, public ids, secret hashes, names and budgets of
    /// their own (a million keys in seconds rather than minutes; as rows
    /// they are the same). Returns the project's id.
    #[allow(dead_code, reason = "the usage benchmark seeds no keys")]
    pub async fn seed_keys(&self, org_id: &str, n: usize) -> String {
        use tollgate_app::core::keys::{self, Holder, KeyLimits};
        use tollgate_app::core::limits::{Caps, ResetInterval};
        use tollgate_app::policy::{self, OrgMember, OrgRole, ProjectMember};
        let project = self
            .post(
                "create_project",
                vec![("org_id", org_id.to_owned()), ("name", "Big".into())],
            )
            .await;
        let project_id = project["id"].as_str().unwrap().to_owned();
        let owner_id = self.post("current_user", vec![]).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let member = ProjectMember {
            org: OrgMember {
                user_id: owner_id.clone(),
                org_id: org_id.to_owned(),
                role: OrgRole::Owner,
            },
            project_id: project_id.clone(),
            role: None,
        };
        let scope = policy::authorize_project(&member, policy::Action::ManageOwnKeys).unwrap();
        let now = tollgate_app::core::now_ms();
        let made = n.min(1000);
        {
            let mut tx = self.state.db.pool.begin().await.unwrap();
            for i in 0..made {
                let limits = KeyLimits {
                    name: format!("key-{i:06}"),
                    caps: Caps {
                        models: vec!["mock/echo".into()],
                        tpm_limit: None,
                        rpm_limit: Some(60),
                        budget: Some(tollgate_app::format::Usd::from_micros(5_000_000)),
                        budget_reset: ResetInterval::Monthly,
                    },
                    expires_at: None,
                    no_content_logging: false,
                    tags: vec![format!("team-{}", i % 100), "bench".into()],
                    metadata: serde_json::json!({}),
                };
                keys::create(
                    &mut tx,
                    &scope,
                    Holder::User(&owner_id),
                    &limits,
                    now + i as i64,
                )
                .await
                .unwrap();
            }
            tx.commit().await.unwrap();
        }
        if n > made {
            self.copy_keys(&project_id, made, n).await;
        }
        project_id
    }

    /// Keys `from..to` of `project_id`, copied from one of its keys.
    #[allow(dead_code, reason = "the usage benchmark seeds no keys")]
    async fn copy_keys(&self, project_id: &str, from: usize, to: usize) {
        const SHARED: &str = "hint, org_id, project_id, kind, owner_id, models_json, tpm_limit, \
            rpm_limit, budget_reset, expires_at, no_content_logging, tags_json, metadata_json, \
            spend_micros, created_by, created_at, updated_at, revoked_at";
        const OWN: &str = "id, public_id, id_hash, secret_hash, name, name_lower, budget_micros";
        let sql = if self.backend == "postgres" {
            format!(
                "INSERT INTO api_keys ({OWN}, {SHARED}) \
                 SELECT md5(random()::text || i), 'B' || lpad(i::text, 11, '0'), \
                 md5(random()::text) || md5(random()::text), md5(random()::text) || md5(random()::text), \
                 'key-' || i, 'key-' || i, t.budget_micros + i, {SHARED} \
                 FROM generate_series($1::bigint, $2::bigint - 1) AS i, \
                 (SELECT * FROM api_keys WHERE project_id = $3 LIMIT 1) AS t"
            )
        } else {
            format!(
                "WITH RECURSIVE seq(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < $2) \
                 INSERT INTO api_keys ({OWN}, {SHARED}) \
                 SELECT lower(hex(randomblob(16))), printf('B%011d', i), \
                 lower(hex(randomblob(32))), lower(hex(randomblob(32))), \
                 'key-' || i, 'key-' || i, t.budget_micros + i, {SHARED} \
                 FROM seq, (SELECT * FROM api_keys WHERE project_id = $3 LIMIT 1) AS t"
            )
        };
        sqlx::query(&sql)
            .bind(i64::try_from(from).unwrap())
            .bind(i64::try_from(to).unwrap())
            .bind(project_id)
            .execute(&self.state.db.pool)
            .await
            .unwrap();
    }
}
