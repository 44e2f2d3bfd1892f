//! `nsqlookupd-bench`: a fleet load generator for any nsqlookupd.
//!
//! It simulates nsqd nodes over the real TCP protocol and consumers over the
//! HTTP API, measures what they experience, checks the answers against what
//! it registered, and compares the HTTP figures with a fixed-answer ceiling
//! server. See `perf/README.md`.

#[cfg(test)]
mod blackbox;
mod ceiling;
mod check;
mod cli;
mod cluster;
mod consumers;
mod fleet;
mod gzip;
mod httpc;
mod modes;
mod plot;
mod presets;
mod procstat;
mod progress;
mod report;
mod scheme;
mod soak;
mod stats;
#[cfg(test)]
mod testtls;
mod tls;
mod wire;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Cmd};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // On one core (the usual `taskset -c 1` setup) the server's own choice
    // applies here too: a single-threaded runtime leaves more of the core
    // for generating load.
    let built = nsqlookupd::server::runtime();
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nsqlookupd-bench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        let (outcome, output) = match cli.cmd {
            Cmd::ServeCeiling(a) => {
                return modes::serve_ceiling(a).await.map(|()| true);
            }
            Cmd::Run(a) => {
                let out = a.output.clone();
                (modes::run(a).await?, out)
            }
            Cmd::Fleet(a) => {
                let out = a.output.clone();
                (modes::fleet_only(a).await?, out)
            }
            Cmd::Consumers(a) => {
                let out = a.output.clone();
                (modes::consumers_only(a).await?, out)
            }
            Cmd::Propagation(a) => {
                let out = a.output.clone();
                (cluster::propagation(a).await?, out)
            }
            Cmd::Converge(a) => {
                let out = a.output.clone();
                (cluster::converge(a).await?, out)
            }
            Cmd::Ceiling(a) => {
                let out = a.output.clone();
                (modes::ceiling(a).await?, out)
            }
            Cmd::Soak(a) => {
                let out = a.output.clone();
                (soak::soak(a).await?, out)
            }
        };
        modes::finish(&outcome, &output)?;
        Ok::<bool, String>(outcome.report.passed)
    });
    // Node tasks may still be winding down; do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("nsqlookupd-bench: {e}");
            ExitCode::from(2)
        }
    }
}
