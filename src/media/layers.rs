//! Simulcast, per consumer: which of a producer's spatial layers one consumer gets, and when it
//! may change. A consumer changes layer only at a keyframe of the layer it moves to, and keeps
//! the old one until then, so its decoder never sees a frame it cannot decode.

/// Spatial layers a stream can have (a bitmask of active ones fits a `u8`).
pub const MAX_LAYERS: usize = 8;

/// A preference of "the best there is".
pub const HIGHEST: u8 = u8::MAX;

/// What to do with one packet of a layer, for one consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    Forward,
    /// Forward: it starts a keyframe of the target layer, which from now on is this consumer's
    /// layer (numbering continues across the change).
    Switch,
}

/// One consumer's layer selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSelector {
    preferred: u8,
    /// The highest layer its link carries, by its bandwidth estimate.
    ceiling: u8,
    target: Option<u8>,
    current: Option<u8>,
}

impl Default for LayerSelector {
    fn default() -> Self {
        Self { preferred: HIGHEST, ceiling: HIGHEST, target: None, current: None }
    }
}

impl LayerSelector {
    pub fn preferred(&self) -> u8 {
        self.preferred
    }

    /// The layer this consumer is moving to (or stays on).
    pub fn target(&self) -> Option<u8> {
        self.target
    }

    /// The layer this consumer receives now.
    pub fn current(&self) -> Option<u8> {
        self.current
    }

    pub fn set_preferred(&mut self, preferred: u8, active: u8) -> bool {
        self.preferred = preferred;
        self.retarget(active)
    }

    pub fn ceiling(&self) -> u8 {
        self.ceiling
    }

    pub fn set_ceiling(&mut self, ceiling: u8, active: u8) -> bool {
        self.ceiling = ceiling;
        self.retarget(active)
    }

    /// Picks the target from the `active` layers (bit `i`: layer `i` is arriving): the highest
    /// at or under both the preference and the ceiling, else the lowest there is. Returns
    /// whether it changed.
    pub fn retarget(&mut self, active: u8) -> bool {
        let cap = self.preferred.min(self.ceiling);
        let target = (0..MAX_LAYERS as u8)
            .rev()
            .find(|&l| l <= cap && active & (1 << l) != 0)
            .or_else(|| (0..MAX_LAYERS as u8).find(|&l| active & (1 << l) != 0));
        let changed = target != self.target;
        self.target = target;
        changed
    }

    /// The layer this consumer needs a keyframe of before it can change to it.
    pub fn awaits(&self) -> Option<u8> {
        self.target.filter(|t| Some(*t) != self.current)
    }

    /// A packet of `layer` arrived; `keyframe` when it starts a keyframe.
    pub fn on_packet(&mut self, layer: u8, keyframe: bool) -> Verdict {
        if self.awaits() == Some(layer) {
            if keyframe {
                self.current = Some(layer);
                return Verdict::Switch;
            }
            return Verdict::Drop;
        }
        if self.current == Some(layer) {
            Verdict::Forward
        } else {
            Verdict::Drop
        }
    }

    /// The current layer's source went away (a new SSRC for it): wait for a keyframe again.
    pub fn lose(&mut self, layer: u8) {
        if self.current == Some(layer) {
            self.current = None;
        }
    }
}

/// Keeps a consumer's VP8 picture ids and TL0PICIDX running on across layer changes (each layer
/// numbers its own), so the decoder's reference tracking sees one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vp8Continuity {
    picture_offset: u16,
    tl0_offset: u8,
    last_picture: Option<u16>,
    last_tl0: Option<u8>,
    switched: bool,
}

impl Vp8Continuity {
    /// The next packet starts another layer's numbering.
    pub fn switch(&mut self) {
        self.switched = true;
    }

    /// The ids to write for a packet whose source ids are `picture` and `tl0`, or `None` when
    /// they go out unchanged.
    pub fn apply(&mut self, picture: Option<u16>, tl0: Option<u8>) -> Option<(u16, u8)> {
        if std::mem::take(&mut self.switched) {
            if let (Some(last), Some(picture)) = (self.last_picture, picture) {
                self.picture_offset = last.wrapping_add(1).wrapping_sub(picture) & 0x7fff;
            }
            if let (Some(last), Some(tl0)) = (self.last_tl0, tl0) {
                self.tl0_offset = last.wrapping_add(1).wrapping_sub(tl0);
            }
        }
        let out_picture = picture.map(|p| p.wrapping_add(self.picture_offset) & 0x7fff);
        let out_tl0 = tl0.map(|t| t.wrapping_add(self.tl0_offset));
        if out_picture.is_some() {
            self.last_picture = out_picture;
        }
        if out_tl0.is_some() {
            self.last_tl0 = out_tl0;
        }
        (self.picture_offset != 0 || self.tl0_offset != 0)
            .then(|| (out_picture.unwrap_or(0), out_tl0.unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_starts_on_the_best_layer_at_its_keyframe() {
        let mut s = LayerSelector::default();
        assert_eq!(s.on_packet(0, true), Verdict::Drop, "no layer known yet");
        assert!(s.retarget(0b001));
        assert_eq!(s.on_packet(0, false), Verdict::Drop, "waits for a keyframe");
        assert_eq!(s.on_packet(0, true), Verdict::Switch);
        assert_eq!(s.on_packet(0, false), Verdict::Forward);
        // Higher layers arrive: the target moves up; layer 0 goes on until layer 2's keyframe.
        assert!(s.retarget(0b111));
        assert_eq!((s.target(), s.current(), s.awaits()), (Some(2), Some(0), Some(2)));
        assert_eq!(s.on_packet(1, true), Verdict::Drop);
        assert_eq!(s.on_packet(2, false), Verdict::Drop);
        assert_eq!(s.on_packet(0, false), Verdict::Forward);
        assert_eq!(s.on_packet(2, true), Verdict::Switch);
        assert_eq!(s.on_packet(0, true), Verdict::Drop);
        assert_eq!(s.on_packet(2, false), Verdict::Forward);
        assert_eq!(s.awaits(), None);
    }

    #[test]
    fn the_preference_caps_and_a_missing_layer_falls_back() {
        let mut s = LayerSelector::default();
        s.retarget(0b111);
        assert!(s.set_preferred(1, 0b111));
        assert_eq!(s.target(), Some(1));
        assert!(!s.set_preferred(1, 0b111));
        // The producer stops sending layer 1 (its bandwidth fell): the best under the cap is 0.
        assert!(s.retarget(0b101));
        assert_eq!(s.target(), Some(0));
        // Only layers above the cap: the lowest of them rather than nothing.
        s.set_preferred(0, 0b110);
        assert_eq!(s.target(), Some(1));
        s.set_preferred(HIGHEST, 0);
        assert_eq!(s.target(), None);
        s.retarget(0b100);
        s.on_packet(2, true);
        s.lose(2);
        assert_eq!((s.current(), s.awaits()), (None, Some(2)));
    }

    #[test]
    fn the_bandwidth_ceiling_and_the_preference_both_cap() {
        let mut s = LayerSelector::default();
        s.retarget(0b111);
        assert!(s.set_ceiling(1, 0b111));
        assert_eq!(s.target(), Some(1));
        s.set_preferred(0, 0b111);
        assert_eq!(s.target(), Some(0), "the lower of the two");
        s.set_preferred(HIGHEST, 0b111);
        assert!(s.set_ceiling(HIGHEST, 0b111));
        assert_eq!(s.target(), Some(2));
    }

    #[test]
    fn vp8_ids_run_on_across_a_switch() {
        let mut c = Vp8Continuity::default();
        assert_eq!(c.apply(Some(100), Some(7)), None, "the first layer goes out as it is");
        assert_eq!(c.apply(Some(101), Some(8)), None);
        c.switch();
        assert_eq!(c.apply(Some(32000), Some(250)), Some((102, 9)));
        assert_eq!(c.apply(Some(32767), Some(255)), Some((869, 14)));
        assert_eq!(c.apply(Some(0), Some(0)), Some((870, 15)), "the source wraps, the output follows");
        c.switch();
        assert_eq!(c.apply(Some(500), None).map(|(p, _)| p), Some(871), "no TL0PICIDX in the packet");
    }
}
