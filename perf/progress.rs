//! Progress display: `indicatif` bars when stderr is a terminal, nothing
//! otherwise (so logs and CI output stay clean). Bars are refreshed from a
//! counter by a ticker, so the load itself never touches the bar.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

/// A bar fed from a counter; inert when stderr is not a terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
    ticker: Option<JoinHandle<()>>,
}

impl Progress {
    /// A bar of `len` units labelled `label`; `read` gives the current
    /// position and a short message, sampled 10 times a second.
    pub fn start<F>(label: &str, len: u64, read: F) -> Progress
    where
        F: Fn() -> (u64, String) + Send + 'static,
    {
        if !std::io::stderr().is_terminal() {
            return Progress {
                bar: None,
                ticker: None,
            };
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix:>12} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        let b = bar.clone();
        let ticker = tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_millis(100));
            loop {
                t.tick().await;
                let (pos, msg) = read();
                b.set_position(pos);
                b.set_message(msg);
            }
        });
        Progress {
            bar: Some(bar),
            ticker: Some(ticker),
        }
    }

    /// Stops updating and clears the bar.
    pub fn finish(self) {
        if let Some(t) = self.ticker {
            t.abort();
        }
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

/// A one-line status message on stderr (always shown: it is a log, not a bar).
pub fn note(msg: &str) {
    eprintln!("nsqlookupd-bench: {msg}");
}
