//! The `ratebound` binary: parse arguments, run the command, exit with its code.
//!
//! Everything else lives in the library; errors print their whole chain once, here.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use ratebound::cli;

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RATEBOUND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = cli::Cli::parse();
    match cli::main(args) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "error: {err}");
            for cause in err.chain().skip(1) {
                let _ = write!(stderr, "\n  caused by: {cause}");
            }
            let _ = writeln!(stderr);
            ExitCode::from(cli::exit_code(&err))
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
