//! The memory views the hot path answers from: users (active flag and effective
//! roles), ended sessions, and the role catalog. Written by the change feed and by
//! the replica's own writes; read lock-free-ish (sharded maps, `ArcSwap`) by every
//! ValidateToken and CheckRole call.

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use arc_swap::ArcSwap;
use dashmap::DashMap;

use super::roles::{RoleCatalog, RoleList};
use crate::store::UserWithRoles;

/// What the hot path needs to know about a user.
#[derive(Debug)]
pub struct UserEntry {
    pub username: String,
    pub active: bool,
    pub effective_roles: RoleList,
}

#[derive(Default)]
pub struct Views {
    catalog: ArcSwap<RoleCatalog>,
    users: DashMap<String, Arc<UserEntry>>,
    /// session id → when it ended (Unix ms).
    ended_sessions: DashMap<String, i64>,
    /// When the views were last confirmed against the database (Unix ms).
    synced_at_ms: AtomicI64,
}

impl Views {
    pub fn catalog(&self) -> Arc<RoleCatalog> {
        self.catalog.load_full()
    }

    pub fn set_catalog(&self, catalog: RoleCatalog) {
        self.catalog.store(Arc::new(catalog));
    }

    pub fn user(&self, id: &str) -> Option<Arc<UserEntry>> {
        self.users.get(id).map(|entry| entry.value().clone())
    }

    pub fn put_user(&self, row: &UserWithRoles) {
        let entry = UserEntry {
            username: row.user.username.clone(),
            active: row.user.active,
            effective_roles: self.catalog.load().effective(&row.roles),
        };
        self.users.insert(row.user.id.clone(), Arc::new(entry));
    }

    pub fn remove_user(&self, id: &str) {
        self.users.remove(id);
    }

    pub fn replace_users(&self, rows: &[UserWithRoles]) {
        let ids: std::collections::HashSet<&str> =
            rows.iter().map(|r| r.user.id.as_str()).collect();
        self.users.retain(|id, _| ids.contains(id.as_str()));
        for row in rows {
            self.put_user(row);
        }
    }

    pub fn session_ended(&self, session_id: &str) -> bool {
        self.ended_sessions.contains_key(session_id)
    }

    pub fn end_session(&self, session_id: String, ended_at_ms: i64) {
        self.ended_sessions.insert(session_id, ended_at_ms);
    }

    /// Forgets sessions that ended before `before_ms`: no token of theirs can still
    /// be unexpired.
    pub fn prune_ended_sessions(&self, before_ms: i64) {
        self.ended_sessions
            .retain(|_, ended_at| *ended_at >= before_ms);
    }

    pub fn ended_session_count(&self) -> usize {
        self.ended_sessions.len()
    }

    pub fn mark_synced(&self, now_ms: i64) {
        self.synced_at_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn synced_at_ms(&self) -> i64 {
        self.synced_at_ms.load(Ordering::Relaxed)
    }
}
