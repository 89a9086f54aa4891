//! The process's log: one subscriber over our events and every dependency's (rmcp,
//! reqwest, hyper, async-openai, sqlx, oauth2), which
//! - redacts every secret it knows of (the process's, and each tick's credentials as the
//!   tick learns them: `redact::register`) from every line, whoever wrote it;
//! - escapes control characters in field values, so text from outside (a product's error,
//!   a model's answer) can neither forge a line nor reach the terminal as an escape;
//! - caps each field's length, so an 8 MB body a dependency prints is not an 8 MB line;
//! - writes colour only to a terminal (and never with `NO_COLOR`), and under systemd
//!   (`JOURNAL_STREAM`) leaves out the timestamp journald keeps and prefixes each line
//!   with its syslog priority (`<3>`…`<7>`), which journald reads as the entry's level.
//!
//! - re-emits the WARN and ERROR lines of the MCP and OpenAI client libraries at DEBUG
//!   under our own target: each failure they log is one our client reports itself, in
//!   words and with the tick's context, so theirs (`worker quit with fatal: … when
//!   Client(reqwest::Error { … })`, or `sse client event stream terminated with error:
//!   Err(Client(reqwest::Error { kind: Status(404) … }))` when a product drops the
//!   session's event stream at the tick's end) is detail for whoever asks for it, not a
//!   second alarm.
//!
//! The JSON format keeps its shape: its strings are redacted and capped, and JSON
//! escaping already keeps control characters out of the line.

use std::io::IsTerminal as _;

use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{Env, LogConfig, LogFormat};

/// Whether lines show the spans they were written in: the JSON format does (a tick's
/// lines carry its `trace_id` and `span_id` under `span`); text lines stay as they were.
static SPANS_IN_LINES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a tick should open a log span with its trace ids (see [`SPANS_IN_LINES`]).
pub fn spans_in_lines() -> bool {
    SPANS_IN_LINES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Longest field value a line carries, in characters.
pub const FIELD_CHARS: usize = 4096;

/// Dependencies that print message bodies (tool results a product may echo secrets into,
/// error bodies that echo request headers) are capped at these levels, whatever the
/// filter says. The caps only ever lower a level: both filters must pass (a cap added as
/// a directive would raise `rmcp` to info under `level = "warn"`, and formatting those
/// lines cost a tenth of a tick's CPU).
const BODY_PRINTING_TARGETS: [(&str, tracing::Level); 3] = [
    ("rmcp", tracing::Level::INFO),
    ("async_openai", tracing::Level::ERROR),
    ("sqlx::query", tracing::Level::INFO),
];

/// Dependencies whose WARN and ERROR lines repeat what our own reports say (see the
/// module doc).
const DEMOTED: [&str; 2] = ["rmcp", "async_openai"];

fn demoted(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() <= tracing::Level::WARN
        && DEMOTED.iter().any(|target| {
            meta.target()
                .strip_prefix(target)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
}

/// Re-emits a demoted event at DEBUG under `persona_runner::deps`, its fields in one text.
struct Demote;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Demote {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if !self.0.is_empty() {
                    self.0.push(' ');
                }
                if field.name() == "message" {
                    self.0.push_str(&format!("{value:?}"));
                } else {
                    self.0.push_str(&format!("{}={value:?}", field.name()));
                }
            }
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        let from = event.metadata().target();
        tracing::debug!(target: "persona_runner::deps", from, "{}", text.0);
    }
}

/// How lines are written, from the config and the environment the process runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    pub format: LogFormat,
    /// ANSI colour: only on a terminal, and not with `NO_COLOR`.
    pub ansi: bool,
    /// Under systemd's journal: no timestamp, a syslog priority prefix instead.
    pub journal: bool,
}

impl Style {
    /// The style for stderr as it is now.
    pub fn detect(config: &LogConfig, env: &Env) -> Self {
        let no_color = env.get("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            format: config.format,
            ansi: std::io::stderr().is_terminal() && !no_color,
            journal: env.get("JOURNAL_STREAM").is_some_and(|v| !v.is_empty()),
        }
    }
}

/// Installs the process's subscriber. The level filter is `RUST_LOG` when set, else
/// `log.level`.
pub fn init(config: &LogConfig, env: &Env) {
    let style = Style::detect(config, env);
    let filter = env
        .get("RUST_LOG")
        .and_then(|directive| EnvFilter::try_new(directive).ok())
        .unwrap_or_else(|| EnvFilter::new(&config.level));
    let caps = BODY_PRINTING_TARGETS.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |caps, (target, level)| caps.with_target(*target, *level),
    );
    let filter = filter.and(caps).and(filter_fn(|meta| !demoted(meta)));
    let writer = SafeStderr { style };
    let registry = tracing_subscriber::registry();
    // Added after the fmt layer, so it sees each event after that layer did: its re-emitted
    // event is dispatched afresh, which resets the per-layer filter state of the first.

    match (style.format, style.journal) {
        (LogFormat::Json, _) => {
            SPANS_IN_LINES.store(true, std::sync::atomic::Ordering::Relaxed);
            let layer = tracing_subscriber::fmt::layer().json().with_writer(writer);
            registry
                .with(layer.with_filter(filter))
                .with(Demote.with_filter(filter_fn(demoted)))
                .init();
        }
        (LogFormat::Text, journal) => {
            let fields = tracing_subscriber::fmt::format::debug_fn(write_field).delimited(" ");
            let layer = tracing_subscriber::fmt::layer()
                .fmt_fields(fields)
                .with_ansi(style.ansi)
                .with_writer(writer);
            if journal {
                let layer = layer.without_time();
                registry
                    .with(layer.with_filter(filter))
                    .with(Demote.with_filter(filter_fn(demoted)))
                    .init();
            } else {
                registry
                    .with(layer.with_filter(filter))
                    .with(Demote.with_filter(filter_fn(demoted)))
                    .init();
            }
        }
    }
}

/// One field of a text line: `name=value` (the message alone), its value's control
/// characters escaped and its length capped.
fn write_field(
    writer: &mut tracing_subscriber::fmt::format::Writer<'_>,
    field: &tracing::field::Field,
    value: &dyn std::fmt::Debug,
) -> std::fmt::Result {
    let raw = format!("{value:?}");
    let plain = crate::redact::plain_debug(&raw);
    let capped = crate::redact::cap(&plain, FIELD_CHARS);
    let text = crate::redact::escape_controls(&capped);
    if field.name() == "message" {
        write!(writer, "{text}")
    } else {
        write!(writer, "{}={text}", field.name())
    }
}

/// Stderr, through the redaction of every line (and, for the journal, its priority).
#[derive(Clone, Copy, Debug)]
struct SafeStderr {
    style: Style,
}

impl<'a> MakeWriter<'a> for SafeStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            style: self.style,
            level: None,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        LineWriter {
            style: self.style,
            level: Some(*meta.level()),
        }
    }
}

/// Writes one formatted event (the formatter hands over a whole line at once).
pub struct LineWriter {
    style: Style,
    level: Option<tracing::Level>,
}

impl std::io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let mut line = match self.style.format {
            LogFormat::Json => crate::redact::json_line(&text, FIELD_CHARS),
            LogFormat::Text => crate::redact::redact_known(&text).into_owned(),
        };
        if self.style.journal && self.style.format == LogFormat::Text {
            line = format!("<{}>{}", priority(self.level), line.trim_start());
        }
        std::io::stderr().lock().write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The syslog priority of a level, as journald reads it from a `<N>` prefix.
fn priority(level: Option<tracing::Level>) -> u8 {
    match level {
        Some(tracing::Level::ERROR) => 3,
        Some(tracing::Level::WARN) => 4,
        Some(tracing::Level::INFO) | None => 6,
        Some(tracing::Level::DEBUG | tracing::Level::TRACE) => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journald_priorities_follow_the_level() {
        assert_eq!(priority(Some(tracing::Level::ERROR)), 3);
        assert_eq!(priority(Some(tracing::Level::WARN)), 4);
        assert_eq!(priority(Some(tracing::Level::INFO)), 6);
        assert_eq!(priority(Some(tracing::Level::TRACE)), 7);
    }

    #[test]
    fn the_client_libraries_warnings_and_errors_are_demoted_and_ours_are_not() {
        use std::sync::{Arc, Mutex};
        struct Seen(Arc<Mutex<Vec<(String, bool)>>>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
            fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
                let meta = event.metadata();
                let line = format!("{} {}", meta.level(), meta.target());
                self.0.lock().unwrap().push((line, demoted(meta)));
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Seen(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "rmcp::transport::streamable_http_client", "sse client event stream terminated");
            tracing::error!(target: "rmcp", "worker quit with fatal");
            tracing::info!(target: "rmcp::service", "initialized");
            tracing::warn!(target: "async_openai::error", "failed deserialization");
            tracing::warn!(target: "rmcpx", "another crate");
            tracing::warn!(target: "persona_runner::tick", "our own");
        });
        let demoted: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, d)| *d)
            .map(|(l, _)| l.clone())
            .collect();
        assert_eq!(
            demoted,
            [
                "WARN rmcp::transport::streamable_http_client",
                "ERROR rmcp",
                "WARN async_openai::error"
            ]
        );
    }
}
