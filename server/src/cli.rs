//! Operator commands: `tollgate admin create-owner | reset-password |
//! verify-audit | provisioning-key`.
//! Passwords come from standard input, never from the command line.

use clap::{Parser, Subcommand};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use tollgate_app::core::audit::{self, Actor};
use tollgate_app::core::domain::{Email, OrgName, Password, PersonName};
use tollgate_app::core::{auth, db, ops, orgs};
use tollgate_app::error::AppError;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Self-hosted LLM gateway with governance"
)]
pub struct Cli {
    /// A TOML configuration file (else TOLLGATE_CONFIG, else ./tollgate.toml if present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the console and APIs (the default).
    Serve,
    /// Operator commands that work on the database directly.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create a user who owns a new organization; the password is read from stdin.
    CreateOwner {
        #[arg(long)]
        email: String,
        #[arg(long)]
        org: String,
        /// Display name (default: the part of the email before @).
        #[arg(long)]
        name: Option<String>,
    },
    /// Set a user's password, read from stdin; their sessions end.
    ResetPassword {
        #[arg(long)]
        email: String,
    },
    /// Check the audit log's hash chain; exits 1 at the first broken event.
    VerifyAudit,
    /// Print a new provisioning key for an organization (by id or name), for
    /// headless bootstrap; the only output is the token.
    ProvisioningKey {
        #[arg(long)]
        org: String,
        /// What the key is for (default: "bootstrap").
        #[arg(long)]
        name: Option<String>,
    },
}

pub async fn admin(config: &crate::config::Config, cmd: AdminCommand) -> ExitCode {
    match run(config, cmd).await {
        Ok(msg) => {
            let _ = writeln!(std::io::stdout(), "{msg}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            let _ = writeln!(std::io::stderr(), "error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn read_password() -> Result<String, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let _ = write!(std::io::stderr(), "Password: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

async fn run(config: &crate::config::Config, cmd: AdminCommand) -> Result<String, String> {
    let url = config.database_url();
    if url.starts_with("sqlite:") {
        config.ensure_data_dir().map_err(|e| e.to_string())?;
    }
    let db = db::connect(&url).await.map_err(|e| e.to_string())?;
    let shown = |e: AppError| e.to_string();
    let sql = |e: sqlx::Error| AppError::from(e).to_string();
    match cmd {
        AdminCommand::CreateOwner { email, org, name } => {
            let email = Email::parse("--email", &email).map_err(shown)?;
            let org_name = OrgName::parse("--org", &org).map_err(shown)?;
            let default_name = email
                .as_str()
                .split('@')
                .next()
                .unwrap_or("owner")
                .to_owned();
            let name = PersonName::parse("--name", name.as_deref().unwrap_or(&default_name))
                .map_err(shown)?;
            let password = Password::parse("password", read_password()?).map_err(shown)?;
            let hash = auth::hash_password(password).await.map_err(shown)?;
            let done = ops::create_owner(&db.pool, &email, &name, &hash, &org_name)
                .await
                .map_err(shown)?;
            Ok(format!(
                "created {} as owner of organization '{}' ({})",
                done.user.email, done.org.name, done.org.id
            ))
        }
        AdminCommand::ResetPassword { email } => {
            let email = Email::parse("--email", &email).map_err(shown)?;
            let password = Password::parse("password", read_password()?).map_err(shown)?;
            let hash = auth::hash_password(password).await.map_err(shown)?;
            let user = ops::reset_password(&db.pool, &Actor::cli(), &email, &hash)
                .await
                .map_err(shown)?
                .ok_or_else(|| format!("no user with email {}", email.as_str()))?;
            Ok(format!(
                "password of {} reset; their sessions have ended",
                user.email
            ))
        }
        AdminCommand::ProvisioningKey { org, name } => {
            let name = tollgate_app::core::domain::name(
                "--name",
                name.as_deref().unwrap_or("bootstrap"),
                100,
            )
            .map_err(shown)?;
            let mut conn = db.pool.acquire().await.map_err(sql)?;
            let found = orgs::find(&mut conn, &org).await.map_err(sql)?;
            drop(conn);
            let org = match found.as_slice() {
                [one] => one.clone(),
                [] => return Err(format!("no organization with the id or name '{org}'")),
                many => {
                    let ids: Vec<&str> = many.iter().map(|o| o.id.as_str()).collect();
                    return Err(format!(
                        "{} organizations are named '{org}'; give one of their ids: {}",
                        many.len(),
                        ids.join(", ")
                    ));
                }
            };
            let (_, token) =
                ops::create_provisioning_key(&db.pool, &Actor::cli(), &org.id, &name, None)
                    .await
                    .map_err(shown)?;
            Ok(token.expose().to_owned())
        }
        AdminCommand::VerifyAudit => {
            let mut conn = db.pool.acquire().await.map_err(sql)?;
            match audit::verify(&mut conn).await.map_err(sql)? {
                Ok(n) => Ok(format!("audit chain intact: {n} events verified")),
                Err(brk) => Err(format!("audit chain broken: {brk}")),
            }
        }
    }
}
