//! How much one consumer's link carries, from the loss its receiver reports tell (RFC 3550
//! fraction lost), in the manner of GCC's loss-based controller: heavy loss cuts the estimate
//! to what actually got through, light loss lets it grow by 8 % a second, and in between it
//! holds. A consumer whose link never lost anything has no estimate: nothing limits it.
//!
//! The loss comes from two places, taken over windows of a second ([`LossWindow`]): the
//! packets the consumer asks to have again (its NACKs, against what was sent), and the fraction
//! lost of its receiver reports. Both are needed: libwebrtc, under heavy loss, sends NACKs so
//! often that its periodic receiver reports are pushed back for many seconds.
//!
//! Growing back is the probe: when the estimate passes a higher layer's rate the consumer is
//! given that layer, and if the link still cannot carry it the next report cuts the estimate
//! again. Each cut soon after another doubles the wait before growing (2 s up to 30 s), so a
//! link that stays bad is tried less and less often.

use std::time::{Duration, Instant};

/// Loss above this cuts the estimate.
const HIGH_LOSS: f64 = 0.10;
/// Loss under this lets the estimate grow.
const LOW_LOSS: f64 = 0.02;
/// Growth per second under light loss.
const GROWTH: f64 = 1.08;
/// Of what got through, what a cut keeps: a margin under the link's measured capacity.
const CUT_MARGIN: f64 = 0.85;
const MIN_BPS: u64 = 50_000;
/// Above this the link is taken as unlimited again.
const MAX_BPS: u64 = 30_000_000;
const FIRST_HOLD: Duration = Duration::from_secs(2);
const MAX_HOLD: Duration = Duration::from_secs(30);
/// A cut within this of the previous one doubles the hold.
const REPEAT_WINDOW: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Default)]
pub struct LossEstimate {
    estimate: Option<u64>,
    last_update: Option<Instant>,
    last_cut: Option<Instant>,
    hold: Duration,
    hold_until: Option<Instant>,
}

impl LossEstimate {
    /// The estimate in bit/s; `None`: nothing limits the link.
    pub fn estimate(&self) -> Option<u64> {
        self.estimate
    }

    /// A receiver report: `fraction_lost` (0–1) of what was sent at `sending_bps` since the
    /// previous one.
    pub fn on_report(&mut self, fraction_lost: f64, sending_bps: u64, now: Instant) {
        let elapsed = self.last_update.map_or(Duration::ZERO, |t| now.saturating_duration_since(t)).min(Duration::from_secs(2));
        self.last_update = Some(now);
        let loss = fraction_lost.clamp(0.0, 1.0);
        if loss > HIGH_LOSS && sending_bps > 0 {
            let delivered = sending_bps as f64 * (1.0 - loss);
            let cut = (delivered * CUT_MARGIN) as u64;
            self.estimate = Some(self.estimate.map_or(cut, |e| e.min(cut)).max(MIN_BPS));
            self.hold = match self.last_cut {
                Some(last) if now.saturating_duration_since(last) < REPEAT_WINDOW => (self.hold * 2).clamp(FIRST_HOLD, MAX_HOLD),
                _ => FIRST_HOLD,
            };
            self.last_cut = Some(now);
            self.hold_until = Some(now + self.hold);
        } else if loss < LOW_LOSS {
            let Some(estimate) = self.estimate else { return };
            if self.hold_until.is_some_and(|t| now < t) {
                return;
            }
            let grown = (estimate as f64 * GROWTH.powf(elapsed.as_secs_f64())) as u64;
            self.estimate = (grown < MAX_BPS).then_some(grown.max(estimate + 1000));
        }
    }
}

/// How long a loss measurement runs.
pub const LOSS_WINDOW: Duration = Duration::from_secs(1);

/// One consumer's loss over the current window.
#[derive(Debug, Clone, Default)]
pub struct LossWindow {
    sent: u32,
    /// Packets asked for again for the first time.
    nacked: u32,
    /// The highest sequence number asked for: a NACK repeated for an older one is not new loss.
    nack_high: Option<u16>,
    /// The highest fraction lost a receiver report gave in the window.
    reported: f64,
    start: Option<Instant>,
}

impl LossWindow {
    pub fn on_sent(&mut self) {
        self.sent = self.sent.saturating_add(1);
    }

    /// The consumer asked for its packet `seq` (its own numbering) again.
    pub fn on_nack(&mut self, seq: u16) {
        if self.nack_high.is_none_or(|high| (seq.wrapping_sub(high) as i16) > 0) {
            self.nack_high = Some(seq);
            self.nacked = self.nacked.saturating_add(1);
        }
    }

    pub fn on_report(&mut self, fraction_lost: f64) {
        self.reported = self.reported.max(fraction_lost);
    }

    /// The window's loss (0–1) once it has run [`LOSS_WINDOW`], starting the next one; `None`
    /// before, or when nothing was sent.
    pub fn take(&mut self, now: Instant) -> Option<f64> {
        let start = *self.start.get_or_insert(now);
        if now.saturating_duration_since(start) < LOSS_WINDOW {
            return None;
        }
        let nacked = if self.sent > 0 { f64::from(self.nacked.min(self.sent)) / f64::from(self.sent) } else { 0.0 };
        let loss = nacked.max(self.reported);
        let sent = self.sent;
        *self = LossWindow { nack_high: self.nack_high, start: Some(now), ..Default::default() };
        (sent > 0).then_some(loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_new_nacks_against_what_was_sent() {
        let t0 = Instant::now();
        let mut w = LossWindow::default();
        assert_eq!(w.take(t0), None, "the first call starts the window");
        for _ in 0..100 {
            w.on_sent();
        }
        for seq in [10u16, 11, 12, 11, 10, 65535] {
            w.on_nack(seq);
        }
        assert_eq!(w.take(t0 + Duration::from_millis(500)), None, "not a second yet");
        assert_eq!(w.take(t0 + LOSS_WINDOW), Some(0.03), "three new ones; repeats and an older one do not count");
        w.on_sent();
        w.on_nack(12);
        w.on_report(0.25);
        assert_eq!(w.take(t0 + LOSS_WINDOW * 2), Some(0.25), "the report says more");
        assert_eq!(w.take(t0 + LOSS_WINDOW * 3), None, "nothing sent");
        w.on_sent();
        w.on_nack(13);
        w.on_nack(14);
        assert_eq!(w.take(t0 + LOSS_WINDOW * 4), Some(1.0), "capped at what was sent");
    }

    #[test]
    fn heavy_loss_cuts_to_what_got_through_and_light_loss_grows_after_a_hold() {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut e = LossEstimate::default();
        e.on_report(0.0, 2_000_000, at(0.0));
        assert_eq!(e.estimate(), None, "no loss: no limit");
        e.on_report(0.05, 2_000_000, at(1.0));
        assert_eq!(e.estimate(), None, "moderate loss holds");
        e.on_report(0.5, 2_000_000, at(2.0));
        assert_eq!(e.estimate(), Some(850_000), "half of 2 Mbit/s got through, less a margin");
        e.on_report(0.0, 400_000, at(3.0));
        assert_eq!(e.estimate(), Some(850_000), "held for 2 s after a cut");
        e.on_report(0.0, 400_000, at(4.0));
        let grown = e.estimate().unwrap();
        assert!(grown > 850_000 && grown < 1_000_000, "{grown}");
        e.on_report(0.05, 400_000, at(5.0));
        assert_eq!(e.estimate(), Some(grown), "moderate loss holds");
    }

    #[test]
    fn repeated_cuts_wait_longer_before_growing_and_growth_ends_unlimited() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut e = LossEstimate::default();
        e.on_report(0.4, 1_000_000, at(0));
        e.on_report(0.4, 1_000_000, at(3));
        assert_eq!(e.hold, Duration::from_secs(4));
        e.on_report(0.0, 1_000_000, at(6));
        assert_eq!(e.estimate(), Some(MIN_BPS.max((600_000.0 * CUT_MARGIN) as u64)), "still held");
        e.on_report(0.4, 1_000_000, at(40));
        assert_eq!(e.hold, FIRST_HOLD, "a cut long after the last starts over");
        // Light loss, every second, for long enough: the limit goes away.
        for s in 43..400 {
            e.on_report(0.0, 1_000_000, at(s));
        }
        assert_eq!(e.estimate(), None);
        // Never below the floor.
        e.on_report(1.0, 10_000, at(401));
        assert_eq!(e.estimate(), Some(MIN_BPS));
    }
}
