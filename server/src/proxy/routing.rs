//! Virtual models on the request path: a route resolved at load (targets in
//! region, with configured providers), and per request the order its
//! targets are tried in (by strategy, skipping those cooling down).

use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use tollgate_app::core::catalogue::Model;
use tollgate_app::core::providers::Kind;
use tollgate_app::core::virtual_models::{HealthBoard, Strategy, VirtualModel};

use super::error::ProxyError;
use super::memory::{deployment, Deployment, Providers, Route};

/// A target that can be served: its catalogue model (which prices it) and
/// where, in region.
pub struct Target {
    pub model: Arc<Model>,
    pub deployments: Vec<Deployment>,
    pub weight: u32,
}

pub struct VirtualRoute {
    pub id: String,
    pub strategy: Strategy,
    pub region: String,
    pub targets: Vec<Target>,
    /// Why each target left out is out, for the error when none is left.
    pub left_out: Vec<String>,
    /// Whether a target was left out for its region alone.
    pub region_kept_out: bool,
}

impl VirtualRoute {
    /// Resolves a virtual model against the organization's catalogue routes
    /// and providers: a target is kept where a configured provider in the
    /// region serves it. The built-in mock stands in: a target served only
    /// by it is kept only while no other target can be served.
    pub fn resolve(
        v: VirtualModel,
        routes: &HashMap<String, Route>,
        providers: &Providers,
        board: &HealthBoard,
        org: &str,
    ) -> VirtualRoute {
        let mut targets = Vec::new();
        let mut left_out = Vec::new();
        let mut region_kept_out = false;
        for t in &v.targets {
            let Some(route) = routes.get(&t.model) else {
                left_out.push(format!("'{}' is no longer in the catalogue", t.model));
                continue;
            };
            let m = &route.model;
            let all: Vec<Deployment> = match &t.provider {
                Some(p) => {
                    // That provider's own name for the model where the
                    // catalogue lists one, else the model's.
                    let upstream = m
                        .fallbacks
                        .iter()
                        .filter_map(|f| f.split_once(':'))
                        .find(|(fp, _)| fp.trim() == p)
                        .map_or(m.upstream.as_str(), |(_, u)| u);
                    deployment(providers, board, org, p, upstream)
                        .into_iter()
                        .collect()
                }
                None => route.deployments.to_vec(),
            };
            if all.is_empty() {
                let p = t.provider.as_deref().unwrap_or(&m.provider);
                left_out.push(format!(
                    "'{}' needs the provider '{p}', which is not configured",
                    t.model
                ));
                continue;
            }
            let (inside, outside): (Vec<Deployment>, Vec<Deployment>) = all
                .into_iter()
                .partition(|d| d.provider.provider.serves_region(&v.region));
            if inside.is_empty() {
                region_kept_out = true;
                let wheres: Vec<String> = outside
                    .iter()
                    .map(|d| {
                        let p = &d.provider.provider;
                        match p.region.as_str() {
                            "" => format!("'{}' (region unstated)", p.name),
                            r => format!("'{}' ({r})", p.name),
                        }
                    })
                    .collect();
                left_out.push(format!(
                    "'{}' is served by {}, outside the region '{}'",
                    t.model,
                    wheres.join(", "),
                    v.region
                ));
                continue;
            }
            targets.push(Target {
                model: m.clone(),
                deployments: inside,
                weight: t.weight.max(1),
            });
        }
        let mock_only = |t: &Target| {
            t.deployments
                .iter()
                .all(|d| d.provider.provider.kind == Kind::Mock)
        };
        // The mock stands in only where nothing else was configured: not
        // where a configured target is out of the region (that is a 503 the
        // owner must see, not an echo).
        if region_kept_out || targets.iter().any(|t| !mock_only(t)) {
            targets.retain(|t| !mock_only(t));
        }
        VirtualRoute {
            id: v.id,
            strategy: v.strategy,
            region: v.region,
            targets,
            left_out,
            region_kept_out,
        }
    }
}

/// What a request's model resolved to.
pub enum Plan {
    /// A catalogue model and its deployments, in order.
    Model(Arc<Model>, Arc<[Deployment]>),
    Virtual(Arc<VirtualRoute>),
}

/// One try: the model that prices it and where it is sent.
pub struct Attempt<'a> {
    pub model: &'a Arc<Model>,
    pub deployment: &'a Deployment,
}

impl Plan {
    /// The virtual model's id, where one was asked for.
    pub fn virtual_id(&self) -> Option<&str> {
        match self {
            Plan::Model(..) => None,
            Plan::Virtual(v) => Some(&v.id),
        }
    }

    /// The largest context window that may serve (bounds `max_tokens`);
    /// unbounded where nothing serves (`attempts` then says why).
    pub fn context_window(&self) -> i64 {
        match self {
            Plan::Model(m, _) => m.context_window,
            Plan::Virtual(v) => v
                .targets
                .iter()
                .map(|t| t.model.context_window)
                .max()
                .unwrap_or(i64::MAX),
        }
    }

    /// The attempts in the order they are made. A catalogue model's
    /// deployments go in order; a virtual model's targets by its strategy,
    /// without those cooling down. 503 naming why when none is left.
    pub fn attempts(
        &self,
        now: i64,
        prompt: i64,
        max_out: i64,
    ) -> Result<Vec<Attempt<'_>>, ProxyError> {
        let v = match self {
            Plan::Model(model, deployments) => {
                return Ok(deployments
                    .iter()
                    .map(|deployment| Attempt { model, deployment })
                    .collect())
            }
            Plan::Virtual(v) => v,
        };
        if v.targets.is_empty() {
            let (code, why) = if v.region_kept_out {
                (
                    "region_unavailable",
                    format!(
                        "no target of '{}' is served in the region '{}'",
                        v.id, v.region
                    ),
                )
            } else {
                (
                    "provider_not_configured",
                    format!("no target of '{}' can be served", v.id),
                )
            };
            return Err(ProxyError::unavailable(
                code,
                format!("{why}: {}", v.left_out.join("; ")),
            ));
        }
        let usable = |t: &Target| t.deployments.iter().any(|d| d.health.available(now));
        let mut order: Vec<&Target> = v.targets.iter().filter(|t| usable(t)).collect();
        if order.is_empty() {
            return Err(ProxyError::unavailable(
                "targets_cooling_down",
                format!(
                    "every target of '{}' failed repeatedly and is cooling down; try again shortly",
                    v.id
                ),
            ));
        }
        let needs = prompt.saturating_add(max_out);
        match v.strategy {
            Strategy::Fallback => {}
            Strategy::Weighted => {
                let total: u64 = order.iter().map(|t| u64::from(t.weight)).sum();
                let mut pick = rand::thread_rng().gen_range(0..total.max(1));
                let first = order
                    .iter()
                    .position(|t| {
                        let w = u64::from(t.weight);
                        if pick < w {
                            return true;
                        }
                        pick -= w;
                        false
                    })
                    .unwrap_or(0);
                let chosen = order.remove(first);
                order.insert(0, chosen);
            }
            Strategy::Latency => {
                // Unmeasured (0) first: a target is measured before it is judged.
                let latency = |t: &Target| {
                    t.deployments
                        .iter()
                        .filter(|d| d.health.available(now))
                        .map(|d| d.health.latency_us())
                        .min()
                        .unwrap_or(u64::MAX)
                };
                order.sort_by_key(|t| latency(t));
            }
            Strategy::Cost => {
                order.sort_by_key(|t| {
                    (
                        t.model.context_window < needs,
                        super::cost(&t.model, prompt, max_out),
                    )
                });
            }
        }
        // Whatever the strategy, a target whose context window the request
        // does not fit goes last (stable: the strategy's order otherwise).
        order.sort_by_key(|t| t.model.context_window < needs);
        Ok(order
            .into_iter()
            .flat_map(|t| {
                t.deployments
                    .iter()
                    .filter(move |d| d.health.available(now))
                    .map(move |deployment| Attempt {
                        model: &t.model,
                        deployment,
                    })
            })
            .collect())
    }
}
