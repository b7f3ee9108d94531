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
}
