//! The one clock the server reads. Production uses the system clock; tests build a
//! manual clock and move it, instead of sleeping until tokens, sessions or keys
//! expire. Every stored time is Unix milliseconds, so that is the unit here.
//!
//! Nothing else in `src/` reads the wall clock: the domain and the hot path take a
//! [`Clock`] (or a `now_ms` derived from one).

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

/// A source of "now" in Unix milliseconds. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// `None`: the system clock. `Some`: a manual clock, moved only by [`Clock::advance`].
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Clock { manual: None }
    }

    /// A clock that starts at the system's now and moves only when told to.
    pub fn manual() -> Self {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(system_now_ms()))),
        }
    }

    /// Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            None => system_now_ms(),
            Some(now) => now.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock forward; a system clock cannot be moved (no-op).
    pub fn advance(&self, by: Duration) {
        if let Some(now) = &self.manual {
            let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
            now.fetch_add(by, Ordering::Relaxed);
        }
    }
}

fn system_now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual();
        let start = clock.now_ms();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now_ms(), start);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now_ms(), start + 1500);
        // Clones share the same time.
        let other = clock.clone();
        other.advance(Duration::from_secs(1));
        assert_eq!(clock.now_ms(), start + 2500);
    }

    #[test]
    fn the_system_clock_follows_the_wall() {
        let clock = Clock::system();
        let before = system_now_ms();
        let now = clock.now_ms();
        assert!(now >= before && now - before < 1000);
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now_ms() - before < 1000);
    }
}
