//! What the revocation stream has told this process: ended sessions, per-user
//! marks (deactivated, erased, roles changed), changed roles and revoked API keys,
//! each with when it happened, and an epoch that moves with every change so a
//! cached decision is judged again only after something happened.
//!
//! Entries are forgotten once no token they could concern can still be valid
//! (older than the longest token life this process accepts locally).

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use crate::{identity::ADMIN_ROLE, pb::revocation_event::Kind};

/// How far apart a revocation and a token's issue time must be for the order of
/// the two to be sure: `iat` is in whole seconds, clocks of replicas differ a
/// little, and a role change takes up to 2 s to reach every replica's signer.
pub const AMBIGUITY_MS: i64 = 3_000;

#[derive(Clone, Copy, Debug, Default)]
struct UserMarks {
    disabled_at: Option<i64>,
    deleted_at: Option<i64>,
    roles_changed_at: Option<i64>,
}

impl UserMarks {
    fn latest(&self) -> i64 {
        [self.disabled_at, self.deleted_at, self.roles_changed_at]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(i64::MIN)
    }
}

/// What a cached decision needs re-judged: whose it is and as of when its
/// knowledge holds (a token's issue time, or when authd answered for it).
#[derive(Debug)]
pub struct Facts {
    pub subject: String,
    /// `None` for an API key.
    pub session_id: Option<String>,
    pub roles: Vec<String>,
    pub as_of_ms: i64,
}

/// The outcome of judging a decision against what the stream has said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Nothing since concerns it.
    Stands,
    /// It is dead: its session ended, its user is gone or was deactivated after.
    Refused,
    /// Something changed that only authd can weigh (roles, an ambiguous order).
    AskAuthd,
}

#[derive(Default)]
pub struct Revocations {
    epoch: AtomicU64,
    ended_sessions: DashMap<String, i64>,
    users: DashMap<String, UserMarks>,
    roles: DashMap<String, i64>,
    api_keys: DashMap<String, i64>,
}

impl Revocations {
    /// Moves with every change applied.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Applies one event (the kinds the caller handles itself are ignored).
    pub fn apply(&self, kind: Kind, subject: &str, at_ms: i64) {
        let later = |slot: &mut Option<i64>| *slot = Some(slot.map_or(at_ms, |t| t.max(at_ms)));
        match kind {
            Kind::SessionEnded => {
                self.ended_sessions.insert(subject.to_owned(), at_ms);
            }
            Kind::UserDisabled => later(
                &mut self
                    .users
                    .entry(subject.to_owned())
                    .or_default()
                    .disabled_at,
            ),
            Kind::UserDeleted => {
                later(&mut self.users.entry(subject.to_owned()).or_default().deleted_at)
            }
            Kind::UserRolesChanged => later(
                &mut self
                    .users
                    .entry(subject.to_owned())
                    .or_default()
                    .roles_changed_at,
            ),
            Kind::RoleChanged => {
                let mut at = self.roles.entry(subject.to_owned()).or_insert(at_ms);
                *at = (*at).max(at_ms);
            }
            Kind::ApiKeyRevoked => {
                self.api_keys.insert(subject.to_owned(), at_ms);
            }
            Kind::SigningKeysChanged | Kind::SnapshotComplete | Kind::Unspecified => return,
        }
        self.bump();
    }

    /// Makes every cached decision be judged again.
    pub fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Forgets everything (the stream starts over with a snapshot).
    pub fn clear(&self) {
        self.ended_sessions.clear();
        self.users.clear();
        self.roles.clear();
        self.api_keys.clear();
        self.bump();
    }

    /// Forgets entries older than `before_ms`: no token they concern is still
    /// accepted locally.
    pub fn forget_before(&self, before_ms: i64) {
        self.ended_sessions.retain(|_, at| *at >= before_ms);
        self.users.retain(|_, marks| marks.latest() >= before_ms);
        self.roles.retain(|_, at| *at >= before_ms);
        self.api_keys.retain(|_, at| *at >= before_ms);
    }

    pub fn judge(&self, facts: &Facts) -> Judgement {
        let since = facts.as_of_ms - AMBIGUITY_MS;
        let Some(session) = &facts.session_id else {
            // An API key: revoked, or a role it holds changed.
            if self.api_keys.contains_key(&facts.subject) {
                return Judgement::Refused;
            }
            return self.roles_judgement(facts, since);
        };
        if self.ended_sessions.contains_key(session) {
            return Judgement::Refused;
        }
        if let Some(marks) = self.users.get(&facts.subject).map(|m| *m) {
            if marks.deleted_at.is_some() {
                return Judgement::Refused;
            }
            if let Some(disabled) = marks.disabled_at {
                if disabled > facts.as_of_ms + AMBIGUITY_MS {
                    return Judgement::Refused;
                }
                if disabled >= since {
                    return Judgement::AskAuthd;
                }
            }
            if marks.roles_changed_at.is_some_and(|at| at >= since) {
                return Judgement::AskAuthd;
            }
        }
        self.roles_judgement(facts, since)
    }

    /// A role's definition (its includes or permissions) changes the effective
    /// roles and permissions of exactly those whose effective roles contain it, and
    /// `facts.roles` are effective roles (the token's claim or authd's answer): a
    /// change anywhere below a held role names a held role. Holders of `admin` are
    /// shown every permission any role names, so any role's change concerns them.
    fn roles_judgement(&self, facts: &Facts, since: i64) -> Judgement {
        let recent = |at: &i64| *at >= since;
        let changed = if facts.roles.iter().any(|role| role == ADMIN_ROLE) {
            self.roles.iter().any(|entry| recent(entry.value()))
        } else {
            facts
                .roles
                .iter()
                .any(|role| self.roles.get(role).is_some_and(|at| recent(at.value())))
        };
        if changed {
            Judgement::AskAuthd
        } else {
            Judgement::Stands
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(as_of_ms: i64) -> Facts {
        Facts {
            subject: "u".into(),
            session_id: Some("s".into()),
            roles: vec!["user".into()],
            as_of_ms,
        }
    }

    #[test]
    fn an_ended_session_and_an_erased_user_refuse_whenever_they_happened() {
        let state = Revocations::default();
        state.apply(Kind::SessionEnded, "s", 0);
        assert_eq!(state.judge(&token(1_000_000)), Judgement::Refused);
        let state = Revocations::default();
        state.apply(Kind::UserDeleted, "u", 0);
        assert_eq!(state.judge(&token(1_000_000)), Judgement::Refused);
    }

    #[test]
    fn a_deactivation_refuses_tokens_issued_before_it_and_doubts_those_near_it() {
        let state = Revocations::default();
        state.apply(Kind::UserDisabled, "u", 100_000);
        assert_eq!(state.judge(&token(90_000)), Judgement::Refused);
        assert_eq!(state.judge(&token(99_000)), Judgement::AskAuthd);
        assert_eq!(state.judge(&token(110_000)), Judgement::Stands);
    }

    #[test]
    fn role_changes_send_older_tokens_to_authd() {
        let state = Revocations::default();
        let epoch = state.epoch();
        state.apply(Kind::UserRolesChanged, "u", 100_000);
        assert!(state.epoch() > epoch);
        assert_eq!(state.judge(&token(90_000)), Judgement::AskAuthd);
        assert_eq!(state.judge(&token(110_000)), Judgement::Stands);
        state.apply(Kind::RoleChanged, "user", 200_000);
        assert_eq!(state.judge(&token(110_000)), Judgement::AskAuthd);
        let other_role = Facts {
            roles: vec!["viewer".into()],
            ..token(110_000)
        };
        assert_eq!(state.judge(&other_role), Judgement::Stands);
    }

    #[test]
    fn a_change_below_a_held_role_names_a_held_role() {
        // Effective roles of a `support` holder, `support` including `user`.
        let holder = Facts {
            roles: vec!["viewer".into(), "user".into(), "support".into()],
            ..token(110_000)
        };
        let state = Revocations::default();
        state.apply(Kind::RoleChanged, "billing", 200_000);
        assert_eq!(state.judge(&holder), Judgement::Stands, "not held");
        state.apply(Kind::RoleChanged, "viewer", 200_000);
        assert_eq!(
            state.judge(&holder),
            Judgement::AskAuthd,
            "held through user"
        );
    }

    #[test]
    fn any_role_change_concerns_an_admin() {
        let admin = Facts {
            roles: vec!["user".into(), "admin".into()],
            ..token(110_000)
        };
        let state = Revocations::default();
        state.apply(Kind::RoleChanged, "billing", 200_000);
        assert_eq!(state.judge(&admin), Judgement::AskAuthd);
        assert_eq!(state.judge(&token(110_000)), Judgement::Stands);
    }

    #[test]
    fn a_revoked_key_refuses_and_old_entries_are_forgotten() {
        let state = Revocations::default();
        let key = Facts {
            subject: "k".into(),
            session_id: None,
            roles: vec![],
            as_of_ms: 0,
        };
        state.apply(Kind::ApiKeyRevoked, "k", 50);
        assert_eq!(state.judge(&key), Judgement::Refused);
        state.forget_before(100);
        assert_eq!(state.judge(&key), Judgement::Stands);
    }
}
