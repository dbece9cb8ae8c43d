//! The results: one row per measured run, the ratios issue 7 sets targets for, and
//! the context needed to read them (CPUs, load average, the server's RSS and CPU
//! use). Printed as a table, and as JSON with `--json`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::load::Recorded;

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub server: ServerInfo,
    pub results: Vec<Row>,
    pub ratios: Vec<Ratio>,
    pub startups: Vec<Startup>,
}

#[derive(Debug, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub server_cpus: Option<String>,
    pub load_cpus: Option<String>,
    pub pinning_note: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct ServerInfo {
    /// "spawned" or the address targeted.
    pub target: String,
    /// "sqlite" or "postgres" when spawned.
    pub database: Option<String>,
    pub start_to_serving_ms: Option<f64>,
    pub idle_rss_kib: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub scenario: String,
    /// "closed" or "open@<rate>/s".
    pub mode: String,
    pub concurrency: u32,
    pub connections: u32,
    pub tokens: Option<u32>,
    pub duration_s: f64,
    pub ok: u64,
    /// Successful calls per second of the measured window.
    pub calls_per_s: f64,
    pub latency_ms: Latency,
    pub errors: BTreeMap<String, u64>,
    pub missed: u64,
    /// Open loop: p99 and max of how late calls left against their schedule (the
    /// timer ticks every millisecond, so up to ~1 ms is the pacing itself).
    pub start_lag_ms: Option<(f64, f64)>,
    /// The server's CPU use over warm-up and window, in % of one core.
    pub server_cpu_pct: Option<f64>,
    /// This process's CPU use, in % of one core: near 100 × load CPUs means the load
    /// generator, not the server, was the limit.
    pub bench_cpu_pct: Option<f64>,
    /// A closed loop whose generator was busy (≥ 90 % of its load cores) while the
    /// server was not (< 90 % of a core): the row measures the generator, not the
    /// server, and is not a valid benchmark.
    pub generator_bound: bool,
    /// 1-minute load average when the run began.
    pub loadavg_before: Option<f64>,
    /// CPU time per successful call, in µs, of whatever does the work: the server, or
    /// this process for `hash`. Unlike calls/s it barely moves when other processes
    /// compete for the core.
    pub cpu_us_per_call: Option<f64>,
    /// This process's CPU time per successful call, in µs (not for `hash`, where it
    /// is the work itself): what the load generator spends to make one call.
    pub bench_cpu_us_per_call: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Serialize)]
pub struct Ratio {
    pub name: String,
    pub value: f64,
    pub target: f64,
    pub met: bool,
}

#[derive(Debug, Serialize)]
pub struct Startup {
    pub start_to_serving_ms: f64,
    pub idle_rss_kib: Option<u64>,
}

/// How a row was produced, besides what it measured.
pub struct RowContext {
    pub scenario: String,
    pub mode: String,
    pub concurrency: u32,
    pub connections: u32,
    pub tokens: Option<u32>,
    pub server_cpu_pct: Option<f64>,
    pub bench_cpu_pct: Option<f64>,
    pub loadavg_before: Option<f64>,
    /// The cores the generator may use (its CPU % is out of 100 × this).
    pub load_cores: usize,
}

impl Row {
    pub fn new(context: RowContext, recorded: &Recorded) -> Row {
        let h = &recorded.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        let seconds = recorded.measured.as_secs_f64().max(1e-9);
        let calls_per_s = recorded.ok() as f64 / seconds;
        // In `mixed` the server's CPU serves both streams: no per-call figure.
        let worker_pct = match context.scenario.as_str() {
            "hash" => context.bench_cpu_pct,
            s if s.starts_with("mixed") => None,
            _ => context.server_cpu_pct,
        };
        let generator_pct = match context.scenario.as_str() {
            "hash" => None,
            s if s.starts_with("mixed") => None,
            _ => context.bench_cpu_pct,
        };
        let per_call = |pct: Option<f64>| {
            pct.filter(|_| calls_per_s > 0.0)
                .map(|pct| pct / 100.0 * 1e6 / calls_per_s)
        };
        let generator_bound = context.mode == "closed"
            && matches!(
                (context.server_cpu_pct, generator_pct),
                (Some(srv), Some(generator))
                    if srv < 90.0 && generator >= 90.0 * context.load_cores.max(1) as f64
            );
        Row {
            scenario: context.scenario,
            mode: context.mode,
            concurrency: context.concurrency,
            connections: context.connections,
            tokens: context.tokens,
            duration_s: recorded.measured.as_secs_f64(),
            ok: recorded.ok(),
            calls_per_s,
            latency_ms: Latency {
                p50: ms(h.value_at_quantile(0.50)),
                p90: ms(h.value_at_quantile(0.90)),
                p99: ms(h.value_at_quantile(0.99)),
                max: ms(h.max()),
                mean: h.mean() / 1000.0,
            },
            errors: recorded.errors.clone(),
            missed: recorded.missed,
            start_lag_ms: recorded
                .start_lag_us
                .as_ref()
                .filter(|h| !h.is_empty())
                .map(|h| (ms(h.value_at_quantile(0.99)), ms(h.max()))),
            server_cpu_pct: context.server_cpu_pct,
            bench_cpu_pct: context.bench_cpu_pct,
            loadavg_before: context.loadavg_before,
            generator_bound,
            cpu_us_per_call: per_call(worker_pct),
            bench_cpu_us_per_call: per_call(generator_pct),
        }
    }
}

impl Report {
    /// The ratios issues 7 and 20 set targets for, from the closed-loop rows of this run.
    pub fn compute_ratios(&mut self) {
        let rate = |name: &str| {
            self.results
                .iter()
                .find(|r| r.scenario == name && r.mode == "closed")
                .map(|r| r.calls_per_s)
        };
        let mut ratios = Vec::new();
        for (top, bottom, target) in [
            ("validate", "health", 0.70),
            ("check-role", "health", 0.70),
            // Issue 20: Check answers "at the speed of ValidateToken".
            ("ext-authz", "validate", 0.85),
            ("login", "hash", 0.85),
        ] {
            if let (Some(a), Some(b)) = (rate(top), rate(bottom)) {
                if b > 0.0 {
                    ratios.push(Ratio {
                        name: format!("{top}/{bottom}"),
                        value: a / b,
                        target,
                        met: a / b >= target,
                    });
                }
            }
        }
        self.ratios = ratios;
    }

    pub fn print_table(&self) {
        let m = &self.machine;
        println!(
            "cpus {}  server on {}  load on {}{}",
            m.cpus,
            m.server_cpus.as_deref().unwrap_or("-"),
            m.load_cpus.as_deref().unwrap_or("-"),
            m.pinning_note
                .as_deref()
                .map(|n| format!("  ({n})"))
                .unwrap_or_default()
        );
        let s = &self.server;
        println!(
            "server {}{}{}{}",
            s.target,
            s.database
                .as_deref()
                .map(|d| format!("  database {d}"))
                .unwrap_or_default(),
            s.start_to_serving_ms
                .map(|t| format!("  start to SERVING {t:.0} ms"))
                .unwrap_or_default(),
            s.idle_rss_kib
                .map(|k| format!("  idle RSS {:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_default(),
        );
        if !self.results.is_empty() {
            self.print_rows();
        }
        self.print_startups_and_ratios();
    }

    fn print_rows(&self) {
        println!();
        println!(
            "{:<14} {:<14} {:>5} {:>4} {:>9} {:>8} {:>8} {:>8} {:>8}  {:>4} {:>4} {:>6} {:>6} {:>5}  errors",
            "scenario",
            "mode",
            "conc",
            "conn",
            "calls/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "srv%",
            "gen%",
            "srv µs",
            "gen µs",
            "load"
        );
        for r in &self.results {
            let pct = |p: Option<f64>| p.map_or("-".to_owned(), |p| format!("{p:.0}"));
            // One decimal where a call costs a few µs, whole µs above.
            let us = |c: Option<f64>| {
                c.map_or("-".to_owned(), |c| {
                    if c < 100.0 {
                        format!("{c:.1}")
                    } else {
                        format!("{c:.0}")
                    }
                })
            };
            let mut errors: Vec<String> =
                r.errors.iter().map(|(c, n)| format!("{c}={n}")).collect();
            if r.missed > 0 {
                errors.push(format!("missed={}", r.missed));
            }
            if let Some((p99, _)) = r.start_lag_ms.filter(|(p99, _)| *p99 > 2.0) {
                errors.push(format!("late-start-p99={p99:.1}ms"));
            }
            if r.generator_bound {
                errors.push("GENERATOR-BOUND".to_owned());
            }
            println!(
                "{:<14} {:<14} {:>5} {:>4} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3}  {:>4} {:>4} {:>6} {:>6} {:>5}  {}",
                r.scenario,
                r.mode,
                r.concurrency,
                r.connections,
                r.calls_per_s,
                r.latency_ms.p50,
                r.latency_ms.p90,
                r.latency_ms.p99,
                r.latency_ms.max,
                pct(r.server_cpu_pct),
                pct(r.bench_cpu_pct),
                us(r.cpu_us_per_call),
                us(r.bench_cpu_us_per_call),
                r.loadavg_before.map_or("-".to_owned(), |l| format!("{l:.2}")),
                if errors.is_empty() { "0".to_owned() } else { errors.join(" ") },
            );
        }
    }

    fn print_startups_and_ratios(&self) {
        if !self.startups.is_empty() {
            println!();
            for (i, s) in self.startups.iter().enumerate() {
                println!(
                    "start {}: SERVING after {:.0} ms, idle RSS {}",
                    i + 1,
                    s.start_to_serving_ms,
                    s.idle_rss_kib
                        .map_or("-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
                );
            }
        }
        if !self.ratios.is_empty() {
            println!();
            for r in &self.ratios {
                println!(
                    "{:<20} {:>6.1} %   target >= {:.0} %: {}",
                    r.name,
                    r.value * 100.0,
                    r.target * 100.0,
                    if r.met { "met" } else { "NOT met" }
                );
            }
        }
    }
}

/// The 1-minute load average, from /proc/loadavg.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hdrhistogram::Histogram;

    use super::*;

    fn row(mode: &str, srv: f64, generator: f64, load_cores: usize) -> Row {
        let mut latency_us = Histogram::new(3).expect("valid");
        for _ in 0..1000 {
            latency_us.record(100).expect("in range");
        }
        let recorded = Recorded {
            latency_us,
            errors: BTreeMap::new(),
            missed: 0,
            start_lag_us: None,
            measured: Duration::from_secs(1),
        };
        let context = RowContext {
            scenario: "health".into(),
            mode: mode.into(),
            concurrency: 64,
            connections: 4,
            tokens: None,
            server_cpu_pct: Some(srv),
            bench_cpu_pct: Some(generator),
            loadavg_before: None,
            load_cores,
        };
        Row::new(context, &recorded)
    }

    #[test]
    fn cpu_per_call_is_given_for_both_sides() {
        let r = row("closed", 100.0, 50.0, 1);
        // 1000 calls in 1 s: a full core is 1000 µs per call.
        assert_eq!(r.cpu_us_per_call, Some(1000.0));
        assert_eq!(r.bench_cpu_us_per_call, Some(500.0));
    }

    #[test]
    fn a_busy_generator_beside_an_idle_server_is_flagged() {
        assert!(!row("closed", 99.0, 60.0, 1).generator_bound);
        assert!(row("closed", 85.0, 99.0, 1).generator_bound);
        // Two load cores: 99 % is half of them.
        assert!(!row("closed", 85.0, 99.0, 2).generator_bound);
        assert!(row("closed", 85.0, 195.0, 2).generator_bound);
        // The open loop's pacer keeps its core busy by design.
        assert!(!row("open@1000/s", 50.0, 99.0, 1).generator_bound);
    }
}
