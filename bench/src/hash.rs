//! The `hash` scenario: the server's own `PasswordHasher`, built with the server's
//! default argon2id parameters and pool size, verifying a password in-process as
//! fast as the pool allows. No RPC, no database: the ceiling for `login`.
//!
//! It runs in a thread pinned to the server's CPUs, and everything it starts (its
//! runtime, the hasher's worker threads) inherits that mask, so the ceiling is
//! measured on the cores the server hashes on.

use std::{future::Future, sync::Arc};

use anyhow::Context as _;
use authd::{
    config::ServeConfig,
    domain::{
        passwords::{HashSettings, PasswordHasher},
        secrets::Password,
    },
};

use crate::{
    affinity::pin_current_thread,
    fixtures::PASSWORD,
    load::{closed_loop, Caller, Recorded, Window},
};

/// The server's defaults (flags and `AUTHD_*` variables as `authd serve` reads
/// them), with the pool sized for the server's CPUs.
pub fn server_settings(workers: usize) -> anyhow::Result<HashSettings> {
    let defaults = ServeConfig::try_from_defaults("sqlite::memory:")
        .map_err(|e| anyhow::anyhow!("the AUTHD_* hashing settings: {e}"))?;
    Ok(HashSettings {
        workers,
        ..defaults.hashing.settings()
    })
}

struct Verify {
    hasher: Arc<PasswordHasher>,
    stored: Arc<str>,
}

impl Caller for Verify {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        let (hasher, stored) = (self.hasher.clone(), self.stored.to_string());
        async move {
            match hasher
                .verify(Password::new(PASSWORD.to_owned()), Some(stored))
                .await
            {
                Ok(v) if v.matches => Ok(()),
                Ok(_) => Err("NO_MATCH".into()),
                Err(e) => Err(format!("{e:?}")),
            }
        }
    }
}

/// Verifies with `concurrency` callers for the window, on a runtime of its own in a
/// thread pinned to `cpus`: the runtime's threads and the hasher's worker threads are
/// started from it, so they inherit the mask.
pub fn run(
    settings: &HashSettings,
    cpus: Option<Vec<usize>>,
    concurrency: usize,
    window: Window,
) -> anyhow::Result<Recorded> {
    let settings = settings.clone();
    std::thread::Builder::new()
        .name("authd-bench-hash".into())
        .spawn(move || {
            if let Some(cpus) = &cpus {
                pin_current_thread(cpus)?;
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .context("starting the hashing runtime")?;
            runtime.block_on(verify_for(settings, concurrency, window))
        })
        .context("starting the hashing thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("the hashing thread panicked"))?
}

async fn verify_for(
    settings: HashSettings,
    concurrency: usize,
    window: Window,
) -> anyhow::Result<Recorded> {
    let hasher = Arc::new(PasswordHasher::new(&settings)?);
    let stored: Arc<str> = hasher
        .hash(Password::new(PASSWORD.to_owned()))
        .await
        .map_err(|e| anyhow::anyhow!("hashing: {e:?}"))?
        .into();
    let callers = (0..concurrency)
        .map(|_| Verify {
            hasher: hasher.clone(),
            stored: stored.clone(),
        })
        .collect();
    Ok(closed_loop(callers, window).await)
}
