//! Who is speaking in a room, from the audio levels producers put in their packets (RFC 6464:
//! the level of each packet's audio in -dBov, 0 the loudest, 127 silence). Nothing is decoded.
//!
//! Levels are averaged per user over ticks of [`TICK`]; a user's loudness is the mean of their
//! last [`WINDOW_TICKS`] ticks. The dominant speaker changes to another user only when that user
//! is speaking (above [`SPEECH_LOUDNESS`]), is the loudest, and beats the current speaker by
//! [`MARGIN`] for [`HOLD_TICKS`] ticks in a row: a cough or a 100 ms burst moves a one-second
//! mean by a tenth of itself and is over before the hold is.

use std::time::{Duration, Instant};

/// How often the levels are weighed.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks in the mean that decides: one second.
const WINDOW_TICKS: usize = 10;
/// Ticks a challenger must lead in a row before it takes over.
const HOLD_TICKS: u32 = 4;
/// Loudness (127 − level, so dB above -127 dBov) a user's mean must reach to count as speaking:
/// -50 dBov, well above a quiet room's microphone.
const SPEECH_LOUDNESS: f32 = 77.0;
/// dB by which a challenger's mean must beat the current speaker's.
const MARGIN: f32 = 6.0;

struct Talker<U> {
    user: U,
    /// Sum and count of this tick's packet loudness.
    sum: u32,
    packets: u32,
    /// The means of the last ticks, newest last.
    ticks: [f32; WINDOW_TICKS],
    filled: usize,
    /// Ticks in a row it has led the current speaker.
    leading: u32,
    /// Sum and count of loudness since the last [`SpeakerDetector::take_levels`].
    reported: (u32, u32),
}

impl<U> Talker<U> {
    fn mean(&self) -> f32 {
        if self.filled == 0 {
            return 0.0;
        }
        self.ticks[WINDOW_TICKS - self.filled..].iter().sum::<f32>() / self.filled as f32
    }

    /// Closes a tick: a user who sent no audio in it was silent.
    fn close_tick(&mut self) {
        let mean = if self.packets == 0 { 0.0 } else { self.sum as f32 / self.packets as f32 };
        self.ticks.rotate_left(1);
        self.ticks[WINDOW_TICKS - 1] = mean;
        self.filled = (self.filled + 1).min(WINDOW_TICKS);
        (self.sum, self.packets) = (0, 0);
    }
}

/// The dominant speaker of one room.
pub struct SpeakerDetector<U> {
    talkers: Vec<Talker<U>>,
    current: Option<U>,
    next_tick: Option<Instant>,
}

impl<U> Default for SpeakerDetector<U> {
    fn default() -> Self {
        Self { talkers: Vec::new(), current: None, next_tick: None }
    }
}

impl<U: Clone + PartialEq> SpeakerDetector<U> {
    /// One audio packet of `user` with RFC 6464 `level` (-dBov, 0..=127). Returns the new
    /// dominant speaker when this packet closed a tick that changed it.
    pub fn packet(&mut self, user: &U, level: u8, now: Instant) -> Option<U> {
        let loudness = 127 - u32::from(level.min(127));
        match self.talkers.iter_mut().find(|t| t.user == *user) {
            Some(t) => {
                t.sum += loudness;
                t.packets += 1;
                t.reported.0 += loudness;
                t.reported.1 += 1;
            }
            None => self.talkers.push(Talker {
                user: user.clone(),
                sum: loudness,
                packets: 1,
                ticks: [0.0; WINDOW_TICKS],
                filled: 0,
                leading: 0,
                reported: (loudness, 1),
            }),
        }
        self.tick(now)
    }

    /// Weighs the levels if a tick has ended; the new dominant speaker if it changed.
    pub fn tick(&mut self, now: Instant) -> Option<U> {
        let due = *self.next_tick.get_or_insert(now + TICK);
        if now < due {
            return None;
        }
        // A long silence of the whole room closes one tick, not one per 100 ms missed.
        self.next_tick = Some(if now >= due + TICK { now + TICK } else { due + TICK });
        self.talkers.iter_mut().for_each(Talker::close_tick);
        let current_mean = self.current.as_ref().and_then(|c| self.talkers.iter().find(|t| t.user == *c)).map_or(0.0, Talker::mean);
        let loudest = self
            .talkers
            .iter()
            .enumerate()
            .map(|(i, t)| (i, t.mean()))
            .filter(|&(_, mean)| mean >= SPEECH_LOUDNESS)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i);
        let mut changed = None;
        for (i, talker) in self.talkers.iter_mut().enumerate() {
            let challenger = Some(i) == loudest && self.current.as_ref() != Some(&talker.user);
            if challenger && talker.mean() >= current_mean + MARGIN {
                talker.leading += 1;
                if talker.leading >= HOLD_TICKS {
                    changed = Some(talker.user.clone());
                }
            } else {
                talker.leading = 0;
            }
        }
        if let Some(user) = &changed {
            self.current = Some(user.clone());
            self.talkers.iter_mut().for_each(|t| t.leading = 0);
        }
        changed
    }

    /// Forgets a user who stopped producing audio; the room may then have no speaker.
    pub fn remove(&mut self, user: &U) {
        self.talkers.retain(|t| t.user != *user);
        if self.current.as_ref() == Some(user) {
            self.current = None;
        }
    }

    /// Each user's mean level since the last call, in dBov (-127 silence, 0 the loudest), and
    /// starts the next period.
    pub fn take_levels(&mut self) -> Vec<(U, i32)> {
        self.talkers
            .iter_mut()
            .map(|t| {
                let (sum, packets) = std::mem::take(&mut t.reported);
                let loudness = if packets == 0 { 0.0 } else { sum as f32 / packets as f32 };
                (t.user.clone(), loudness.round() as i32 - 127)
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.talkers.is_empty()
    }

    pub fn current(&self) -> Option<&U> {
        self.current.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOUD: u8 = 20; // -20 dBov: speech into a microphone
    const QUIET: u8 = 90; // -90 dBov: a silent room

    /// Feeds `ms` of 20 ms audio packets from every user at its level; returns every change.
    fn run(d: &mut SpeakerDetector<&'static str>, now: &mut Instant, ms: u64, levels: &[(&'static str, u8)]) -> Vec<&'static str> {
        let mut changes = Vec::new();
        for _ in 0..ms / 20 {
            *now += Duration::from_millis(20);
            for (user, level) in levels {
                changes.extend(d.packet(user, *level, *now));
            }
        }
        changes
    }

    #[test]
    fn the_loud_one_becomes_the_speaker_and_the_speaker_follows_the_loudness() {
        let mut d = SpeakerDetector::default();
        let mut now = Instant::now();
        let changes = run(&mut d, &mut now, 2000, &[("a", LOUD), ("b", QUIET), ("c", QUIET)]);
        assert_eq!(changes, vec!["a"]);
        let changes = run(&mut d, &mut now, 3000, &[("a", QUIET), ("b", QUIET), ("c", LOUD)]);
        assert_eq!(changes, vec!["c"], "the speaker moves when the loud one changes");
        assert_eq!(d.current(), Some(&"c"));
    }

    #[test]
    fn silence_names_nobody() {
        let mut d = SpeakerDetector::default();
        let mut now = Instant::now();
        assert!(run(&mut d, &mut now, 3000, &[("a", QUIET), ("b", QUIET)]).is_empty());
        assert_eq!(d.current(), None);
    }

    #[test]
    fn a_short_burst_does_not_move_the_speaker() {
        let mut d = SpeakerDetector::default();
        let mut now = Instant::now();
        assert_eq!(run(&mut d, &mut now, 2000, &[("a", LOUD), ("b", QUIET)]), vec!["a"]);
        // b coughs for 100 ms, louder than a; then the room goes on as before.
        assert!(run(&mut d, &mut now, 100, &[("a", LOUD), ("b", 0)]).is_empty());
        assert!(run(&mut d, &mut now, 2000, &[("a", LOUD), ("b", QUIET)]).is_empty());
        assert_eq!(d.current(), Some(&"a"));
    }

    #[test]
    fn a_challenger_must_beat_the_speaker_by_the_margin() {
        let mut d = SpeakerDetector::default();
        let mut now = Instant::now();
        assert_eq!(run(&mut d, &mut now, 2000, &[("a", 30), ("b", QUIET)]), vec!["a"]);
        // b as loud as a, give or take 3 dB: a stays.
        assert!(run(&mut d, &mut now, 3000, &[("a", 30), ("b", 27)]).is_empty());
        // b 10 dB louder: b takes over.
        assert_eq!(run(&mut d, &mut now, 3000, &[("a", 30), ("b", 20)]), vec!["b"]);
    }

    #[test]
    fn a_user_who_leaves_is_forgotten() {
        let mut d = SpeakerDetector::default();
        let mut now = Instant::now();
        assert_eq!(run(&mut d, &mut now, 2000, &[("a", LOUD)]), vec!["a"]);
        d.remove(&"a");
        assert!(d.is_empty());
        assert_eq!(d.current(), None);
        assert_eq!(run(&mut d, &mut now, 2000, &[("b", LOUD)]), vec!["b"]);
    }

    #[test]
    fn levels_are_means_in_dbov_per_period() {
        let mut d = SpeakerDetector::default();
        let mut now = Instant::now();
        run(&mut d, &mut now, 200, &[("a", 20), ("b", 90)]);
        d.packet(&"a", 40, now);
        let levels = d.take_levels();
        assert_eq!(levels[1], ("b", -90));
        assert_eq!(levels[0].0, "a");
        assert!((-22..=-20).contains(&levels[0].1), "{levels:?}");
        assert_eq!(d.take_levels(), vec![("a", -127), ("b", -127)], "a period with no packets is silence");
    }

    #[test]
    fn a_long_pause_closes_one_tick() {
        let mut d = SpeakerDetector::default();
        let mut now = Instant::now();
        run(&mut d, &mut now, 2000, &[("a", LOUD)]);
        now += Duration::from_secs(3600);
        assert_eq!(d.tick(now), None);
        assert!(d.next_tick.is_some_and(|t| t > now));
    }
}
