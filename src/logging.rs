//! Log lines on stderr in the original's format:
//! `[nsqlookupd] 2026/11/24 20:28:25.386586 INFO: message`.
//!
//! Built on `tracing`, so call sites attach structured fields (peer,
//! topic, channel, command) that richer formats can use; this text format
//! prints only the message, as the original does.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogLevel;

/// Events logged with this target are FATAL: shown even at `--log-level=fatal`.
pub const FATAL: &str = "fatal";

struct GoFormat {
    prefix: String,
}

struct MessageOnly<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Visit for MessageOnly<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.result = write!(self.writer, "{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.result = self.writer.write_str(value);
        }
    }
}

fn level_name(event: &Event<'_>) -> &'static str {
    if event.metadata().target() == FATAL {
        return "FATAL";
    }
    match *event.metadata().level() {
        Level::TRACE | Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARNING",
        Level::ERROR => "ERROR",
    }
}

impl<S, N> FormatEvent<S, N> for GoFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = chrono::Local::now().format("%Y/%m/%d %H:%M:%S%.6f");
        write!(writer, "{}{now} {}: ", self.prefix, level_name(event))?;
        let mut visitor = MessageOnly {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut visitor);
        visitor.result?;
        writeln!(writer)
    }
}

/// Installs the global logger. Call once, before anything logs.
pub fn init(level: LogLevel, prefix: &str) {
    let max = match level {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error | LogLevel::Fatal => LevelFilter::ERROR,
    };
    let only_fatal = level == LogLevel::Fatal;
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(max)
        .with_writer(std::io::stderr)
        .event_format(GoFormat {
            prefix: prefix.to_owned(),
        })
        .finish();
    use tracing_subscriber::layer::SubscriberExt;
    let filter = tracing_subscriber::filter::filter_fn(move |m| !only_fatal || m.target() == FATAL);
    let _ = tracing::subscriber::set_global_default(subscriber.with(filter));
}
