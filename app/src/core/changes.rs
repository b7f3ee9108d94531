//! Change events: every write the proxy must see (keys, projects, an
//! organization's settings, catalogue or providers) is published after commit.
//! Listeners apply it before `publish` returns, so the next request sees it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

/// What changed, by id; listeners reload it from the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// One key: created, edited, revoked, rotated.
    Key(String),
    /// A project's settings and every key in it (deleted projects too).
    Project(String),
    /// An organization's own settings, catalogue and providers.
    Org(String),
    /// Everything of an organization (a member removed: their keys revoked).
    OrgAll(String),
}

pub type Applied<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub trait Listener: Send + Sync {
    fn apply(&self, change: Change) -> Applied<'_>;
}

#[derive(Clone, Default)]
pub struct Changes {
    listeners: Arc<RwLock<Vec<Arc<dyn Listener>>>>,
}

impl Changes {
    pub fn subscribe(&self, listener: Arc<dyn Listener>) {
        if let Ok(mut l) = self.listeners.write() {
            l.push(listener);
        }
    }

    /// Call after the write committed; returns once every listener applied it.
    pub async fn publish(&self, change: Change) {
        let listeners: Vec<Arc<dyn Listener>> = match self.listeners.read() {
            Ok(l) => l.clone(),
            Err(_) => return,
        };
        for l in listeners {
            l.apply(change.clone()).await;
        }
    }
}
