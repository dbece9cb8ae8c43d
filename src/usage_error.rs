//! A command line or environment that does not parse: one line naming the setting,
//! as an `AUTHD_*` variable when that is where the value came from (clap names only
//! the flag), and as a JSON log line when JSON logs were asked for.

use std::process::ExitCode;

use clap::{
    error::{ContextKind, ContextValue, ErrorKind},
    Arg, CommandFactory,
};

use crate::config::{Cli, LogFormat};

/// Prints `err` (help and version as clap prints them) and answers the exit code.
pub fn report(err: clap::Error) -> ExitCode {
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = err.print();
        return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
    }
    let line = one_line(&err);
    if json_requested() {
        let _ = crate::telemetry::init(LogFormat::Json, None);
        tracing::error!(target: "authd", "authd: {line}");
    } else {
        eprintln!("authd: {line}");
    }
    ExitCode::from(2)
}

fn one_line(err: &clap::Error) -> String {
    // clap's message, up to its usage and hints, on one line ("… not provided:
    // --username <USERNAME>").
    let rendered = err.render().to_string();
    let first = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| {
            !line.starts_with("Usage:")
                && !line.starts_with("For more information")
                && !line.starts_with("tip:")
        })
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches("error: ")
        .to_owned();
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return first;
    };
    let long = arg
        .trim_start_matches("--")
        .split([' ', '='])
        .next()
        .unwrap_or_default();
    match env_of(long) {
        Some(env) if std::env::var_os(&env).is_some() && !on_command_line(long) => {
            format!("{env}: {first}")
        }
        _ => first,
    }
}

/// The environment variable of the flag `--long`, in any subcommand.
fn env_of(long: &str) -> Option<String> {
    fn find(command: &clap::Command, long: &str) -> Option<String> {
        let named = |arg: &&Arg| arg.get_long() == Some(long);
        if let Some(env) = command.get_arguments().find(named).and_then(Arg::get_env) {
            return Some(env.to_string_lossy().into_owned());
        }
        command.get_subcommands().find_map(|sub| find(sub, long))
    }
    find(&Cli::command(), long)
}

fn on_command_line(long: &str) -> bool {
    let flag = format!("--{long}");
    std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}=")))
}

fn json_requested() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let from_args = args
        .windows(2)
        .any(|w| w[0] == "--log-format" && w[1] == "json")
        || args.iter().any(|a| a == "--log-format=json");
    from_args || std::env::var("AUTHD_LOG_FORMAT").is_ok_and(|v| v == "json")
}
