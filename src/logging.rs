//! Log lines on stderr, in one of two formats (`--log-format`):
//!
//! - `text`, the original's: `[nsqlookupd] 2026/11/24 20:28:25.386586 INFO: message`
//!   (only the message, as the original prints);
//! - `json`: one object per line with `timestamp`, `level`, `message` and
//!   the structured fields call sites attach (`peer`, `topic`, `channel`,
//!   `command`, ...), for log pipelines.
//!
//! Both are `tracing` subscribers, so call sites are the same for both.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogFormat, LogLevel};

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
pub fn init(level: LogLevel, prefix: &str, format: LogFormat) {
    let max = match level {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error | LogLevel::Fatal => LevelFilter::ERROR,
    };
    let only_fatal = level == LogLevel::Fatal;
    use tracing_subscriber::layer::SubscriberExt;
    let filter = tracing_subscriber::filter::filter_fn(move |m| !only_fatal || m.target() == FATAL);
    let builder = tracing_subscriber::fmt()
        .with_max_level(max)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => {
            let subscriber = builder.event_format(GoFormat {
                prefix: prefix.to_owned(),
            });
            tracing::subscriber::set_global_default(subscriber.finish().with(filter))
        }
        LogFormat::Json => {
            let subscriber = builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_target(false);
            tracing::subscriber::set_global_default(subscriber.finish().with(filter))
        }
    };
}
