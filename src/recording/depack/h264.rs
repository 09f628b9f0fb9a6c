//! H264 (RFC 6184, packetization mode 1): single NAL unit packets, STAP-A and FU-A, written
//! as 4-byte length-prefixed NAL units (the avcC sample format Matroska's
//! `V_MPEG4/ISO/AVC` expects). SPS and PPS are remembered for the avcC CodecPrivate.
//!
//! Modes 2's interleaved packets (STAP-B, MTAP, FU-B) break the frame they are in: WebRTC
//! does not send them.

use super::{Malformed, PacketInfo, PayloadFormat};

const NAL_SLICE: u8 = 1;
const NAL_IDR: u8 = 5;
const NAL_SEI: u8 = 6;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// Parameter sets larger than this are not kept (real ones are tens of bytes).
const MAX_PARAMETER_SET: usize = 1024;

#[derive(Debug, Default)]
pub struct H264 {
    pub dimensions: Option<(u16, u16)>,
    sps: Vec<u8>,
    pps: Vec<u8>,
    /// Where the length prefix of the NAL being reassembled from FU-A fragments is.
    fu_at: Option<usize>,
    has_idr: bool,
}

impl H264 {
    /// The avcC record (ISO/IEC 14496-15 §5.2.4.1), once an SPS and a PPS were seen.
    pub fn avcc(&self) -> Option<Vec<u8>> {
        if self.sps.len() < 4 || self.pps.is_empty() {
            return None;
        }
        let mut v = Vec::with_capacity(11 + self.sps.len() + self.pps.len());
        // version, profile, compatibility, level, 4-byte lengths, one SPS.
        v.extend_from_slice(&[1, self.sps[1], self.sps[2], self.sps[3], 0xFF, 0xE1]);
        v.extend_from_slice(&(self.sps.len() as u16).to_be_bytes());
        v.extend_from_slice(&self.sps);
        v.push(1);
        v.extend_from_slice(&(self.pps.len() as u16).to_be_bytes());
        v.extend_from_slice(&self.pps);
        Some(v)
    }

    /// A whole NAL unit was appended (after its length prefix).
    fn on_nal(&mut self, nal: &[u8]) {
        let Some(&h) = nal.first() else { return };
        match h & 0x1F {
            NAL_IDR => self.has_idr = true,
            NAL_SPS if nal.len() <= MAX_PARAMETER_SET => {
                if let Some(dims) = sps_dimensions(nal) {
                    self.dimensions = Some(dims);
                }
                self.sps.clear();
                self.sps.extend_from_slice(nal);
            }
            NAL_PPS if nal.len() <= MAX_PARAMETER_SET => {
                self.pps.clear();
                self.pps.extend_from_slice(nal);
            }
            _ => {}
        }
    }

    fn append_nal(&mut self, frame: &mut Vec<u8>, nal: &[u8]) -> Result<(), Malformed> {
        if nal.is_empty() || nal[0] & 0x80 != 0 {
            // Empty, or forbidden_zero_bit set.
            return Err(Malformed);
        }
        frame.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        frame.extend_from_slice(nal);
        self.on_nal(nal);
        Ok(())
    }
}

/// Whether a NAL unit (its header byte and the next) begins an access unit: parameter sets,
/// SEI and delimiters precede the first slice; a slice begins one when its first_mb_in_slice
/// is 0 (a ue(v) 0 is the single bit 1).
fn begins_access_unit(header: u8, next: Option<u8>) -> bool {
    match header & 0x1F {
        NAL_SEI | NAL_SPS | NAL_PPS | NAL_AUD => true,
        NAL_SLICE | NAL_IDR => next.is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

impl PayloadFormat for H264 {
    fn parse(
        &mut self,
        payload: &[u8],
        frame: &mut Vec<u8>,
        first_of_frame: bool,
    ) -> Result<PacketInfo, Malformed> {
        if first_of_frame {
            self.fu_at = None;
            self.has_idr = false;
        }
        let &h = payload.first().ok_or(Malformed)?;
        let nri_zero = h & 0x60 == 0;
        match h & 0x1F {
            1..=23 => {
                if self.fu_at.is_some() {
                    return Err(Malformed);
                }
                self.append_nal(frame, payload)?;
                Ok(PacketInfo {
                    starts_frame: begins_access_unit(h, payload.get(1).copied()),
                    discardable: nri_zero,
                })
            }
            STAP_A => {
                if self.fu_at.is_some() {
                    return Err(Malformed);
                }
                let mut i = 1;
                let mut starts = None;
                while i < payload.len() {
                    let size = payload
                        .get(i..i + 2)
                        .map(|s| u16::from_be_bytes([s[0], s[1]]) as usize)
                        .ok_or(Malformed)?;
                    let nal = payload.get(i + 2..i + 2 + size).ok_or(Malformed)?;
                    if starts.is_none() {
                        starts = Some(begins_access_unit(
                            *nal.first().ok_or(Malformed)?,
                            nal.get(1).copied(),
                        ));
                    }
                    self.append_nal(frame, nal)?;
                    i += 2 + size;
                }
                Ok(PacketInfo {
                    starts_frame: starts.ok_or(Malformed)?,
                    discardable: nri_zero,
                })
            }
            FU_A => {
                let &fu = payload.get(1).ok_or(Malformed)?;
                let data = &payload[2..];
                let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
                let header = (h & 0xE0) | (fu & 0x1F);
                let mut starts_frame = false;
                if start {
                    if self.fu_at.is_some() || start && end {
                        // A fragment that is both start and end is forbidden (RFC 6184
                        // §5.8); a new start inside an unfinished unit means loss.
                        return Err(Malformed);
                    }
                    starts_frame = begins_access_unit(header, data.first().copied());
                    self.fu_at = Some(frame.len());
                    frame.extend_from_slice(&[0, 0, 0, 0, header]);
                } else if self.fu_at.is_none() {
                    return Err(Malformed);
                }
                frame.extend_from_slice(data);
                if end {
                    let at = self.fu_at.take().ok_or(Malformed)?;
                    let len = frame.len() - at - 4;
                    frame[at..at + 4].copy_from_slice(&(len as u32).to_be_bytes());
                    let nal_start = at + 4;
                    // on_nal needs the NAL while `frame` is borrowed: SPS/PPS are small, and
                    // only they are copied.
                    let kind = header & 0x1F;
                    if matches!(kind, NAL_SPS | NAL_PPS | NAL_IDR) {
                        let nal = frame[nal_start..].to_vec();
                        self.on_nal(&nal);
                    }
                }
                Ok(PacketInfo {
                    starts_frame,
                    discardable: nri_zero,
                })
            }
            _ => Err(Malformed),
        }
    }

    fn finish(&mut self, _frame: &mut Vec<u8>) -> Result<bool, Malformed> {
        if self.fu_at.is_some() {
            return Err(Malformed);
        }
        let keyframe = self.has_idr;
        self.has_idr = false;
        // A keyframe is only usable once the parameter sets it needs are known.
        if keyframe && self.avcc().is_none() {
            return Err(Malformed);
        }
        Ok(keyframe)
    }

    fn abort(&mut self) {
        self.fu_at = None;
        self.has_idr = false;
    }
}

/// Removes emulation prevention bytes (00 00 03 → 00 00) into `out`.
fn unescape(nal: &[u8], out: &mut Vec<u8>) {
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
}

struct Golomb<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Golomb<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        self.pos += 1;
        Some(((byte >> (7 - (self.pos - 1) % 8)) & 1) as u32)
    }
    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0, |a, _| Some((a << 1) | self.bit()?))
    }
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u64 << zeros) as u32 - 1 + self.bits(zeros)?)
    }
    fn se(&mut self) -> Option<i32> {
        let k = self.ue()? as i64;
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) } as i32)
    }
}

/// Picture size from an SPS NAL unit (H.264 §7.3.2.1.1), cropping applied.
pub(crate) fn sps_dimensions(nal: &[u8]) -> Option<(u16, u16)> {
    let mut raw = Vec::with_capacity(nal.len());
    unescape(nal.get(1..)?, &mut raw);
    let mut g = Golomb { data: &raw, pos: 0 };
    let profile = g.bits(8)?;
    g.bits(16)?; // constraint flags, level
    g.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    let mut separate_planes = false;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = g.ue()?;
        if chroma_format == 3 {
            separate_planes = g.bit()? == 1;
        }
        g.ue()?; // bit_depth_luma_minus8
        g.ue()?; // bit_depth_chroma_minus8
        g.bit()?; // qpprime_y_zero_transform_bypass
        if g.bit()? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if g.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + g.se()? + 256) % 256;
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    g.ue()?; // log2_max_frame_num_minus4
    match g.ue()? {
        0 => {
            g.ue()?;
        }
        1 => {
            g.bit()?;
            g.se()?;
            g.se()?;
            let n = g.ue()?;
            if n > 255 {
                return None;
            }
            for _ in 0..n {
                g.se()?;
            }
        }
        _ => {}
    }
    g.ue()?; // max_num_ref_frames
    g.bit()?; // gaps_in_frame_num_value_allowed
    let width_mbs = g.ue()? as u64 + 1;
    let height_units = g.ue()? as u64 + 1;
    let frame_mbs_only = g.bit()? as u64;
    if frame_mbs_only == 0 {
        g.bit()?;
    }
    g.bit()?; // direct_8x8_inference
    let (mut cl, mut cr, mut ct, mut cb) = (0u64, 0, 0, 0);
    if g.bit()? == 1 {
        cl = g.ue()? as u64;
        cr = g.ue()? as u64;
        ct = g.ue()? as u64;
        cb = g.ue()? as u64;
    }
    let (sub_w, sub_h) = match (chroma_format, separate_planes) {
        (1, _) => (2, 2),
        (2, _) => (2, 1),
        _ => (1, 1),
    };
    let (crop_x, crop_y) = if chroma_format == 0 || separate_planes {
        (1, 2 - frame_mbs_only)
    } else {
        (sub_w, sub_h * (2 - frame_mbs_only))
    };
    let w = (width_mbs * 16).checked_sub(crop_x * (cl + cr))?;
    let h = ((2 - frame_mbs_only) * height_units * 16).checked_sub(crop_y * (ct + cb))?;
    Some((u16::try_from(w).ok()?, u16::try_from(h).ok()?))
}

#[cfg(test)]
mod tests {
    use super::super::Depacketizer;
    use super::super::testutil::{pkt, run};
    use super::*;
    use crate::codec::Codec;

    /// x264's SPS for 320x180 baseline (cropped from 192 lines).
    pub const SPS_320X180: &[u8] = &[
        0x67, 0x42, 0xC0, 0x0D, 0xD9, 0x01, 0x41, 0x9F, 0x9F, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
        0x10, 0x00, 0x00, 0x03, 0x03, 0xC0, 0xF1, 0x42, 0xA4, 0x80,
    ];
    /// x264's SPS for 320x240 high profile (chroma format and scaling flags present).
    pub const SPS_320X240_HIGH: &[u8] = &[
        0x67, 0x64, 0x00, 0x0D, 0xAC, 0xD9, 0x41, 0x41, 0xFB, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
        0x10, 0x00, 0x00, 0x03, 0x03, 0xC0, 0xF1, 0x42, 0x99, 0x60,
    ];
    const PPS: &[u8] = &[0x68, 0xCB, 0x83, 0xCB, 0x20];

    fn lp(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&(n.len() as u32).to_be_bytes());
            v.extend_from_slice(n);
        }
        v
    }

    #[test]
    fn sps_size() {
        assert_eq!(sps_dimensions(SPS_320X180), Some((320, 180)));
        assert_eq!(sps_dimensions(SPS_320X240_HIGH), Some((320, 240)));
        assert_eq!(sps_dimensions(&[0x67]), None);
    }

    fn stap(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = vec![0x78];
        for n in nals {
            v.extend_from_slice(&(n.len() as u16).to_be_bytes());
            v.extend_from_slice(n);
        }
        v
    }

    fn fu(nal: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let body = &nal[1..];
        let parts: Vec<_> = body.chunks(chunk).collect();
        let n = parts.len();
        parts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut fu_h = nal[0] & 0x1F;
                if i == 0 {
                    fu_h |= 0x80;
                }
                if i + 1 == n {
                    fu_h |= 0x40;
                }
                let mut v = vec![(nal[0] & 0xE0) | FU_A, fu_h];
                v.extend_from_slice(c);
                v
            })
            .collect()
    }

    fn idr() -> Vec<u8> {
        let mut v = vec![0x65, 0x88];
        v.extend((0..100).map(|i| (i % 200 + 1) as u8));
        v
    }

    #[test]
    fn stap_then_fu_a_then_single() {
        let mut d = Depacketizer::new(Codec::H264).unwrap();
        let idr = idr();
        let mut ps = vec![Some(pkt(1, 0, false, &stap(&[SPS_320X180, PPS])))];
        for (i, f) in fu(&idr, 30).iter().enumerate() {
            let last = i == 3;
            ps.push(Some(pkt(2 + i as u64, 0, last, f)));
        }
        let slice = [0x41, 0x9A, 0x01, 0x02];
        ps.push(Some(pkt(6, 3000, true, &slice)));
        let (frames, drops) = run(&mut d, &ps);
        assert!(drops.is_empty(), "{drops:?}");
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], (0, true, lp(&[SPS_320X180, PPS, &idr])));
        assert_eq!(frames[1], (3000, false, lp(&[&slice])));
        assert_eq!(d.dimensions(), Some((320, 180)));
        let avcc = d.avcc().unwrap();
        assert_eq!(&avcc[..6], &[1, 0x42, 0xC0, 0x0D, 0xFF, 0xE1]);
        assert_eq!(avcc.len(), 11 + SPS_320X180.len() + PPS.len());
    }

    #[test]
    fn lost_fragment_drops_the_access_unit() {
        let mut d = Depacketizer::new(Codec::H264).unwrap();
        let idr = idr();
        let mut ps = vec![Some(pkt(1, 0, false, &stap(&[SPS_320X180, PPS])))];
        for (i, f) in fu(&idr, 30).iter().enumerate() {
            ps.push(Some(pkt(2 + i as u64, 0, i == 3, f)));
        }
        ps[2] = None;
        let (frames, drops) = run(&mut d, &ps);
        assert!(frames.is_empty());
        assert_eq!(drops, vec![false]);
    }

    #[test]
    fn keyframe_without_parameter_sets_is_not_usable() {
        let mut d = Depacketizer::new(Codec::H264).unwrap();
        let (frames, drops) = run(&mut d, &[Some(pkt(1, 0, true, &idr()))]);
        assert!(frames.is_empty());
        assert_eq!(drops.len(), 1);
    }

    #[test]
    fn non_reference_units_are_discardable() {
        let mut d = Depacketizer::new(Codec::H264).unwrap();
        // nal_ref_idc 0 slice, fragmented, tail lost.
        let nal: Vec<u8> = [0x01u8, 0x9A].into_iter().chain(1..60u8).collect();
        let f = fu(&nal, 30);
        let (frames, drops) = run(&mut d, &[Some(pkt(1, 0, false, &f[0])), None]);
        assert!(frames.is_empty());
        assert_eq!(drops, vec![true]);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = sps_dimensions(&bytes);
            let mut d = Depacketizer::new(Codec::H264).unwrap();
            let _ = run(&mut d, &[Some(pkt(1, 0, false, &bytes)), Some(pkt(2, 0, true, &bytes))]);
        }
    }
}
