//! Simulcast, per consumer: which of a producer's spatial layers one consumer gets, and when it
//! may change. A consumer changes layer only at a keyframe of the layer it moves to, and keeps
//! the old one until that keyframe is whole: its packets are held back meanwhile and go out
//! together, so the decoder never waits on a large keyframe trickling in (a paced 720p keyframe
//! takes a few hundred milliseconds, which a viewer sees as a freeze).

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
    /// Hold it back: it belongs to the target layer's keyframe, not yet whole.
    Hold,
    /// It ends the held keyframe: the target is now this consumer's layer; send what was held,
    /// then it.
    Complete,
}

/// One consumer's layer selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSelector {
    preferred: u8,
    /// The highest temporal layer wanted, and the one in force: it changes at a frame of the
    /// base temporal layer, which every layer above refers to.
    preferred_temporal: u8,
    temporal: u8,
    /// The highest layer its link carries, by its bandwidth estimate.
    ceiling: u8,
    target: Option<u8>,
    current: Option<u8>,
    /// The layer whose keyframe is being held back.
    switching: Option<u8>,
}

impl Default for LayerSelector {
    fn default() -> Self {
        Self { preferred: HIGHEST, preferred_temporal: HIGHEST, temporal: HIGHEST, target: None, current: None, switching: None, ceiling: HIGHEST }
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

    pub fn preferred_temporal(&self) -> u8 {
        self.preferred_temporal
    }

    pub fn set_preferred_temporal(&mut self, temporal: u8) {
        self.preferred_temporal = temporal;
    }

    /// Whether a packet of temporal layer `tid` goes out; `base_frame` when it starts a frame
    /// of the base layer, where a change of the temporal cap takes effect.
    pub fn passes_temporal(&mut self, tid: u8, base_frame: bool) -> bool {
        if base_frame {
            self.temporal = self.preferred_temporal;
        }
        tid <= self.temporal
    }

    /// Whether packets are left out by temporal layer.
    pub fn filters_temporal(&self) -> bool {
        self.temporal != HIGHEST || self.preferred_temporal != HIGHEST
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
        if self.switching.is_some() && self.switching != target {
            self.switching = None;
        }
        changed
    }

    /// The layer this consumer needs a keyframe of before it can change to it.
    pub fn awaits(&self) -> Option<u8> {
        self.target.filter(|t| Some(*t) != self.current && self.switching.is_none())
    }

    /// The layer whose keyframe is being held back, if any.
    pub fn switching(&self) -> Option<u8> {
        self.switching
    }

    /// A packet of `layer` arrived; `keyframe` when it starts a keyframe.
    /// A packet of `layer` arrived; `keyframe` when it starts a keyframe, `marker` when it
    /// ends a frame.
    pub fn on_packet(&mut self, layer: u8, keyframe: bool, marker: bool) -> Verdict {
        if self.switching == Some(layer) {
            if marker {
                self.switching = None;
                self.current = Some(layer);
                return Verdict::Complete;
            }
            return Verdict::Hold;
        }
        if self.awaits() == Some(layer) {
            if !keyframe {
                return Verdict::Drop;
            }
            // With nothing to show meanwhile, or a keyframe of one packet, at once.
            if self.current.is_none() || marker {
                self.current = Some(layer);
                return Verdict::Switch;
            }
            self.switching = Some(layer);
            return Verdict::Hold;
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
        if self.switching == Some(layer) {
            self.switching = None;
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

    /// A frame is left out (a temporal layer the consumer does not get): the next frame takes
    /// its picture id.
    pub fn skip_picture(&mut self) {
        self.picture_offset = self.picture_offset.wrapping_sub(1) & 0x7fff;
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
        assert_eq!(s.on_packet(0, true, false), Verdict::Drop, "no layer known yet");
        assert!(s.retarget(0b001));
        assert_eq!(s.on_packet(0, false, false), Verdict::Drop, "waits for a keyframe");
        assert_eq!(s.on_packet(0, true, false), Verdict::Switch);
        assert_eq!(s.on_packet(0, false, false), Verdict::Forward);
        // Higher layers arrive: the target moves up; layer 0 goes on until layer 2's keyframe.
        assert!(s.retarget(0b111));
        assert_eq!((s.target(), s.current(), s.awaits()), (Some(2), Some(0), Some(2)));
        assert_eq!(s.on_packet(1, true, false), Verdict::Drop);
        assert_eq!(s.on_packet(2, false, false), Verdict::Drop);
        assert_eq!(s.on_packet(0, false, false), Verdict::Forward);
        assert_eq!(s.on_packet(2, true, true), Verdict::Switch, "a keyframe of one packet");
        assert_eq!(s.on_packet(0, true, false), Verdict::Drop);
        assert_eq!(s.on_packet(2, false, false), Verdict::Forward);
        assert_eq!(s.awaits(), None);
    }

    #[test]
    fn the_old_layer_goes_on_until_the_new_keyframe_is_whole() {
        let mut s = LayerSelector::default();
        s.retarget(0b001);
        assert_eq!(s.on_packet(0, true, false), Verdict::Switch, "nothing to show meanwhile: at once");
        s.retarget(0b101);
        assert_eq!(s.on_packet(2, true, false), Verdict::Hold, "the keyframe starts");
        assert_eq!((s.current(), s.switching(), s.awaits()), (Some(0), Some(2), None));
        assert_eq!(s.on_packet(0, false, true), Verdict::Forward, "the old layer goes on");
        assert_eq!(s.on_packet(2, false, false), Verdict::Hold);
        assert_eq!(s.on_packet(2, false, true), Verdict::Complete, "its last packet");
        assert_eq!((s.current(), s.switching()), (Some(2), None));
        assert_eq!(s.on_packet(0, false, false), Verdict::Drop);
        // Retargeted away while holding: the held keyframe is given up.
        s.set_preferred(0, 0b101);
        assert_eq!(s.on_packet(0, true, false), Verdict::Hold);
        s.set_preferred(HIGHEST, 0b101);
        assert_eq!((s.switching(), s.current(), s.awaits()), (None, Some(2), None));
        // A keyframe of one packet switches at once.
        s.set_preferred(0, 0b101);
        assert_eq!(s.on_packet(0, true, true), Verdict::Switch);
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
        s.on_packet(2, true, false);
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
    fn the_temporal_cap_changes_at_a_base_layer_frame() {
        let mut s = LayerSelector::default();
        assert!(s.passes_temporal(2, false) && !s.filters_temporal());
        s.set_preferred_temporal(0);
        assert!(s.filters_temporal());
        assert!(s.passes_temporal(2, false), "not before a base-layer frame");
        assert!(s.passes_temporal(0, true));
        assert!(!s.passes_temporal(2, false) && !s.passes_temporal(1, false) && s.passes_temporal(0, false));
        s.set_preferred_temporal(HIGHEST);
        assert!(!s.passes_temporal(1, false), "still capped until the next base frame");
        assert!(s.passes_temporal(0, true) && s.passes_temporal(2, false));
        assert!(!s.filters_temporal());
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
        c.skip_picture();
        assert_eq!(c.apply(Some(502), None).map(|(p, _)| p), Some(872), "501 was left out: no gap");
    }
}
