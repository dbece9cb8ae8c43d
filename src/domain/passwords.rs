//! Password hashing with argon2id on a bounded pool off the async runtime.
//!
//! A hash costs ~20 ms of CPU and ~19 MiB, so at most one runs per worker (sized to
//! the cores) and at most `queue` more wait; past that callers are refused at once
//! rather than piling up memory. The workers are a fixed set of threads, each with
//! its own argon2 memory kept from one hash to the next: at most one 19 MiB block
//! per worker, however long a login flood lasts (on the blocking pool, every new
//! thread's malloc arena kept its own 19 MiB: 466 MiB RSS measured after a flood).
//! They also run at the lowest scheduling priority, so a login storm yields the CPU
//! to ValidateToken and CheckRole instead of queueing them behind hashes. A caller
//! that goes away while waiting leaves the queue without hashing. An unknown
//! username is verified against a dummy hash with the same parameters, so the two
//! failures cost the same.

use std::{
    cell::RefCell,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use argon2::{
    password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, Salt, SaltString},
    Algorithm, Argon2, Block, Params, Version,
};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::{
    error::{DomainError, DomainResult},
    secrets::Password,
};
use crate::store::NO_PASSWORD;

/// argon2id cost and pool size.
#[derive(Clone, Debug)]
pub struct HashSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes that may run at once.
    pub workers: usize,
    /// Hashes that may wait for a worker.
    pub queue: usize,
}

/// The result of checking a password.
#[derive(Debug, Clone, Copy)]
pub struct Verified {
    pub matches: bool,
    /// The stored hash is weaker than the current parameters.
    pub needs_rehash: bool,
}

pub struct PasswordHasher {
    pool: rayon::ThreadPool,
    argon: Argon2<'static>,
    params: Params,
    admission: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    capacity: usize,
    workers_total: usize,
    dummy_hash: String,
}

impl PasswordHasher {
    /// Builds the pool and the dummy hash (one hash, at start-up).
    pub fn new(settings: &HashSettings) -> anyhow::Result<Self> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let dummy_hash = hash_now(&argon, "authd dummy password for unknown users")?;
        let workers = settings.workers.max(1);
        let capacity = settings.queue + workers;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("authd-hash-{i}"))
            .start_handler(|_| {
                // Best effort: without the permission the hashes just run at normal priority.
                let _ = thread_priority::set_current_thread_priority(
                    thread_priority::ThreadPriority::Min,
                );
            })
            .build()
            .map_err(|e| anyhow::anyhow!("cannot start the hashing threads: {e}"))?;
        Ok(PasswordHasher {
            pool,
            argon,
            params,
            admission: Arc::new(Semaphore::new(capacity)),
            workers: Arc::new(Semaphore::new(workers)),
            waiting: Arc::new(AtomicUsize::new(0)),
            capacity,
            workers_total: workers,
            dummy_hash,
        })
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: Password) -> DomainResult<String> {
        let argon = self.argon.clone();
        self.run(move || hash_now(&argon, password.expose()))
            .await?
            .map_err(DomainError::internal)
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is
    /// no user or the account has no password ([`NO_PASSWORD`]): the answer is
    /// then always "no", at the same cost.
    pub async fn verify(
        &self,
        password: Password,
        stored: Option<String>,
    ) -> DomainResult<Verified> {
        let stored = stored.filter(|hash| hash != NO_PASSWORD);
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy_hash.clone());
        let current = self.params.clone();
        let verified = self
            .run(move || {
                let Ok(parsed) = PasswordHash::new(&stored) else {
                    return Verified {
                        matches: false,
                        needs_rehash: false,
                    };
                };
                let matches = verify_now(&parsed, password.expose(), &current);
                Verified {
                    matches,
                    needs_rehash: matches && is_weaker(&parsed, &current),
                }
            })
            .await?;
        Ok(Verified {
            matches: verified.matches && known,
            ..verified
        })
    }

    /// Hashes waiting for or holding a worker.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.admission.available_permits()
    }

    /// How many hashes may wait for a worker (`AUTHD_HASH_QUEUE`).
    pub fn queue_capacity(&self) -> usize {
        self.capacity - self.workers_total
    }

    /// Hashes waiting for a worker.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> DomainResult<T> {
        let admitted = self.admission.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("authd_hash_rejected_total").increment(1);
            DomainError::Overloaded
        })?;
        let started = std::time::Instant::now();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = DecrementOnDrop(self.waiting.clone());
        // Dropping this future while it waits here gives the place back unhashed.
        let worker = self
            .workers
            .clone()
            .acquire_owned()
            .instrument(tracing::info_span!("hash.queue_wait"))
            .await
            .map_err(DomainError::internal)?;
        drop(_waiting);
        metrics::histogram!("authd_hash_wait_seconds").record(started.elapsed().as_secs_f64());
        let (done, result) = tokio::sync::oneshot::channel();
        // The worker thread has no span of its own: the hash is a child of the call's.
        let hashing = tracing::info_span!("hash.argon2id");
        self.pool.spawn(move || {
            // The permits live as long as the hash, even if the caller has gone.
            let _held = (admitted, worker);
            let _ = done.send(hashing.in_scope(job));
        });
        result.await.map_err(DomainError::internal)
    }
}

struct DecrementOnDrop(Arc<AtomicUsize>);

impl Drop for DecrementOnDrop {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

thread_local! {
    /// Each hashing thread's argon2 memory, kept from one hash to the next. A fresh
    /// 19 MiB per hash is zeroed before argon2 overwrites every block anyway, and
    /// its pages fault in again whenever the allocator has handed them back.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs `argon` into `out`, on a hashing worker in its reusable memory. Memory
/// for stronger stored parameters than `current` is borrowed for that one hash
/// only, so an odd stored hash cannot make a worker keep more than the configured
/// cost; so is the memory of a hash made elsewhere (the dummy hash at start-up),
/// which no thread should keep.
fn argon2_into(
    argon: &Argon2<'_>,
    needed: &Params,
    current: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    let blocks = needed.block_count();
    if blocks > current.block_count() || rayon::current_thread_index().is_none() {
        return argon.hash_password_into(password, salt, out);
    }
    BLOCKS.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        argon.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
    })
}

fn hash_now(argon: &Argon2<'_>, password: &str) -> anyhow::Result<String> {
    let failed = |e: &dyn std::fmt::Display| anyhow::anyhow!("argon2 hashing failed: {e}");
    let params = argon.params();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|e| failed(&e))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let out = &mut out[..params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    argon2_into(argon, params, params, password.as_bytes(), salt_bytes, out)
        .map_err(|e| failed(&e))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(out).map_err(|e| failed(&e))?),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches `stored`, computed with the stored algorithm,
/// version and parameters. The comparison of the outputs is constant-time.
fn verify_now(stored: &PasswordHash<'_>, password: &str, current: &Params) -> bool {
    let check = || -> Option<bool> {
        let algorithm = Algorithm::try_from(stored.algorithm).ok()?;
        let version = match stored.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(stored).ok()?;
        let expected = stored.hash?;
        let mut salt = [0u8; Salt::MAX_LENGTH];
        let salt = stored.salt?.decode_b64(&mut salt).ok()?;
        let mut out = [0u8; Output::MAX_LENGTH];
        let out = out.get_mut(..expected.len())?;
        let argon = Argon2::new(algorithm, version, params.clone());
        argon2_into(&argon, &params, current, password.as_bytes(), salt, out).ok()?;
        Some(Output::new(out).ok()? == expected)
    };
    check().unwrap_or(false)
}

fn is_weaker(stored: &PasswordHash<'_>, current: &Params) -> bool {
    if stored.algorithm != argon2::ARGON2ID_IDENT {
        return true;
    }
    match Params::try_from(stored) {
        Ok(p) => {
            p.m_cost() < current.m_cost()
                || p.t_cost() < current.t_cost()
                || p.p_cost() < current.p_cost()
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(memory_kib: u32) -> HashSettings {
        HashSettings {
            memory_kib,
            iterations: 2,
            parallelism: 1,
            workers: 1,
            queue: 1,
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_weaker_ones_ask_for_rehash() {
        let weak = PasswordHasher::new(&settings(8 * 1024)).expect("pool");
        let strong = PasswordHasher::new(&settings(19_456)).expect("pool");
        let hash = weak
            .hash(Password::new("correct horse".into()))
            .await
            .expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        let ok = strong
            .verify(Password::new("correct horse".into()), Some(hash.clone()))
            .await
            .expect("verify");
        assert!(ok.matches && ok.needs_rehash);
        let wrong = strong
            .verify(Password::new("wrong horse".into()), Some(hash))
            .await
            .expect("verify");
        assert!(!wrong.matches && !wrong.needs_rehash);
        let unknown = strong
            .verify(
                Password::new("authd dummy password for unknown users".into()),
                None,
            )
            .await
            .expect("verify");
        assert!(!unknown.matches);
        // An account without a password: nothing matches, not even the marker or
        // the dummy's own password.
        for attempt in ["authd dummy password for unknown users", NO_PASSWORD, ""] {
            let none = strong
                .verify(Password::new(attempt.into()), Some(NO_PASSWORD.to_owned()))
                .await
                .expect("verify");
            assert!(!none.matches && !none.needs_rehash);
        }
    }

    #[test]
    fn reused_memory_gives_the_same_hashes_as_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let small = Params::new(8 * 1024, 2, 1, None).expect("params");
        let large = Params::new(12 * 1024, 2, 1, None).expect("params");
        let ours = hash_now(
            &Argon2::new(Algorithm::Argon2id, Version::V0x13, small.clone()),
            "correct horse",
        )
        .expect("hash");
        let ours = PasswordHash::new(&ours).expect("PHC string");
        // Theirs, with more memory than the worker keeps: verified with borrowed memory.
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, large)
            .hash_password(b"correct horse", &salt)
            .expect("hash");
        let reference = Argon2::default();
        assert!(reference.verify_password(b"correct horse", &ours).is_ok());
        let checks = || {
            for _ in 0..2 {
                assert!(verify_now(&ours, "correct horse", &small));
                assert!(verify_now(&theirs, "correct horse", &small));
                assert!(!verify_now(&ours, "correct horsE", &small));
                assert!(!verify_now(&theirs, "", &small));
            }
        };
        // Off the pool (borrowed memory), and on a worker (its kept memory, reused).
        checks();
        let worker = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        worker.install(checks);
        let rehashed = worker
            .install(|| {
                hash_now(
                    &Argon2::new(Algorithm::Argon2id, Version::V0x13, small.clone()),
                    "battery staple",
                )
            })
            .expect("hash on a worker");
        let rehashed = PasswordHash::new(&rehashed).expect("PHC string");
        assert!(reference
            .verify_password(b"battery staple", &rehashed)
            .is_ok());
        let truncated =
            PasswordHash::new("$argon2id$v=19$m=8192,t=2,p=1$c2FsdHNhbHQ").expect("PHC");
        assert!(!verify_now(&truncated, "correct horse", &small));
    }

    /// Waits (at most 5 s) for `ready`.
    async fn until(ready: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !ready() {
            assert!(std::time::Instant::now() < deadline, "timed out");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_while_queued_is_never_hashed() {
        let pool = Arc::new(
            PasswordHasher::new(&HashSettings {
                queue: 4,
                ..settings(8 * 1024)
            })
            .expect("pool"),
        );
        // Hold the only worker until told to let go.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let busy = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(move || held.recv().is_ok()).await })
        };
        until(|| pool.in_flight() == 1 && pool.waiting() == 0).await;
        // A second caller queues behind it, then goes away (a client that hung up).
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let queued = {
            let (pool, ran) = (pool.clone(), ran.clone());
            tokio::spawn(async move { pool.run(move || ran.store(true, Ordering::SeqCst)).await })
        };
        until(|| pool.waiting() == 1).await;
        queued.abort();
        assert!(queued.await.expect_err("aborted").is_cancelled());
        // Its place is given back at once, before the worker is free.
        assert_eq!((pool.waiting(), pool.in_flight()), (0, 1));

        release.send(()).expect("release the worker");
        assert!(busy.await.expect("join").expect("ran"));
        // Anything still queued would run now; the pool is idle, and the job never ran.
        let after = pool.clone();
        after.run(|| ()).await.expect("the pool still works");
        // (A job's permits are let go just after its answer is sent.)
        until(|| pool.in_flight() == 0).await;
        assert!(!ran.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let pool = Arc::new(PasswordHasher::new(&settings(19_456)).expect("pool"));
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.hash(Password::new("password123".into())).await })
            })
            .collect();
        let mut refused = 0;
        for call in calls {
            if matches!(call.await.expect("join"), Err(DomainError::Overloaded)) {
                refused += 1;
            }
        }
        // One worker and one queue place: at least six of eight are turned away.
        assert!(refused >= 6, "only {refused} refused");
    }
}
