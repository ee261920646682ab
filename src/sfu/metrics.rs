//! `metrics()`: the server's counts, and the process's CPU and memory, in the Prometheus text
//! exposition format (version 0.0.4). A formatter of our own rather than a Prometheus client
//! library: every figure is already counted (atomics in the core, Node's own process figures
//! from the binding), so all that is left is writing them out, which is what this does.

use std::fmt::Write;

use super::events::{ConnectionState, Direction};
use super::stats::{ConnectionStateCounts, Feedback};
use super::ServerStats;

/// The `Content-Type` of what [`render`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        }
    }
}

/// A sample's value: counts print as integers, measurements as floats (`NaN`, `+Inf`, `-Inf`
/// as the format spells them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Count(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Count(v)
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Count(v as u64)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Value::Count(v) => write!(f, "{v}"),
            Value::Float(v) if v.is_nan() => f.write_str("NaN"),
            Value::Float(v) if v == f64::INFINITY => f.write_str("+Inf"),
            Value::Float(v) if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            Value::Float(v) => write!(f, "{v}"),
        }
    }
}

/// Text in the exposition format, one metric family at a time.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    /// The family being written: samples must carry its name (with no suffix: no histograms
    /// or summaries are written here).
    current: Option<&'static str>,
}

fn valid_name(name: &str, colon: bool) -> bool {
    let mut chars = name.chars();
    let first_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    chars.next().is_some_and(first_ok) && chars.all(|c| first_ok(c) || c.is_ascii_digit())
}

impl Exposition {
    /// Starts a family: its `# HELP` and `# TYPE` lines. Names are ours, so a bad one is a bug.
    pub fn family(&mut self, name: &'static str, kind: MetricType, help: &str) -> &mut Self {
        assert!(valid_name(name, true), "not a metric name: {name:?}");
        self.current = Some(name);
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        let _ = writeln!(self.out, "\n# TYPE {name} {}", kind.as_str());
        self
    }

    /// One sample of the current family. Label values are escaped; label names are ours.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Value>) -> &mut Self {
        let name = self.current.expect("a sample belongs to a family: call family() first");
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                assert!(valid_name(label, false) && !label.starts_with("__"), "not a label name: {label:?}");
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", value.into());
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &'static str, kind: MetricType, help: &str, value: impl Into<Value>) -> &mut Self {
        self.family(name, kind, help).sample(&[], value)
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// The process's own figures. CPU time and memory come from Node (`process.cpuUsage()`,
/// `process.memoryUsage()`), which measures them the same way on every platform; what Node does
/// not give is read from the OS where it can be ([`ProcessSample::read_os`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessSample {
    /// Microseconds, as `process.cpuUsage()` counts them.
    pub cpu_user_micros: u64,
    pub cpu_system_micros: u64,
    /// Seconds since the Unix epoch.
    pub start_time_seconds: f64,
    pub resident_memory_bytes: u64,
    /// The JS heap (V8's), as Node reports it.
    pub heap_total_bytes: Option<u64>,
    pub heap_used_bytes: Option<u64>,
    pub external_memory_bytes: Option<u64>,
    /// Linux: `/proc/self/stat`.
    pub virtual_memory_bytes: Option<u64>,
    /// Linux: the entries of `/proc/self/fd`.
    pub open_fds: Option<u64>,
    /// Unix: the soft `RLIMIT_NOFILE`.
    pub max_fds: Option<u64>,
}

impl ProcessSample {
    /// Fills in what the OS tells about this process and Node does not: virtual memory and
    /// file descriptors. Leaves a figure out when it cannot be read.
    pub fn read_os(&mut self) {
        #[cfg(target_os = "linux")]
        {
            self.virtual_memory_bytes = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| vsize_of_stat(&s));
            // One of the entries is the directory's own descriptor, open while it is read.
            self.open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count().saturating_sub(1) as u64);
        }
        #[cfg(unix)]
        {
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: getrlimit writes the struct it is given, nothing else.
            if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 && limit.rlim_cur != libc::RLIM_INFINITY {
                // rlim_t is u64 on 64-bit Linux and macOS, narrower elsewhere.
                #[allow(clippy::unnecessary_cast)]
                let soft = limit.rlim_cur as u64;
                self.max_fds = Some(soft);
            }
        }
    }
}

/// The `vsize` field (the 23rd) of a `/proc/<pid>/stat` line. The command name (the 2nd, in
/// parentheses) may hold spaces and parentheses itself, so fields are counted after its last `)`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn vsize_of_stat(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at the 3rd field (the state).
    rest.split_ascii_whitespace().nth(23 - 3)?.parse().ok()
}

/// What `metrics()` reports of the server, read at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerSnapshot {
    pub stats: ServerStats,
    pub states: ConnectionStateCounts,
    /// Indexed like [`Feedback::ALL`].
    pub feedback: [u64; Feedback::ALL.len()],
}

fn feedback_metric(kind: Feedback) -> (&'static str, &'static str) {
    match kind {
        Feedback::NackReceived => (
            "mediaserver_nacks_received_total",
            "RTCP NACKs (retransmission requests) received from consumers, on downstream connections.",
        ),
        Feedback::PliReceived => {
            ("mediaserver_plis_received_total", "RTCP PLIs (keyframe requests) received from consumers, on downstream connections.")
        }
        Feedback::FirReceived => {
            ("mediaserver_firs_received_total", "RTCP FIRs (keyframe requests) received from consumers, on downstream connections.")
        }
        Feedback::NackSent => {
            ("mediaserver_nacks_sent_total", "RTCP NACKs (retransmission requests) sent to producers, on upstream connections.")
        }
        Feedback::PliSent => ("mediaserver_plis_sent_total", "RTCP PLIs (keyframe requests) sent to producers, on upstream connections."),
    }
}

/// The whole exposition: the server's metrics, then the process's when there is a sample.
pub fn render(server: &ServerSnapshot, process: Option<&ProcessSample>) -> String {
    use MetricType::{Counter, Gauge};
    let mut e = Exposition::default();
    let s = &server.stats;
    e.single("mediaserver_rooms", Gauge, "Rooms the server holds.", s.rooms);
    e.single("mediaserver_users", Gauge, "Users in the server's rooms.", s.users);

    e.family(
        "mediaserver_connections",
        Gauge,
        "Connections not yet closed, by direction (upstream: from a producer; downstream: to a consumer) and last reported state.",
    );
    for d in Direction::ALL {
        for state in ConnectionState::ALL.into_iter().filter(|s| *s != ConnectionState::Closed) {
            e.sample(&[("direction", d.as_str()), ("state", state.as_str())], server.states.now[d.index()][state.index()]);
        }
    }
    e.family(
        "mediaserver_connection_state_changes_total",
        Counter,
        "Times a connection entered a state, by direction and state (state=\"new\": connections made).",
    );
    for d in Direction::ALL {
        for state in ConnectionState::ALL {
            e.sample(&[("direction", d.as_str()), ("state", state.as_str())], server.states.entered[d.index()][state.index()]);
        }
    }
    e.single(
        "mediaserver_live_connections",
        Gauge,
        "Peer connections still allocated in the process; a closed one counts until the WebRTC stack frees it.",
        s.live_connections,
    );
    e.single("mediaserver_ports_in_use", Gauge, "Media ports leased to connections (portRange or OS-picked ports).", s.ports_in_use);
    e.single(
        "mediaserver_forwarded_packets_total",
        Counter,
        "RTP packets written to consumers.",
        s.forwarded_packets,
    );
    e.single(
        "mediaserver_forwarded_bytes_total",
        Counter,
        "Bytes of RTP (header and payload) written to consumers.",
        s.forwarded_bytes,
    );
    for kind in Feedback::ALL {
        let (name, help) = feedback_metric(kind);
        e.single(name, Counter, help, server.feedback[kind as usize]);
    }

    if let Some(p) = process {
        // Summed in microseconds, then divided: the seconds print as short as they are.
        let seconds = |micros: u64| micros as f64 / 1e6;
        e.single("process_cpu_user_seconds_total", Counter, "Total user CPU time spent in seconds.", seconds(p.cpu_user_micros));
        e.single("process_cpu_system_seconds_total", Counter, "Total system CPU time spent in seconds.", seconds(p.cpu_system_micros));
        e.single(
            "process_cpu_seconds_total",
            Counter,
            "Total user and system CPU time spent in seconds.",
            seconds(p.cpu_user_micros + p.cpu_system_micros),
        );
        e.single("process_start_time_seconds", Gauge, "Start time of the process since unix epoch in seconds.", p.start_time_seconds);
        e.single("process_resident_memory_bytes", Gauge, "Resident memory size in bytes.", p.resident_memory_bytes);
        if let Some(v) = p.virtual_memory_bytes {
            e.single("process_virtual_memory_bytes", Gauge, "Virtual memory size in bytes.", v);
        }
        if let Some(v) = p.open_fds {
            e.single("process_open_fds", Gauge, "Number of open file descriptors.", v);
        }
        if let Some(v) = p.max_fds {
            e.single("process_max_fds", Gauge, "Maximum number of open file descriptors.", v);
        }
        if let Some(v) = p.heap_total_bytes {
            e.single("nodejs_heap_size_total_bytes", Gauge, "Process heap size from Node.js in bytes.", v);
        }
        if let Some(v) = p.heap_used_bytes {
            e.single("nodejs_heap_size_used_bytes", Gauge, "Process heap size used from Node.js in bytes.", v);
        }
        if let Some(v) = p.external_memory_bytes {
            e.single("nodejs_external_memory_bytes", Gauge, "Node.js external memory size in bytes.", v);
        }
    }
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// A strict reader of the text format, for the tests: every family has HELP then TYPE before
    /// its samples, every sample line is `name{labels} value` of the family being read, no
    /// family or series repeats. Returns series (`name{labels}`) to values.
    fn parse(text: &str) -> BTreeMap<String, f64> {
        assert!(text.ends_with('\n'), "the last line ends with a line feed");
        let mut series = BTreeMap::new();
        let mut families = BTreeSet::new();
        let mut help: Option<String> = None;
        let mut current: Option<String> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(families.insert(name.clone()), "family {name} appears twice");
                help = Some(name);
                current = None;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(help.as_deref(), Some(name), "TYPE {name} right after its HELP");
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                assert_eq!(name.ends_with("_total"), kind == "counter", "counters, and only they, end in _total: {line}");
                current = Some(name.to_string());
            } else {
                let family = current.as_deref().unwrap_or_else(|| panic!("a sample before its TYPE: {line}"));
                let (key, value) = line.rsplit_once(' ').unwrap();
                let name = key.split('{').next().unwrap();
                assert_eq!(name, family, "{line}");
                if let Some(labels) = key.strip_prefix(name).filter(|l| !l.is_empty()) {
                    assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                }
                let value: f64 = match value {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    v => v.parse().unwrap_or_else(|_| panic!("not a value: {line}")),
                };
                assert!(series.insert(key.to_string(), value).is_none(), "series {key} twice");
            }
        }
        series
    }

    fn snapshot() -> ServerSnapshot {
        let mut states = ConnectionStateCounts::default();
        states.now[Direction::Upstream.index()][ConnectionState::Connected.index()] = 2;
        states.now[Direction::Downstream.index()][ConnectionState::Failed.index()] = 1;
        states.entered[Direction::Downstream.index()][ConnectionState::Closed.index()] = 7;
        ServerSnapshot {
            stats: ServerStats {
                rooms: 1,
                users: 3,
                upstream_connections: 2,
                downstream_connections: 1,
                live_connections: 4,
                ports_in_use: 3,
                forwarded_packets: 12_345,
                forwarded_bytes: 9_876_543_210,
                udp_port: None,
            },
            states,
            feedback: [5, 4, 3, 2, 1],
        }
    }

    #[test]
    fn the_server_s_figures_under_prometheus_names() {
        let text = render(&snapshot(), None);
        let series = parse(&text);
        let get = |key: &str| *series.get(key).unwrap_or_else(|| panic!("no {key} in\n{text}"));
        assert_eq!(get("mediaserver_rooms"), 1.0);
        assert_eq!(get("mediaserver_users"), 3.0);
        assert_eq!(get(r#"mediaserver_connections{direction="upstream",state="connected"}"#), 2.0);
        assert_eq!(get(r#"mediaserver_connections{direction="downstream",state="failed"}"#), 1.0);
        assert_eq!(get(r#"mediaserver_connections{direction="downstream",state="new"}"#), 0.0, "every state, zero included");
        assert!(!text.contains(r#"mediaserver_connections{direction="upstream",state="closed"}"#), "closed ones are not open");
        assert_eq!(get(r#"mediaserver_connection_state_changes_total{direction="downstream",state="closed"}"#), 7.0);
        assert_eq!(get("mediaserver_live_connections"), 4.0);
        assert_eq!(get("mediaserver_ports_in_use"), 3.0);
        assert_eq!(get("mediaserver_forwarded_packets_total"), 12_345.0);
        assert!(text.contains("\nmediaserver_forwarded_bytes_total 9876543210\n"), "counts print as integers");
        assert_eq!(get("mediaserver_nacks_received_total"), 5.0);
        assert_eq!(get("mediaserver_plis_received_total"), 4.0);
        assert_eq!(get("mediaserver_firs_received_total"), 3.0);
        assert_eq!(get("mediaserver_nacks_sent_total"), 2.0);
        assert_eq!(get("mediaserver_plis_sent_total"), 1.0);
        assert_eq!(series.len(), 2 + 10 + 12 + 4 + 5);
        assert!(!text.contains("process_"), "no process figures without a sample");
        assert!(text.starts_with("# HELP mediaserver_rooms Rooms the server holds.\n# TYPE mediaserver_rooms gauge\nmediaserver_rooms 1\n"), "{text}");
    }

    #[test]
    fn the_process_figures_under_the_names_prometheus_clients_use() {
        let process = ProcessSample {
            cpu_user_micros: 55_411,
            cpu_system_micros: 3_957,
            start_time_seconds: 1_764_000_000.5,
            resident_memory_bytes: 50_000_000,
            heap_total_bytes: Some(8_000_000),
            heap_used_bytes: Some(6_000_000),
            external_memory_bytes: Some(1_000),
            virtual_memory_bytes: Some(900_000_000),
            open_fds: Some(42),
            max_fds: Some(1024),
        };
        let text = render(&snapshot(), Some(&process));
        let series = parse(&text);
        assert_eq!(series["process_cpu_user_seconds_total"], 0.055411);
        assert_eq!(series["process_cpu_system_seconds_total"], 0.003957);
        assert!(text.contains("\nprocess_cpu_seconds_total 0.059368\n"), "no float noise in a sum: {text}");
        assert_eq!(series["process_start_time_seconds"], 1_764_000_000.5);
        assert_eq!(series["process_resident_memory_bytes"], 50_000_000.0);
        assert_eq!(series["process_virtual_memory_bytes"], 900_000_000.0);
        assert_eq!(series["process_open_fds"], 42.0);
        assert_eq!(series["process_max_fds"], 1024.0);
        assert_eq!(series["nodejs_heap_size_total_bytes"], 8_000_000.0);
        assert_eq!(series["nodejs_heap_size_used_bytes"], 6_000_000.0);
        assert_eq!(series["nodejs_external_memory_bytes"], 1_000.0);
        // What the OS does not give is left out, not written as 0.
        let bare = ProcessSample { cpu_user_micros: 1, ..Default::default() };
        let series = parse(&render(&snapshot(), Some(&bare)));
        assert!(series.contains_key("process_resident_memory_bytes"));
        assert!(!series.contains_key("process_open_fds") && !series.contains_key("nodejs_heap_size_total_bytes"));
    }

    #[test]
    fn help_and_label_values_are_escaped_and_values_spelled_as_the_format_wants() {
        let mut e = Exposition::default();
        e.family("x_total", MetricType::Counter, "a \\ back\nslash")
            .sample(&[("who", "a \"quoted\" \\ name\non two lines")], 1u64)
            .sample(&[("who", "plain"), ("kind", "")], 0.5);
        e.family("y", MetricType::Gauge, "values").sample(&[("v", "nan")], f64::NAN).sample(&[("v", "inf")], f64::INFINITY).sample(
            &[("v", "-inf")],
            f64::NEG_INFINITY,
        );
        e.single("z", MetricType::Gauge, "tiny and huge", 1e-7).single("w", MetricType::Gauge, "big", 1.5e300);
        let text = e.finish();
        assert_eq!(
            text.lines().take(4).collect::<Vec<_>>(),
            [
                r"# HELP x_total a \\ back\nslash",
                "# TYPE x_total counter",
                r#"x_total{who="a \"quoted\" \\ name\non two lines"} 1"#,
                r#"x_total{who="plain",kind=""} 0.5"#,
            ]
        );
        assert!(text.contains("y{v=\"nan\"} NaN\ny{v=\"inf\"} +Inf\ny{v=\"-inf\"} -Inf\n"), "{text}");
        let floats: Vec<f64> = text.lines().filter(|l| l.starts_with("z ") || l.starts_with("w ")).map(|l| l[2..].parse().unwrap()).collect();
        assert_eq!(floats, [1e-7, 1.5e300], "floats print in a form Go's ParseFloat reads back exactly");
    }

    #[test]
    #[should_panic(expected = "not a metric name")]
    fn a_bad_metric_name_is_a_bug() {
        Exposition::default().family("1abc", MetricType::Gauge, "");
    }

    #[test]
    fn vsize_is_the_23rd_field_whatever_the_command_name_holds() {
        let stat = "4242 (node (main) x) S 1 4242 4242 0 -1 4194560 1 0 0 0 10 5 0 0 20 0 11 0 12345 987654321 2500 18446744073709551615";
        assert_eq!(vsize_of_stat(stat), Some(987_654_321));
        assert_eq!(vsize_of_stat("garbage"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_os_figures_of_this_process_are_read() {
        let mut sample = ProcessSample::default();
        sample.read_os();
        assert!(sample.virtual_memory_bytes.is_some_and(|v| v > 1_000_000), "{sample:?}");
        assert!(sample.open_fds.is_some_and(|n| n >= 3), "stdin, stdout, stderr at least: {sample:?}");
        assert!(sample.max_fds.is_none_or(|m| m >= sample.open_fds.unwrap()));
    }
}
