//! The `nsqlookupd` binary: parse the command line, start logging, run the
//! server until SIGINT or SIGTERM.

use std::process::ExitCode;

use nsqlookupd::config::{self, Parsed};
use nsqlookupd::logging;
use nsqlookupd::server::{self, Server};
use tracing::{error, info, warn};

fn main() -> ExitCode {
    let (options, warnings) = match config::parse_args(std::env::args_os()) {
        Ok(Parsed::Run { options, warnings }) => (*options, warnings),
        Ok(Parsed::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("nsqlookupd: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(options.log_level, &options.log_prefix, options.log_format);
    for w in warnings {
        warn!("{w}");
    }
    // As Go's runtime does: every connection is a file descriptor, and the
    // connection caps are only meaningful if the process may open that many.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => info!("file descriptor limit: {n}"),
        Err(e) => warn!("could not raise the file descriptor limit - {e}"),
    }
    let runtime = match server::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            error!(target: logging::FATAL, "failed to start the runtime - {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        info!("{}", config::version_string());
        let server = match Server::bind(options).await {
            Ok(s) => s,
            Err(e) => {
                error!(target: logging::FATAL, "{e}");
                return ExitCode::FAILURE;
            }
        };
        server.run_until(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    info!("nsqlookupd: shutting down");
}
