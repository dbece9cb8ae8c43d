//! The `authd` binary: parse the command line, start telemetry, run the subcommand.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = authd::config::Cli::parse();
    authd::telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("authd: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(authd::cli::run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            // One line, naming what is wrong; no backtrace.
            eprintln!("authd: {err:#}");
            ExitCode::FAILURE
        }
    }
}
