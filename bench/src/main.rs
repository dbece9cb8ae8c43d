//! `authd-bench`: parse the options, pin this process to the load CPUs, run the
//! scenarios on a runtime sized to those CPUs, print the report.
//!
//! Build both binaries first: `cargo build --release -p authd -p authd-bench`.

mod affinity;
mod calls;
mod cli;
mod envoy;
mod fixtures;
mod h2grpc;
mod hash;
mod load;
mod report;
mod run;
mod server;
mod wire;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let options = cli::Options::parse();
    match bench(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("authd-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(options: cli::Options) -> anyhow::Result<()> {
    // h2 and tokio open `tracing` spans on every poll and frame. With no subscriber
    // set, each one still goes through `tracing`'s `log` fallback (a feature another
    // crate of the workspace turns on), a few % of the load core at 100,000 calls/s.
    // A subscriber interested in nothing makes every callsite a cached "never".
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::new());
    let starts_server = options.addr.is_none();
    let pinning = affinity::Pinning::decide(
        &options.server_cpus,
        &options.load_cpus,
        options.no_pin,
        starts_server,
    )?;
    if let Some(note) = &pinning.note {
        eprintln!("authd-bench: {note}");
    }
    // Threads started from here on (the runtime's) inherit the mask.
    if let Some(cpus) = &pinning.load {
        affinity::pin_current_thread(cpus)?;
    }
    let workers = pinning.load.as_ref().map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        Vec::len,
    );
    // One load core gets one thread: a multi-thread runtime would add the
    // `block_on` thread (where the pacer runs) beside its worker, and two runnable
    // threads on one core take turns in scheduler slices of milliseconds, which
    // shows up as latency that is the generator's, not the server's.
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    let (json, fail_on_error) = (options.json, options.fail_on_error);
    let report = runtime.block_on(run::run(options, pinning))?;
    report.print_table();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    let failed: u64 = report.results.iter().flat_map(|r| r.errors.values()).sum();
    if fail_on_error && failed > 0 {
        anyhow::bail!("{failed} calls failed");
    }
    Ok(())
}
