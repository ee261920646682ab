//! Logs: `tracing` events (ours, and webrtc-rs's `log` records) filtered by a level in
//! `RUST_LOG` syntax, written one line each to stderr, or handed to a callback instead.
//!
//! A tracing subscriber is process-wide by nature, so this is too: the first `MediaServer`
//! installs it, and a later one's `logLevel` or `onLog` replaces the current ones.
//! Nothing on the media path logs per packet.

use std::sync::{Arc, OnceLock, RwLock};

use serde::Serialize;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::sfu::error::{SfuError, SfuResult};

/// The filter when neither an option nor `MEDIASERVER_LOG` says otherwise: our warnings and
/// errors, and only errors of webrtc-rs (`rtc*`, `webrtc*`), whose warnings are mostly benign
/// chatter of connection setup (STUN before the remote description, RTP before DTLS is up).
pub const DEFAULT_LEVEL: &str = "warn,rtc=error,webrtc=error";
pub const LEVEL_VARIABLE: &str = "MEDIASERVER_LOG";

/// One log event, as a callback receives it.
#[derive(Debug, Clone, Serialize)]
pub struct LogRecord {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: &'static str,
    /// The module that logged, e.g. `mediaserver_rs::sfu::room` or `webrtc_ice::agent`.
    pub target: String,
    pub message: String,
    /// The event's fields (`room`, `user`, `producer`, ...).
    pub fields: Map<String, Value>,
    /// Milliseconds since the Unix epoch.
    pub time: f64,
}

pub type LogSink = Arc<dyn Fn(LogRecord) + Send + Sync>;

struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    sink: Arc<RwLock<Option<LogSink>>>,
}

static LOGGING: OnceLock<Logging> = OnceLock::new();

fn parse_filter(spec: &str) -> SfuResult<EnvFilter> {
    EnvFilter::builder()
        .parse(spec)
        .map_err(|e| SfuError::InvalidArgument(format!("logLevel '{spec}' is not a RUST_LOG filter: {e}")))
}

/// Installs the subscriber on first use; then sets the level (`None`: keep the current one, or
/// on first use `MEDIASERVER_LOG`, else warnings and errors) and the sink (`None`: stderr).
pub fn configure(level: Option<&str>, sink: Option<LogSink>) -> SfuResult<()> {
    let filter = level.map(parse_filter).transpose()?;
    let mut installed = None;
    let logging = LOGGING.get_or_init(|| {
        let initial = std::env::var(LEVEL_VARIABLE)
            .ok()
            .and_then(|spec| parse_filter(&spec).ok())
            .unwrap_or_else(|| EnvFilter::new(DEFAULT_LEVEL));
        installed = Some(log_level_of(&initial));
        let (filter_layer, filter) = reload::Layer::new(initial);
        let sink: Arc<RwLock<Option<LogSink>>> = Arc::default();
        let to_stderr = sink.clone();
        let stderr = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_filter(filter_fn(move |_| to_stderr.read().map(|s| s.is_none()).unwrap_or(true)));
        // Fails only if the host process installed its own subscriber first; then it wins.
        let _ = Registry::default().with(filter_layer).with(stderr).with(SinkLayer { sink: sink.clone() }).try_init();
        Logging { filter, sink }
    });
    let level = filter.as_ref().map(log_level_of).or(installed);
    if let Some(filter) = filter {
        logging.filter.reload(filter).map_err(|e| SfuError::internal("setting the log level", e))?;
    }
    // The `log` macros (webrtc-rs logs through them) check this level before they build a
    // record. It must be the filter's own: tracing's global level says TRACE here (the sink
    // layers' per-layer filters give no hint), and then every `debug!` per packet built a record
    // and routed it through tracing only to be dropped (5.9 % of the loop's CPU in the bench).
    if let Some(level) = level {
        log::set_max_level(level);
    }
    if sink.is_some() {
        *logging.sink.write().unwrap_or_else(|e| e.into_inner()) = sink;
    }
    Ok(())
}

/// The most verbose level `filter` lets through, for the `log` crate.
fn log_level_of(filter: &EnvFilter) -> log::LevelFilter {
    // No hint: the filter may let anything through.
    let Some(hint) = <EnvFilter as Layer<Registry>>::max_level_hint(filter) else { return log::LevelFilter::Trace };
    match hint.into_level() {
        None => log::LevelFilter::Off,
        Some(Level::ERROR) => log::LevelFilter::Error,
        Some(Level::WARN) => log::LevelFilter::Warn,
        Some(Level::INFO) => log::LevelFilter::Info,
        Some(Level::DEBUG) => log::LevelFilter::Debug,
        Some(Level::TRACE) => log::LevelFilter::Trace,
    }
}

struct SinkLayer {
    sink: Arc<RwLock<Option<LogSink>>>,
}

impl<S: Subscriber> Layer<S> for SinkLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Ok(sink) = self.sink.read() else { return };
        let Some(sink) = sink.as_ref() else { return };
        let mut fields = FieldCollector::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        // Records bridged from the `log` crate carry their real target in a field.
        let target = fields.0.remove("log.target").and_then(|v| v.as_str().map(str::to_owned));
        fields.0.retain(|k, _| !k.starts_with("log."));
        let message = fields.0.remove("message").map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        });
        sink(LogRecord {
            level: level_name(*metadata.level()),
            target: target.unwrap_or_else(|| metadata.target().to_owned()),
            message: message.unwrap_or_default(),
            fields: fields.0,
            time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        });
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

#[derive(Default)]
struct FieldCollector(Map<String, Value>);

impl Visit for FieldCollector {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn the_log_crate_gets_the_filters_own_level() {
        let level = |spec: &str| log_level_of(&EnvFilter::new(spec));
        assert_eq!(level("warn,rtc=error,webrtc=error"), log::LevelFilter::Warn);
        assert_eq!(level("error,mediaserver_rs=debug"), log::LevelFilter::Debug);
        assert_eq!(level("trace"), log::LevelFilter::Trace);
        assert_eq!(level("off"), log::LevelFilter::Off);
    }

    #[test]
    fn bad_levels_are_invalid_arguments() {
        assert_eq!(parse_filter("room=[").unwrap_err().code(), "INVALID_ARGUMENT");
        assert!(parse_filter("debug,webrtc=warn").is_ok());
    }

    #[test]
    fn events_reach_the_sink_with_their_fields_and_the_level_filters_them() {
        let seen: Arc<Mutex<Vec<LogRecord>>> = Arc::default();
        let into = seen.clone();
        configure(Some("info"), Some(Arc::new(move |r| into.lock().unwrap().push(r)))).unwrap();
        tracing::info!(room = "r1", user = %"u2", count = 3, "a user joined");
        tracing::debug!(room = "r1", "filtered out at info");
        let records = seen.lock().unwrap().clone();
        let record = records.iter().find(|r| r.message == "a user joined").expect("the info event");
        assert_eq!(record.level, "info");
        assert_eq!(record.fields["room"], "r1");
        assert_eq!(record.fields["user"], "u2");
        assert_eq!(record.fields["count"], 3);
        assert!(!records.iter().any(|r| r.message.contains("filtered out")));
        assert_eq!(configure(Some("x=[["), None).unwrap_err().code(), "INVALID_ARGUMENT");
    }
}
