//! The `deepdist` command line: a thin dispatcher over the library crates.

mod cli;
mod commands;
mod launch;
mod roles;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let outcome = match cli.command {
        cli::Command::Data(args) => commands::data::run(args),
        cli::Command::Bench(args) => commands::bench::run(args),
        cli::Command::Train(args) => commands::train::run(args),
        cli::Command::Driver(args) => commands::service::driver(args),
        cli::Command::Executor(args) => commands::service::executor(args),
        cli::Command::Submit(args) => commands::client::submit(args),
        cli::Command::Status(args) => commands::client::status(args),
        cli::Command::Cancel(args) => commands::client::cancel(args),
        cli::Command::Local(args) => roles::local::run(args),
        cli::Command::Launch(args) => launch::run(args),
        cli::Command::Eval(args) => commands::eval::run(args),
        cli::Command::Predict(args) => commands::predict::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// Prints an error for the person who ran the command: the message and its
/// causes, one per line. Never a backtrace, even with `RUST_BACKTRACE` set
/// (as some clusters' environments do): where the code failed is for
/// developers, and the operator logs are there for it.
/// A cause already quoted by the message above it is not repeated (library
/// errors that travel as one line, a task's failure say, quote their source).
fn report(e: &anyhow::Error) {
    eprintln!("error: {e}");
    let mut above = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !above.contains(&text) {
            eprintln!("  caused by: {text}");
        }
        above = text;
    }
}
