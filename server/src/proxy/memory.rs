//! What the proxy knows, held in memory: keys by public id, projects,
//! organizations with their catalogue and providers. Loaded at start and
//! kept current by change events; a request never reads the database.

use ipnet::IpNet;
use secrecy::SecretString;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use tollgate_app::core::catalogue::{self, Model};
use tollgate_app::core::changes::Change;
use tollgate_app::core::db::Db;
use tollgate_app::core::keys::{self, token, Load};
use tollgate_app::core::limits::ResetInterval;
use tollgate_app::core::orgs::{self, ProxyOrg};
use tollgate_app::core::projects::{self, Project};
use tollgate_app::core::prompts;
use tollgate_app::core::providers::{self, Upstream};
use tollgate_app::core::virtual_models::{self, Health, HealthBoard, VirtualModel};

use super::error::ProxyError;
pub use super::keytable::KeyEntry;
use super::keytable::KeyTable;

pub struct ProjectEntry {
    pub project: Project,
    pub reset: ResetInterval,
    pub allow: Vec<IpNet>,
    /// Allowlist entries that are not addresses or networks: while there
    /// are any, the allowlist allows nobody (fail closed).
    pub unparseable: usize,
}

pub struct OrgEntry {
    pub org: ProxyOrg,
    pub reset: ResetInterval,
    /// Each catalogue model with where it is served from, resolved at load.
    pub routes: HashMap<String, Route>,
    /// Each virtual model with its targets, resolved at load.
    pub virtuals: HashMap<String, Arc<super::routing::VirtualRoute>>,
    /// Each prompt with its versions ready to render.
    pub prompts: HashMap<String, Arc<super::prompts::PromptEntry>>,
    /// Each registered MCP server, ready to call.
    pub mcp: HashMap<String, Arc<crate::mcp::McpUpstream>>,
}

pub struct Route {
    pub model: Arc<Model>,
    /// In the order they are tried; empty where no named provider exists.
    pub deployments: Arc<[Deployment]>,
}

/// A key that authenticated, with its project and organization.
#[derive(Clone)]
pub struct Caller {
    pub key: Arc<KeyEntry>,
    pub project: Arc<ProjectEntry>,
    pub org: Arc<OrgEntry>,
}

/// One place a model is served from, its endpoints' URLs parsed once.
#[derive(Clone)]
pub struct Deployment {
    pub provider: Arc<Upstream>,
    pub upstream_model: String,
    pub urls: Arc<Urls>,
    /// How this place has been answering (this instance's view).
    pub health: Arc<Health>,
}

/// A provider's endpoints (`None` where its base URL does not parse).
pub struct Urls {
    pub chat: Option<reqwest::Url>,
    pub completions: Option<reqwest::Url>,
    pub embeddings: Option<reqwest::Url>,
    pub messages: Option<reqwest::Url>,
    pub count_tokens: Option<reqwest::Url>,
    pub responses: Option<reqwest::Url>,
    /// Set once the provider answered 404 or 405 to the Responses API (it
    /// serves chat only, as vLLM or Ollama may): from then on this
    /// instance sends it Responses requests as chat. Cleared when the
    /// provider changes (its URLs are built anew).
    pub chat_only: std::sync::atomic::AtomicBool,
}

impl Urls {
    fn of(base: &str) -> Urls {
        let at = |path: &str| reqwest::Url::parse(&format!("{base}/{path}")).ok();
        Urls {
            chat: at("chat/completions"),
            completions: at("completions"),
            embeddings: at("embeddings"),
            messages: at("messages"),
            count_tokens: at("messages/count_tokens"),
            responses: at("responses"),
            chat_only: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// An organization's configured providers by name, with their URLs parsed.
pub type Providers = HashMap<String, (Arc<Upstream>, Arc<Urls>)>;

/// The place `provider`/`upstream` of an organization, where it is configured.
pub fn deployment(
    providers: &Providers,
    board: &HealthBoard,
    org: &str,
    provider: &str,
    upstream: &str,
) -> Option<Deployment> {
    let (provider, upstream) = (provider.trim(), upstream.trim());
    providers.get(provider).map(|(p, urls)| Deployment {
        provider: p.clone(),
        upstream_model: upstream.to_owned(),
        urls: urls.clone(),
        health: board.of(org, provider, upstream),
    })
}

/// The catalogue's routes and the virtual models' over them.
fn routes(
    org: &str,
    models: Vec<Model>,
    upstreams: Vec<Upstream>,
    virtuals: Vec<VirtualModel>,
    board: &HealthBoard,
) -> (
    HashMap<String, Route>,
    HashMap<String, Arc<super::routing::VirtualRoute>>,
) {
    let providers: Providers = upstreams
        .into_iter()
        .map(|u| {
            let urls = Arc::new(Urls::of(&u.provider.base_url));
            (u.provider.name.clone(), (Arc::new(u), urls))
        })
        .collect();
    let routes: HashMap<String, Route> = models
        .into_iter()
        .map(|m| {
            let first = std::iter::once((m.provider.as_str(), m.upstream.as_str()));
            let rest = m.fallbacks.iter().filter_map(|f| f.split_once(':'));
            let deployments: Vec<Deployment> = first
                .chain(rest)
                .filter_map(|(provider, upstream)| {
                    deployment(&providers, board, org, provider, upstream)
                })
                .collect();
            let route = Route {
                model: Arc::new(m),
                deployments: deployments.into(),
            };
            (route.model.id.clone(), route)
        })
        .collect();
    let virtuals = virtuals
        .into_iter()
        .map(|v| {
            let route = super::routing::VirtualRoute::resolve(v, &routes, &providers, board, org);
            (route.id.clone(), Arc::new(route))
        })
        .collect();
    (routes, virtuals)
}

#[derive(Default)]
struct Maps {
    keys: KeyTable,
    projects: HashMap<String, Arc<ProjectEntry>>,
    orgs: HashMap<String, Arc<OrgEntry>>,
}

pub struct Memory {
    db: Db,
    secret: Arc<SecretString>,
    board: Arc<HealthBoard>,
    maps: RwLock<Maps>,
    /// Held by each reload from its reads to its swap, so that a reload
    /// that read earlier never swaps in after one that read later (a change
    /// applied by its own instance and again from the feed).
    reloading: tokio::sync::Mutex<()>,
}

fn project_entry(project: Project) -> Arc<ProjectEntry> {
    let (allow, bad): (Vec<_>, Vec<_>) = project
        .ip_allowlist
        .iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| s)
        })
        .partition(Result::is_ok);
    let bad: Vec<&str> = bad.into_iter().filter_map(Result::err).collect();
    if !bad.is_empty() {
        tracing::error!(
            project = %project.id,
            entries = ?bad,
            "the project's IP allowlist has entries that are not addresses or networks; it allows nobody until they are fixed"
        );
    }
    Arc::new(ProjectEntry {
        reset: project.caps.budget_reset,
        allow: allow.into_iter().filter_map(Result::ok).collect(),
        unparseable: bad.len(),
        project,
    })
}

impl Memory {
    pub fn new(db: Db, secret: Arc<SecretString>, board: Arc<HealthBoard>) -> Memory {
        Memory {
            db,
            secret,
            board,
            maps: RwLock::new(Maps::default()),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.maps
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.maps
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn org_entry(&self, org: ProxyOrg) -> Result<Arc<OrgEntry>, sqlx::Error> {
        let mut conn = self.db.pool.acquire().await?;
        let models = catalogue::load_for_proxy(&mut conn, &org.id).await?;
        let upstreams = providers::load_for_proxy(&mut conn, &org.id, &self.secret).await?;
        let virtuals = virtual_models::load_for_proxy(&mut conn, &org.id).await?;
        let prompts = super::prompts::entries(prompts::load_for_proxy(&mut conn, &org.id).await?);
        let mcp = crate::mcp::entries(
            tollgate_app::core::mcp::load_for_proxy(&mut conn, &org.id, &self.secret).await?,
        );
        let (routes, virtuals) = routes(&org.id, models, upstreams, virtuals, &self.board);
        Ok(Arc::new(OrgEntry {
            reset: org.spending.spend_cap_reset,
            routes,
            virtuals,
            prompts,
            mcp,
            org,
        }))
    }

    /// Everything, at start.
    pub async fn load_all(&self) -> Result<(), sqlx::Error> {
        let _one_at_a_time = self.reloading.lock().await;
        let mut conn = self.db.pool.acquire().await?;
        let all_orgs = orgs::load_for_proxy(&mut conn, None).await?;
        let all_projects = projects::load_for_proxy(&mut conn, None, None).await?;
        // Room for the keys counted and a few more made meanwhile: the
        // table is not grown (and copied) while it is filled.
        let count = usize::try_from(keys::count_all(&mut conn).await?).unwrap_or(0);
        let mut table = KeyTable::with_capacity(count.saturating_add(count / 64));
        drop(conn);
        keys::each_key_for_proxy(&self.db, |row| table.insert_row(row)).await?;
        let mut org_entries = HashMap::new();
        for o in all_orgs {
            let id = o.id.clone();
            org_entries.insert(id, self.org_entry(o).await?);
        }
        *self.write() = Maps {
            keys: table,
            orgs: org_entries,
            projects: all_projects
                .into_iter()
                .map(|p| (p.id.clone(), project_entry(p)))
                .collect(),
        };
        Ok(())
    }

    /// The server's secret (it seals what only this server may make).
    pub fn secret(&self) -> &SecretString {
        &self.secret
    }

    pub fn key_count(&self) -> usize {
        self.read().keys.len()
    }

    /// Reloads what changed and swaps it in.
    pub async fn apply(&self, change: &Change) -> Result<(), sqlx::Error> {
        let _one_at_a_time = self.reloading.lock().await;
        // An organization made elsewhere (first-run setup, another
        // organization, the CLI) is loaded when something of it changes.
        let org_of = |m: &Maps| match change {
            Change::Key(id) => m.keys.by_id(id).map(|k| k.org_id().to_owned()),
            Change::Project(id) => m.projects.get(id).map(|p| p.project.org_id.clone()),
            Change::Org(_) | Change::OrgAll(_) => None,
        };
        self.apply_inner(change).await?;
        let missing = {
            let m = self.read();
            org_of(&m).filter(|o| !m.orgs.contains_key(o))
        };
        if let Some(org) = missing {
            self.reload_org(&org).await?;
        }
        Ok(())
    }

    async fn apply_inner(&self, change: &Change) -> Result<(), sqlx::Error> {
        match change {
            Change::Key(id) => {
                let mut conn = self.db.pool.acquire().await?;
                let found = staged(&mut conn, Load::One(id)).await?;
                let project = found.by_id(id).map(|k| k.project_id().to_owned());
                let project = match project {
                    Some(p) if !self.read().projects.contains_key(&p) => {
                        projects::load_for_proxy(&mut conn, None, Some(&p)).await?
                    }
                    _ => Vec::new(),
                };
                let mut m = self.write();
                for p in project {
                    m.projects.insert(p.id.clone(), project_entry(p));
                }
                m.keys.remove_id(id);
                m.keys.absorb(found);
            }
            Change::Project(id) => {
                let mut conn = self.db.pool.acquire().await?;
                let found = projects::load_for_proxy(&mut conn, None, Some(id)).await?;
                let keys = staged(&mut conn, Load::Project(id)).await?;
                let mut m = self.write();
                m.projects.remove(id);
                for p in found {
                    m.projects.insert(p.id.clone(), project_entry(p));
                }
                m.keys.remove_where(|k| k.project_id() == id);
                m.keys.absorb(keys);
            }
            Change::Org(id) => self.reload_org(id).await?,
            Change::OrgAll(id) => {
                self.reload_org(id).await?;
                let mut conn = self.db.pool.acquire().await?;
                let found = projects::load_for_proxy(&mut conn, Some(id), None).await?;
                let keys = staged(&mut conn, Load::Org(id)).await?;
                let mut m = self.write();
                m.projects.retain(|_, p| p.project.org_id != *id);
                for p in found {
                    m.projects.insert(p.id.clone(), project_entry(p));
                }
                m.keys.remove_where(|k| k.org_id() == id);
                m.keys.absorb(keys);
            }
        }
        Ok(())
    }

    async fn reload_org(&self, id: &str) -> Result<(), sqlx::Error> {
        let mut conn = self.db.pool.acquire().await?;
        let found = orgs::load_for_proxy(&mut conn, Some(id)).await?;
        drop(conn);
        let entry = match found.into_iter().next() {
            Some(o) => Some(self.org_entry(o).await?),
            None => None,
        };
        let mut m = self.write();
        match entry {
            Some(e) => m.orgs.insert(id.to_owned(), e),
            None => m.orgs.remove(id),
        };
        Ok(())
    }

    /// The caller behind a bearer token: 401 for a token that is not a live
    /// key (the message says which rule: unknown, revoked, expired).
    pub fn authenticate(&self, presented: &str, now: i64) -> Result<Caller, ProxyError> {
        let unknown = || ProxyError::unauthorized("invalid_api_key", "the API key is not valid");
        if token::parse_provisioning(presented).is_some() {
            return Err(ProxyError::forbidden(
                "provisioning_key",
                "provisioning keys cannot call models; use an API key",
            ));
        }
        let parsed = token::parse_any(presented).ok_or_else(unknown)?;
        let (key, project, org) = {
            let m = self.read();
            let key = m.keys.get(&parsed.public_id).ok_or_else(unknown)?;
            let project = m
                .projects
                .get(key.project_id())
                .cloned()
                .ok_or_else(unknown)?;
            let org = m.orgs.get(key.org_id()).cloned().ok_or_else(unknown)?;
            (Arc::new(key.clone()), project, org)
        };
        if !key.secret_matches(&token::secret_digest(parsed.secret), now) {
            return Err(unknown());
        }
        live(key, project, org, now)
    }
}

impl Memory {
    /// The caller behind a key the console vouches for (the playground's,
    /// by id): the same checks as a presented token but its secret.
    pub fn caller_by_key_id(&self, key_id: &str, now: i64) -> Result<Caller, ProxyError> {
        let unknown = || ProxyError::unauthorized("invalid_api_key", "the API key is not valid");
        let (key, project, org) = {
            let m = self.read();
            let key = m.keys.by_id(key_id).ok_or_else(unknown)?;
            let project = m
                .projects
                .get(key.project_id())
                .cloned()
                .ok_or_else(unknown)?;
            let org = m.orgs.get(key.org_id()).cloned().ok_or_else(unknown)?;
            (Arc::new(key.clone()), project, org)
        };
        live(key, project, org, now)
    }
}

/// A key that proved itself, if it is still live: 401 naming why not.
fn live(
    key: Arc<KeyEntry>,
    project: Arc<ProjectEntry>,
    org: Arc<OrgEntry>,
    now: i64,
) -> Result<Caller, ProxyError> {
    if key.revoked_at().is_some() {
        return Err(ProxyError::unauthorized(
            "key_revoked",
            "the API key was revoked",
        ));
    }
    if project.project.blocked_at.is_some() {
        return Err(ProxyError::forbidden(
            "project_blocked",
            "the key's project (team) is blocked",
        ));
    }
    if let Some(at) = key.expires_at().filter(|t| *t <= now) {
        return Err(ProxyError::unauthorized(
            "key_expired",
            format!(
                "the API key expired at {}",
                tollgate_app::format::format_time(at)
            ),
        ));
    }
    Ok(Caller { key, project, org })
}

/// The keys of `which`, read into a table of their own (no lock held
/// while the database answers), to be absorbed into the proxy's.
async fn staged(conn: &mut sqlx::AnyConnection, which: Load<'_>) -> Result<KeyTable, sqlx::Error> {
    let mut table = KeyTable::default();
    keys::each_for_proxy(conn, which, |row| table.insert_row(row)).await?;
    Ok(table)
}

impl Caller {
    /// 403 where the project's IP allowlist does not hold the client
    /// (`None`: its address could not be read), or cannot be read itself.
    pub fn check_ip(&self, ip: Option<IpAddr>) -> Result<(), ProxyError> {
        let p = &self.project;
        if p.unparseable > 0 {
            return Err(ProxyError::forbidden(
                "ip_allowlist_invalid",
                format!(
                    "the project's IP allowlist has {} entries that are not addresses or networks; it allows nobody until they are fixed",
                    p.unparseable
                ),
            ));
        }
        if p.allow.is_empty() {
            return Ok(());
        }
        match ip {
            Some(ip) if p.allow.iter().any(|n| n.contains(&ip)) => Ok(()),
            Some(ip) => Err(ProxyError::forbidden(
                "ip_not_allowed",
                format!("the project's IP allowlist does not include {ip}"),
            )),
            None => Err(ProxyError::forbidden(
                "ip_not_allowed",
                "the client's address in X-Forwarded-For is not an IP address",
            )),
        }
    }

    /// The model or virtual model and where it is served from: allowed for
    /// key ∩ project ∩ organization, else 403 (404 where the organization
    /// has no such model).
    pub fn route(&self, model: &str) -> Result<super::routing::Plan, ProxyError> {
        use super::routing::Plan;
        let route = match self.org.routes.get(model) {
            Some(r) => r,
            None => {
                let v = self
                    .org
                    .virtuals
                    .get(model)
                    .ok_or_else(|| ProxyError::model_not_found(model))?;
                self.allowed(model)?;
                return Ok(Plan::Virtual(v.clone()));
            }
        };
        self.allowed(model)?;
        if route.deployments.is_empty() {
            return Err(ProxyError::unavailable(
                "provider_not_configured",
                format!(
                    "the model '{model}' is served by the provider '{}', which this organization has not configured",
                    route.model.provider
                ),
            ));
        }
        Ok(Plan::Model(route.model.clone(), route.deployments.clone()))
    }

    /// 403 unless the project and the key allow `model`.
    fn allowed(&self, model: &str) -> Result<(), ProxyError> {
        if !self.project.project.caps.models.iter().any(|x| x == model) {
            return Err(ProxyError::forbidden(
                "model_not_allowed",
                format!("the project does not allow the model '{model}'"),
            ));
        }
        if !self.key.allows(model) {
            return Err(ProxyError::forbidden(
                "model_not_allowed",
                format!("this API key does not allow the model '{model}'"),
            ));
        }
        Ok(())
    }

    /// The models and virtual models this key may call, with who serves
    /// them (`tollgate` for a virtual model), for `GET /v1/models`.
    pub fn models(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .key
            .models()
            .iter()
            .filter(|m| self.project.project.caps.models.iter().any(|p| p == &***m))
            .filter_map(|m| match self.org.routes.get(&**m) {
                Some(r) => Some((r.model.id.clone(), r.model.provider.clone())),
                None => self
                    .org
                    .virtuals
                    .get(&**m)
                    .map(|v| (v.id.clone(), "tollgate".to_owned())),
            })
            .collect();
        out.sort();
        out
    }
}
