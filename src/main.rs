//! The `authd` binary: parse the command line, start telemetry, run the subcommand.

use std::process::ExitCode;

use authd::config::{Cli, Command, LogFormat};
use clap::Parser;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return authd::usage_error::report(err),
    };
    let log_format = cli.log_format;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = authd::telemetry::init(log_format, None);
            fatal(
                log_format,
                &format!("cannot start the async runtime: {err}"),
            );
            return ExitCode::FAILURE;
        }
    };
    let otlp_endpoint = match &cli.command {
        Command::Serve(config) => config.otlp_endpoint.clone(),
        _ => None,
    };
    // The trace exporter's connection lives on the runtime.
    let traces = {
        let _runtime = runtime.enter();
        match authd::telemetry::init(log_format, otlp_endpoint.as_deref()) {
            Ok(traces) => traces,
            Err(err) => {
                let _ = authd::telemetry::init(log_format, None);
                fatal(log_format, &format!("{err:#}"));
                return ExitCode::FAILURE;
            }
        }
    };
    let code = match runtime.block_on(authd::cli::run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            // One line, naming what is wrong; no backtrace.
            fatal(log_format, &format!("{err:#}"));
            ExitCode::FAILURE
        }
    };
    if let Some(traces) = traces {
        traces.shutdown();
    }
    code
}

/// The error that stops the process: one line, a JSON log line in JSON mode.
fn fatal(format: LogFormat, message: &str) {
    match format {
        LogFormat::Text => eprintln!("authd: {message}"),
        LogFormat::Json => tracing::error!(target: "authd", "authd: {message}"),
    }
}
