//! The load driver, independent of what is called: a closed loop (each worker starts
//! its next call when the last one answers) or an open loop (calls start on a fixed
//! schedule whatever the latency). Both run a warm-up, then a measured window, and
//! stop by themselves: nothing starts after the window and every call has a timeout.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use hdrhistogram::Histogram;
use tokio::{sync::mpsc, time::Instant};
use tonic::Code;

/// One kind of call, with whatever state a worker keeps between calls (its session,
/// its place in the token list).
pub trait Caller: Send + 'static {
    /// Makes one call. `Err` carries the status name to count it under.
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// When to load and for how long.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub warmup: Duration,
    pub duration: Duration,
    pub timeout: Duration,
}

/// What a run measured: latencies of the calls that succeeded, errors by status.
pub struct Recorded {
    pub latency_us: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
    /// Open loop only: scheduled calls that could not start because --concurrency
    /// calls were already in flight.
    pub missed: u64,
    /// Open loop only: how late calls were sent against their schedule.
    pub start_lag_us: Option<Histogram<u64>>,
    pub measured: Duration,
}

/// Latencies in µs: 1 µs to 10 min at 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| unreachable!("constant, valid bounds"))
}

impl Recorded {
    fn new() -> Recorded {
        Recorded {
            latency_us: latency_histogram(),
            errors: BTreeMap::new(),
            missed: 0,
            start_lag_us: None,
            measured: Duration::ZERO,
        }
    }

    fn record(&mut self, latency: Duration, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.latency_us.saturating_record(micros(latency)),
            Err(code) => *self.errors.entry(code).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Recorded) {
        let _ = self.latency_us.add(&other.latency_us);
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        self.missed += other.missed;
    }

    pub fn ok(&self) -> u64 {
        self.latency_us.len()
    }

    #[cfg(test)]
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Runs every caller in its own task, each starting its next call as soon as the
/// last one answers, for warm-up plus duration. Only calls started inside the
/// measured window are recorded.
pub async fn closed_loop<C: Caller>(callers: Vec<C>, window: Window) -> Recorded {
    let start = Instant::now();
    let measure_from = start + window.warmup;
    let end = measure_from + window.duration;
    let tasks: Vec<_> = callers
        .into_iter()
        .map(|mut caller| {
            tokio::spawn(async move {
                let mut recorded = Recorded::new();
                loop {
                    let began = Instant::now();
                    if began >= end {
                        break;
                    }
                    let outcome = timed_call(&mut caller, window.timeout).await;
                    if began >= measure_from {
                        recorded.record(began.elapsed(), outcome);
                    }
                }
                recorded
            })
        })
        .collect();
    let mut total = Recorded::new();
    for task in tasks {
        if let Ok(recorded) = task.await {
            total.merge(recorded);
        }
    }
    total.measured = window.duration;
    total
}

/// Starts calls at `rate` per second on a fixed schedule, with at most as many in
/// flight as there are callers; a scheduled call that finds none free is counted as
/// missed rather than delayed (the schedule never waits for the server).
///
/// Latency runs from the actual send; how late sends were against the schedule is
/// recorded apart (`start_lag`), so a slow generator shows instead of disappearing.
pub async fn open_loop<C: Caller>(callers: Vec<C>, rate: f64, window: Window) -> Recorded {
    let in_flight_limit = callers.len();
    let (idle_tx, mut idle_rx) = mpsc::unbounded_channel();
    for caller in callers {
        let _ = idle_tx.send(caller);
    }
    let recorded = Arc::new(Mutex::new(Recorded::new()));
    let rate = rate.max(0.001);
    let start = Instant::now();
    let measure_from = start + window.warmup;
    let end = measure_from + window.duration;
    let (mut missed, mut start_lag) = (0, latency_histogram());
    let mut n = 0u64;
    loop {
        let scheduled = start + Duration::from_secs_f64(n as f64 / rate);
        if scheduled >= end {
            break;
        }
        wait_until(scheduled).await;
        n += 1;
        let measured = scheduled >= measure_from;
        let Ok(mut caller) = idle_rx.try_recv() else {
            missed += u64::from(measured);
            continue;
        };
        let sent = Instant::now();
        if measured {
            start_lag.saturating_record(micros(sent - scheduled));
        }
        let (idle_tx, recorded) = (idle_tx.clone(), recorded.clone());
        let timeout = window.timeout;
        tokio::spawn(async move {
            let outcome = timed_call(&mut caller, timeout).await;
            if measured {
                if let Ok(mut r) = recorded.lock() {
                    r.record(sent.elapsed(), outcome);
                }
            }
            let _ = idle_tx.send(caller);
        });
    }
    // Every caller comes back once its last call has answered or timed out.
    for _ in 0..in_flight_limit {
        if tokio::time::timeout(window.timeout * 2, idle_rx.recv())
            .await
            .is_err()
        {
            break;
        }
    }
    let mut total = Recorded::new();
    if let Ok(mut r) = recorded.lock() {
        total.merge(std::mem::replace(&mut *r, Recorded::new()));
    }
    total.missed = missed;
    total.start_lag_us = Some(start_lag);
    total.measured = window.duration;
    total
}

/// Waits until `deadline` to within microseconds. tokio's timer has millisecond
/// resolution and wakes up to ~2 ms late, so an open loop paced by it sends in bursts
/// (at 14,000/s, 20-30 calls at once), and the server's queue behind each burst shows
/// up as latency. So it sleeps until shortly before, then yields to the runtime until
/// the moment: the load core stays busy, the schedule stays even.
async fn wait_until(deadline: Instant) {
    const SPIN: Duration = Duration::from_millis(2);
    if let Some(wake) = deadline.checked_sub(SPIN) {
        if wake > Instant::now() {
            tokio::time::sleep_until(wake).await;
        }
    }
    while Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

async fn timed_call<C: Caller>(caller: &mut C, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, caller.call()).await {
        Ok(outcome) => outcome,
        Err(_) => Err("CLIENT_TIMEOUT".into()),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A status code as gRPC spells it: `UNAUTHENTICATED`, `RESOURCE_EXHAUSTED`.
pub fn code_name(code: Code) -> String {
    let camel = format!("{code:?}");
    let mut name = String::with_capacity(camel.len() + 4);
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(ch.to_ascii_uppercase());
    }
    name
}

/// Maps a tonic result to the driver's outcome.
pub fn outcome<T>(result: Result<T, tonic::Status>) -> Result<T, String> {
    result.map_err(|status| code_name(status.code()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_spelled_as_grpc_does() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
    }

    struct Sleepy(Duration);

    impl Caller for Sleepy {
        fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
            let pause = self.0;
            async move {
                tokio::time::sleep(pause).await;
                Ok(())
            }
        }
    }

    fn window() -> Window {
        Window {
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(300),
            timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn closed_loop_records_only_the_window() {
        let r = closed_loop(vec![Sleepy(Duration::from_millis(10))], window()).await;
        // About 30 calls of 10 ms fit in 300 ms; the warm-up ones are not counted.
        assert!((20..=31).contains(&r.ok()), "{} calls", r.ok());
        assert_eq!(r.failed(), 0);
    }

    #[tokio::test]
    async fn open_loop_keeps_its_rate_and_counts_missed_starts() {
        let callers = vec![
            Sleepy(Duration::from_millis(1)),
            Sleepy(Duration::from_millis(1)),
        ];
        let r = open_loop(callers, 200.0, window()).await;
        assert!((50..=62).contains(&r.ok()), "{} calls", r.ok());
        let slow = vec![Sleepy(Duration::from_millis(100))];
        let r = open_loop(slow, 100.0, window()).await;
        assert!(r.missed > 0);
    }
}
