//! Decisions already made, by token: a hit costs one hash lookup (the token's own
//! bytes, compared whole) and, only after the revocation stream said something
//! new, one judgement against it.

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc,
};

use crate::{
    identity::Identity,
    keys::expired,
    revocations::{Facts, Judgement, Revocations},
};

/// One decision about one token.
pub struct Decision {
    pub identity: Arc<Identity>,
    facts: Facts,
    /// Unix seconds; `None` for a key without expiry.
    expires_at: Option<i64>,
    /// The kid that signed the token, for a token verified here.
    pub kid: Option<Arc<str>>,
    /// The revocation epoch it was last judged at.
    judged_at: AtomicU64,
    refused: AtomicBool,
}

/// What a cached decision says now.
#[derive(Clone, Debug)]
pub enum Verdict {
    Accept(Arc<Identity>),
    Refuse,
    /// Only authd can say (something changed that this process cannot weigh).
    AskAuthd,
}

impl Decision {
    pub fn accepted(
        identity: Arc<Identity>,
        facts: Facts,
        kid: Option<Arc<str>>,
        epoch: u64,
    ) -> Decision {
        Decision {
            expires_at: identity.expires_at,
            identity,
            facts,
            kid,
            judged_at: AtomicU64::new(epoch),
            refused: AtomicBool::new(false),
        }
    }

    pub fn refused(identity: Arc<Identity>, facts: Facts) -> Decision {
        let decision = Decision::accepted(identity, facts, None, 0);
        decision.refuse();
        decision
    }

    /// From now on it refuses.
    pub fn refuse(&self) {
        self.refused.store(true, Ordering::Relaxed);
    }

    /// The decision as of now. `key_known` says whether its kid is still published.
    pub fn verdict(
        &self,
        now_ms: i64,
        revocations: &Revocations,
        key_known: impl Fn(&str) -> bool,
    ) -> Verdict {
        if self.refused.load(Ordering::Relaxed)
            || self.expires_at.is_some_and(|exp| expired(exp, now_ms))
        {
            return Verdict::Refuse;
        }
        // Read before judging: an event applied meanwhile moves it again, and the
        // next call judges once more.
        let epoch = revocations.epoch();
        if self.judged_at.load(Ordering::Acquire) == epoch {
            return Verdict::Accept(self.identity.clone());
        }
        if self.kid.as_deref().is_some_and(|kid| !key_known(kid)) {
            return Verdict::AskAuthd;
        }
        match revocations.judge(&self.facts) {
            Judgement::Stands => {
                self.judged_at.store(epoch, Ordering::Release);
                Verdict::Accept(self.identity.clone())
            }
            Judgement::Refused => {
                self.refused.store(true, Ordering::Relaxed);
                Verdict::Refuse
            }
            Judgement::AskAuthd => Verdict::AskAuthd,
        }
    }

    /// Judged now, as a new decision is before it is cached.
    pub fn judge_now(&self, revocations: &Revocations) -> Judgement {
        revocations.judge(&self.facts)
    }
}

/// Decisions by token string.
pub struct Decisions {
    cache: quick_cache::sync::Cache<String, Arc<Decision>>,
}

impl Decisions {
    pub fn new(capacity: usize) -> Self {
        Decisions {
            cache: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    pub fn get(&self, token: &str) -> Option<Arc<Decision>> {
        self.cache.get(token)
    }

    pub fn put(&self, token: &str, decision: Decision) {
        self.cache.insert(token.to_owned(), Arc::new(decision));
    }

    pub fn remove(&self, token: &str) {
        self.cache.remove(token);
    }

    pub fn clear(&self) {
        self.cache.clear();
    }
}
