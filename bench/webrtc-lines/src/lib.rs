//! What both binaries share: the round loop, the process figures, and the live-handler count.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Rounds run before the start figures are taken, so one-time allocations (runtime threads,
/// allocator arenas, lazily built statics) do not count as growth.
pub const WARM_UP: usize = 20;
pub const REPORT_EVERY: usize = 50;
/// Time given to background tasks to finish tearing a closed connection down before a sample.
pub const SETTLE: Duration = Duration::from_millis(500);
/// Upper bound for each step of a round (gathering, connecting, first packet).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

pub const PACKETS: u16 = 50;
pub const PAYLOAD_BYTES: usize = 1000;
pub const VP8_PAYLOAD_TYPE: u8 = 96;

/// Objects holding a connection's event callbacks that have been built and not yet dropped.
static LIVE_HANDLERS: AtomicUsize = AtomicUsize::new(0);

/// Put one in whatever webrtc-rs keeps for the connection's callbacks: when webrtc-rs frees
/// the connection's internals, that object (and this token) is dropped.
pub struct LiveToken(());

impl LiveToken {
    pub fn new() -> Self {
        LIVE_HANDLERS.fetch_add(1, Ordering::SeqCst);
        LiveToken(())
    }
}

impl Drop for LiveToken {
    fn drop(&mut self) {
        LIVE_HANDLERS.fetch_sub(1, Ordering::SeqCst);
    }
}

pub fn live_handlers() -> usize {
    LIVE_HANDLERS.load(Ordering::SeqCst)
}

pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A VP8-looking payload: the bytes are not a valid frame, which does not matter to RTP.
pub fn payload(seq: u16) -> bytes::Bytes {
    let mut data = vec![0u8; PAYLOAD_BYTES];
    data[0] = 0x10; // VP8 descriptor: start of partition
    data[1..3].copy_from_slice(&seq.to_be_bytes());
    bytes::Bytes::from(data)
}

pub fn rounds_from_args() -> usize {
    std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(300)
}

/// For a round to call while its two connections are up: proves the count sees live handlers,
/// so a zero at the end means "freed", not "never counted".
pub fn check_counted() -> Result<(), String> {
    match live_handlers() {
        n if n >= 2 => Ok(()),
        n => Err(format!("only {n} live handlers counted while two connections are up")),
    }
}

/// Runs `rounds` rounds, printing figures every `REPORT_EVERY` rounds and a summary line.
pub async fn run<F, Fut>(line: &str, rounds: usize, mut round: F)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut busy = Duration::ZERO; // time spent in rounds, without the sampling pauses
    let fds_before = open_fds();
    let mut start: Option<(usize, u64)> = None;
    println!("{line}: {rounds} rounds, warm-up {WARM_UP}, figures sampled {} ms after a round", SETTLE.as_millis());

    for i in 1..=rounds {
        let t = Instant::now();
        let result = round(i).await;
        busy += t.elapsed();
        if let Err(e) = result {
            eprintln!("{line}: round {i} failed: {e}");
            std::process::exit(1);
        }
        if i == WARM_UP.min(rounds) {
            tokio::time::sleep(SETTLE).await;
            start = Some((open_fds(), rss_kib()));
        }
        if i % REPORT_EVERY == 0 || i == rounds {
            tokio::time::sleep(SETTLE).await;
            println!(
                "{line}: round {i:>4}  fds {:>4}  rss {:>7} KiB  handlers alive {:>4} (of {} built)",
                open_fds(),
                rss_kib(),
                live_handlers(),
                2 * i
            );
        }
    }

    let seconds = busy.as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (fds0, rss0) = start.unwrap_or((fds_before, 0));
    println!(
        "RESULT {line}: rounds {rounds}  seconds {seconds:.1}  fds {fds0}->{}  rss {rss0}->{} KiB  \
         handlers alive at end {} of {} (2 s after the last close; fds before round 1: {fds_before})",
        open_fds(),
        rss_kib(),
        live_handlers(),
        2 * rounds
    );
}
