//! What every slow-path capability shares: the store, the hot path it keeps
//! informed, the password hasher, the audit trail, the settings and the clock.
//! Private to the domain: the transport sees only the capabilities.

use super::{audit::Audit, hot::HotPath, passwords::PasswordHasher, AuthSettings};
use crate::{clock::Clock, store::Store};

pub(super) struct Context {
    pub store: Store,
    pub hot: HotPath,
    pub hasher: PasswordHasher,
    pub audit: Audit,
    pub settings: AuthSettings,
    pub clock: Clock,
}

impl Context {
    pub fn new(
        store: Store,
        hot: HotPath,
        hasher: PasswordHasher,
        settings: AuthSettings,
        clock: Clock,
    ) -> Self {
        Context {
            audit: Audit::new(store.clone(), clock.clone()),
            store,
            hot,
            hasher,
            settings,
            clock,
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}
