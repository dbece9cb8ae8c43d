//! Failed-login throttling: whose counter an attempt counts against, the lockout
//! policy (pure, property-tested here), and the per-account turn that lets one
//! password check per account run at a time on this replica.
//!
//! Why a turn: the count is read before the hash and written after it, so a burst
//! of guesses all read the same count and were all checked (199 of 200, limit 10).
//! Holding the account's turn from reading the count to recording the outcome makes
//! the checks of one account sequential here: at most `max_failures` are checked
//! before the lock, and each other replica sharing the database can add at most the
//! one check it has in flight. Callers that would wait behind `max_failures` others
//! are refused at once: they could be checked only if every one before them
//! succeeded, and waiting must not grow without bound.
//!
//! Growth: the first lockout lasts `AUTHD_LOGIN_LOCKOUT` (API.md); each one that
//! follows without a successful login between them lasts twice as long as the one
//! before, up to 8 times the setting. A lockout's length of quiet after it ends
//! (no failure) forgets the growth; a successful login forgets everything.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::OwnedMutexGuard;

use crate::store::LoginFailures;

/// At most this many doublings: a lockout lasts at most 8 × `AUTHD_LOGIN_LOCKOUT`.
const MAX_DOUBLINGS: u32 = 3;

/// Whose counter an attempt counts against. An account's, keyed by its id, when the
/// login names one (its username and email share it); else the login name's (in
/// the canonical lower-case form), so unknown names are throttled alike and
/// throttling reveals nothing. An unknown login spelled like an account's id shares
/// that account's counter, which gives nobody more than the account's username does.
#[derive(Clone, Copy, Debug)]
pub(super) enum Counter<'a> {
    Account(&'a str),
    UnknownLogin(&'a str),
}

impl Counter<'_> {
    pub fn key(&self) -> &str {
        match self {
            Counter::Account(id) => id,
            Counter::UnknownLogin(login_lc) => login_lc,
        }
    }

    /// The account concerned, for the audit trail.
    pub fn account(&self) -> Option<&str> {
        match self {
            Counter::Account(id) => Some(id),
            Counter::UnknownLogin(_) => None,
        }
    }
}

/// `AUTHD_LOGIN_MAX_FAILURES` and `AUTHD_LOGIN_LOCKOUT`, and what follows from them.
#[derive(Clone, Copy, Debug)]
pub(super) struct LockoutPolicy {
    pub max_failures: u32,
    pub lockout_ms: i64,
}

impl LockoutPolicy {
    /// Until when the counter refuses every login, if it does at `now_ms`.
    pub fn locked_until(&self, failures: &LoginFailures, now_ms: i64) -> Option<i64> {
        failures.locked_until.filter(|until| *until > now_ms)
    }

    /// How long lockout number `n` (from 0) of a row lasts.
    pub fn lock_ms(&self, n: u32) -> i64 {
        self.lockout_ms.saturating_mul(1 << n.min(MAX_DOUBLINGS))
    }

    /// The counter after one more failed check at `now_ms`. A counter locked at
    /// `now_ms` stays as it is (another replica locked it while this check ran).
    pub fn after_failure(&self, current: LoginFailures, now_ms: i64) -> LoginFailures {
        if self.locked_until(&current, now_ms).is_some() {
            return current;
        }
        let lockouts = match current.locked_until {
            Some(until)
                if current.lockouts > 0
                    && now_ms.saturating_sub(until) >= self.lock_ms(current.lockouts - 1) =>
            {
                0
            }
            _ => current.lockouts,
        };
        let failures = current.failures.saturating_add(1);
        if failures >= self.max_failures {
            LoginFailures {
                failures: 0,
                locked_until: Some(now_ms.saturating_add(self.lock_ms(lockouts))),
                lockouts: lockouts.saturating_add(1),
                ..current
            }
        } else {
            LoginFailures {
                failures,
                lockouts,
                ..current
            }
        }
    }
}

/// One turn per account at a time on this replica; see the module docs.
#[derive(Clone, Default)]
pub(super) struct Turns {
    accounts: Arc<Mutex<HashMap<String, Line>>>,
}

/// The callers holding or waiting for one account's turn.
struct Line {
    turn: Arc<tokio::sync::Mutex<()>>,
    callers: usize,
}

/// An account's turn, held until dropped.
pub(super) struct Turn {
    _turn: OwnedMutexGuard<()>,
    _place: Place,
}

/// A caller's place in a line; dropping it leaves the line (a caller that goes
/// away while waiting gives its place back).
struct Place {
    key: String,
    accounts: Arc<Mutex<HashMap<String, Line>>>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(line) = accounts.get_mut(&self.key) {
            line.callers -= 1;
            if line.callers == 0 {
                accounts.remove(&self.key);
            }
        }
    }
}

impl Turns {
    /// Waits for `key`'s turn, first come first served; `None` at once when
    /// `max_waiting` callers already wait behind the one holding it.
    pub async fn take(&self, key: &str, max_waiting: usize) -> Option<Turn> {
        let (turn, place) = {
            let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
            let line = accounts.entry(key.to_owned()).or_insert_with(|| Line {
                turn: Arc::default(),
                callers: 0,
            });
            if line.callers > max_waiting {
                return None;
            }
            line.callers += 1;
            let place = Place {
                key: key.to_owned(),
                accounts: self.accounts.clone(),
            };
            (line.turn.clone(), place)
        };
        Some(Turn {
            _turn: turn.lock_owned().await,
            _place: place,
        })
    }

    /// Accounts with a caller holding or waiting for their turn.
    #[cfg(test)]
    fn lines(&self) -> usize {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MINUTE: i64 = 60_000;

    fn policy(max_failures: u32) -> LockoutPolicy {
        LockoutPolicy {
            max_failures,
            lockout_ms: 5 * MINUTE,
        }
    }

    /// Fails until locked, from `now`; answers the lock's length and the counter.
    fn lock(policy: &LockoutPolicy, mut failures: LoginFailures, now: i64) -> (i64, LoginFailures) {
        for _ in 0..policy.max_failures {
            assert_eq!(policy.locked_until(&failures, now), None);
            failures = policy.after_failure(failures, now);
        }
        let until = policy.locked_until(&failures, now).expect("locked");
        (until - now, failures)
    }

    #[test]
    fn the_first_lockout_is_the_setting_and_repeated_ones_double_up_to_eight_times() {
        let p = policy(10);
        let mut now = 0;
        let mut lengths = Vec::new();
        let mut failures = LoginFailures::default();
        for _ in 0..6 {
            let (length, next) = lock(&p, failures, now);
            lengths.push(length / MINUTE);
            failures = next;
            now += length + 1;
        }
        assert_eq!(lengths, [5, 10, 20, 40, 40, 40]);
        // Quiet for the last lockout's length after it ends: back to the first length.
        now += 40 * MINUTE;
        assert_eq!(lock(&p, failures, now).0, 5 * MINUTE);
    }

    #[test]
    fn a_locked_counter_is_left_as_it_is() {
        let p = policy(3);
        let (_, locked) = lock(&p, LoginFailures::default(), 0);
        assert_eq!(p.after_failure(locked, 1), locked);
    }

    proptest! {
        #[test]
        fn no_counter_locks_before_max_failures_and_every_one_locks_at_it(
            max in 1u32..20,
            gaps in prop::collection::vec(0i64..3 * 60 * MINUTE, 0..60),
        ) {
            // Any history of failures, spaced by `gaps`, then a fresh streak.
            let p = policy(max);
            let mut now = 0;
            let mut failures = LoginFailures::default();
            for gap in gaps {
                now += gap;
                if p.locked_until(&failures, now).is_none() {
                    failures = p.after_failure(failures, now);
                }
                if let Some(until) = failures.locked_until {
                    let length = until - now;
                    prop_assert!(length <= 8 * p.lockout_ms);
                }
            }
            now += 9 * p.lockout_ms;
            let mut streak = 0;
            while p.locked_until(&failures, now).is_none() {
                failures = p.after_failure(failures, now);
                streak += 1;
                prop_assert!(streak <= max, "{streak} failures without a lock");
            }
            let length = failures.locked_until.expect("locked") - now;
            prop_assert!((p.lockout_ms..=8 * p.lockout_ms).contains(&length));
        }
    }

    #[tokio::test]
    async fn turns_are_one_at_a_time_and_the_line_is_bounded() {
        let turns = Turns::default();
        let first = turns.take("alice", 2).await.expect("first");
        // Another account is not held up.
        let other = turns.take("bob", 2).await.expect("bob");
        drop(other);
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let turns = turns.clone();
                tokio::spawn(async move { turns.take("alice", 2).await.is_some() })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(waiting.iter().all(|w| !w.is_finished()), "they wait");
        assert!(
            turns.take("alice", 2).await.is_none(),
            "a third waiter is refused"
        );
        drop(first);
        for w in waiting {
            assert!(w.await.expect("join"));
        }
        assert_eq!(turns.lines(), 0, "lines are forgotten when empty");
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_while_waiting_leaves_the_line() {
        let turns = Turns::default();
        let held = turns.take("alice", 1).await.expect("first");
        let waiter = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.take("alice", 1).await.is_some() })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waiter.abort();
        assert!(waiter.await.expect_err("aborted").is_cancelled());
        // Its place is free again: one more may wait.
        let again = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.take("alice", 1).await.is_some() })
        };
        drop(held);
        assert!(again.await.expect("join"));
        assert_eq!(turns.lines(), 0);
    }
}
