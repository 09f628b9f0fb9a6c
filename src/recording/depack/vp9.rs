//! VP9 (RFC 9628, formerly draft-ietf-payload-vp9), flexible and non-flexible mode.
//!
//! A picture is every layer frame with one RTP timestamp; each layer frame runs from a
//! packet with B=1 to one with E=1, and the marker bit ends the picture. Several layer
//! frames (spatial layers) are joined into a superframe with its index (VP9 bitstream
//! spec, Annex B), which is how a WebM block holds them. Keyframe and size come from the
//! first layer frame's uncompressed header.

use super::{Malformed, PacketInfo, PayloadFormat};

/// Layer frames in one picture we keep track of (VP9 allows up to 8 in a superframe).
const MAX_LAYERS: usize = 8;

#[derive(Debug, Default)]
pub struct Vp9 {
    pub dimensions: Option<(u16, u16)>,
    /// Start offsets of the layer frames in the picture being assembled.
    layer_starts: [usize; MAX_LAYERS],
    layers: usize,
    /// Inside a layer frame (B seen, E not yet).
    in_layer: bool,
}

/// The parsed payload descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Descriptor {
    pub offset: usize,
    pub inter_predicted: bool,
    pub begins: bool,
    pub ends: bool,
    pub spatial_id: u8,
}

pub(crate) fn descriptor(p: &[u8]) -> Option<Descriptor> {
    let b0 = *p.first()?;
    let (i_bit, p_bit, l_bit, f_bit) = (
        b0 & 0x80 != 0,
        b0 & 0x40 != 0,
        b0 & 0x20 != 0,
        b0 & 0x10 != 0,
    );
    let (b_bit, e_bit, v_bit) = (b0 & 0x08 != 0, b0 & 0x04 != 0, b0 & 0x02 != 0);
    let mut i = 1;
    if i_bit {
        i += if *p.get(i)? & 0x80 != 0 { 2 } else { 1 };
    }
    let mut spatial_id = 0;
    if l_bit {
        let layers = *p.get(i)?;
        spatial_id = (layers >> 1) & 0x07;
        i += 1;
        if !f_bit {
            i += 1; // TL0PICIDX
        }
    }
    if f_bit && p_bit {
        // Up to three reference indices, each with an N bit saying another follows.
        for n in 0..3 {
            let d = *p.get(i)?;
            i += 1;
            if d & 0x01 == 0 {
                break;
            }
            if n == 2 {
                return None;
            }
        }
    }
    if v_bit {
        // Scalability structure.
        let ss = *p.get(i)?;
        i += 1;
        let n_s = ((ss >> 5) & 0x07) as usize + 1;
        if ss & 0x10 != 0 {
            i += 4 * n_s; // width and height per spatial layer
        }
        if ss & 0x08 != 0 {
            let n_g = *p.get(i)? as usize;
            i += 1;
            for _ in 0..n_g {
                let g = *p.get(i)?;
                i += 1 + ((g >> 2) & 0x03) as usize;
            }
        }
    }
    if i > p.len() {
        return None;
    }
    Some(Descriptor {
        offset: i,
        inter_predicted: p_bit,
        begins: b_bit,
        ends: e_bit,
        spatial_id,
    })
}

impl PayloadFormat for Vp9 {
    fn parse(
        &mut self,
        payload: &[u8],
        frame: &mut Vec<u8>,
        first_of_frame: bool,
    ) -> Result<PacketInfo, Malformed> {
        let d = descriptor(payload).ok_or(Malformed)?;
        let data = &payload[d.offset..];
        if first_of_frame {
            self.layers = 0;
            self.in_layer = false;
        }
        if d.begins {
            if self.in_layer || self.layers == MAX_LAYERS {
                return Err(Malformed);
            }
            self.layer_starts[self.layers] = frame.len();
            self.layers += 1;
            self.in_layer = true;
        } else if !self.in_layer {
            return Err(Malformed);
        }
        frame.extend_from_slice(data);
        if d.ends {
            self.in_layer = false;
        }
        Ok(PacketInfo {
            starts_frame: d.begins,
            discardable: false,
        })
    }

    fn finish(&mut self, frame: &mut Vec<u8>) -> Result<bool, Malformed> {
        if self.in_layer || self.layers == 0 {
            return Err(Malformed);
        }
        let first_end = if self.layers > 1 {
            self.layer_starts[1]
        } else {
            frame.len()
        };
        let header = parse_header(&frame[..first_end]).ok_or(Malformed)?;
        if let Some(dims) = header.dimensions {
            self.dimensions = Some(dims);
        }
        if self.layers > 1 {
            append_superframe_index(frame, &self.layer_starts[..self.layers])?;
        }
        self.layers = 0;
        Ok(header.keyframe)
    }

    fn abort(&mut self) {
        self.layers = 0;
        self.in_layer = false;
    }
}

/// Appends a superframe index for the layer frames starting at `starts` (the last one runs
/// to the end of `frame`).
fn append_superframe_index(frame: &mut Vec<u8>, starts: &[usize]) -> Result<(), Malformed> {
    let n = starts.len();
    let size = |k: usize| {
        let end = if k + 1 < n {
            starts[k + 1]
        } else {
            frame.len()
        };
        end - starts[k]
    };
    let largest = (0..n).map(size).max().unwrap_or(0);
    let mag = match largest {
        0..=0xFF => 1,
        0x100..=0xFFFF => 2,
        0x1_0000..=0xFF_FFFF => 3,
        0x100_0000..=0xFFFF_FFFF => 4,
        _ => return Err(Malformed),
    };
    let marker = 0xC0 | (((mag - 1) as u8) << 3) | ((n - 1) as u8);
    let sizes: [usize; MAX_LAYERS] = std::array::from_fn(|k| if k < n { size(k) } else { 0 });
    frame.push(marker);
    for &s in &sizes[..n] {
        frame.extend_from_slice(&(s as u32).to_le_bytes()[..mag]);
    }
    frame.push(marker);
    Ok(())
}

/// What the recorder needs from a frame's uncompressed header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub keyframe: bool,
    pub dimensions: Option<(u16, u16)>,
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(b as u32)
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0, |acc, _| Some((acc << 1) | self.bit()?))
    }
}

/// VP9 bitstream spec §6.2: frame marker, profile, show_existing_frame, frame type, and on
/// keyframes the sync code, color config and frame size.
pub(crate) fn parse_header(frame: &[u8]) -> Option<Header> {
    let mut b = Bits {
        data: frame,
        pos: 0,
    };
    if b.bits(2)? != 2 {
        return None;
    }
    let profile = b.bit()? | (b.bit()? << 1);
    if profile == 3 {
        b.bit()?;
    }
    if b.bit()? == 1 {
        // show_existing_frame: shows a frame decoded before; no new data.
        return Some(Header {
            keyframe: false,
            dimensions: None,
        });
    }
    let keyframe = b.bit()? == 0;
    b.bit()?; // show_frame
    b.bit()?; // error_resilient_mode
    if !keyframe {
        return Some(Header {
            keyframe,
            dimensions: None,
        });
    }
    if b.bits(24)? != 0x49_83_42 {
        return None;
    }
    if profile >= 2 {
        b.bit()?; // ten_or_twelve_bit
    }
    let color_space = b.bits(3)?;
    if color_space != 7 {
        b.bit()?; // color_range
        if profile == 1 || profile == 3 {
            b.bits(3)?; // subsampling_x, subsampling_y, reserved
        }
    } else if profile == 1 || profile == 3 {
        b.bit()?;
    }
    let w = b.bits(16)? + 1;
    let h = b.bits(16)? + 1;
    Some(Header {
        keyframe,
        dimensions: Some((w.min(u16::MAX as u32) as u16, h.min(u16::MAX as u32) as u16)),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::Depacketizer;
    use super::super::testutil::{pkt, run};
    use super::*;
    use crate::codec::Codec;

    /// A profile-0 keyframe header for `w`x`h`, then filler.
    pub fn keyframe(w: u16, h: u16) -> Vec<u8> {
        // frame_marker 10, profile 00, show_existing 0, frame_type 0, show 1, err_res 0
        // = 1000_0010 ; then sync code 0x49 0x83 0x42, color_space 3 bits (1 = BT601),
        // color_range 1 bit, width-1 16 bits, height-1 16 bits.
        let mut bits: Vec<u8> = Vec::new();
        let mut push = |v: u32, n: u32| {
            for k in (0..n).rev() {
                bits.push(((v >> k) & 1) as u8);
            }
        };
        push(0b10, 2);
        push(0, 2);
        push(0, 1);
        push(0, 1);
        push(1, 1);
        push(0, 1);
        push(0x49_83_42, 24);
        push(1, 3);
        push(0, 1);
        push(w as u32 - 1, 16);
        push(h as u32 - 1, 16);
        while !bits.len().is_multiple_of(8) {
            bits.push(0);
        }
        let mut out: Vec<u8> = bits
            .chunks(8)
            .map(|c| c.iter().fold(0, |a, &b| (a << 1) | b))
            .collect();
        out.extend((0..40).map(|i| i as u8));
        out
    }

    pub fn interframe() -> Vec<u8> {
        // 10 00 0 1 1 0: inter frame, shown.
        let mut f = vec![0b1000_0110, 0x11, 0x22];
        f.extend((0..20).map(|i| i as u8));
        f
    }

    #[test]
    fn header() {
        assert_eq!(
            parse_header(&keyframe(640, 360)),
            Some(Header {
                keyframe: true,
                dimensions: Some((640, 360))
            })
        );
        assert_eq!(parse_header(&interframe()).map(|h| h.keyframe), Some(false));
        assert_eq!(parse_header(&[0x00]), None);
        assert_eq!(parse_header(&[]), None);
    }

    #[test]
    fn descriptors() {
        // Non-flexible: I (15-bit), L with TL0PICIDX, V with SS (Y=1, N_S=1, G=1, 1 group
        // with R=1).
        let d = descriptor(&[
            0xAA | 0x08,
            0x81,
            0x02,
            0x00,
            0x05,
            0x18,
            0x01,
            0x40,
            0x00,
            0xF0,
            0x01,
            0x04,
            0x01,
            0x99,
        ])
        .unwrap();
        assert_eq!(d.offset, 13);
        assert!(d.begins && !d.inter_predicted);
        // Flexible, inter-predicted with two P_DIFFs.
        let d = descriptor(&[0xDC, 0x05, 0x03, 0x02, 0x77]).unwrap();
        assert_eq!(d.offset, 4);
        assert!(d.inter_predicted && d.begins && d.ends);
        // Truncated descriptors.
        assert!(descriptor(&[0xDC, 0x05, 0x03]).is_none());
        assert!(descriptor(&[0x80]).is_none());
    }

    fn layer_packets(
        frame: &[u8],
        seq0: u64,
        ts: u32,
        flexible: bool,
        sid: u8,
        last_layer: bool,
    ) -> Vec<Option<crate::recording::jitter::BufferedPacket>> {
        let chunks: Vec<_> = frame.chunks(10).collect();
        let n = chunks.len();
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let mut b0 = 0x80 | 0x20; // I, L
                if flexible {
                    b0 |= 0x10;
                }
                if i == 0 {
                    b0 |= 0x08;
                }
                if i + 1 == n {
                    b0 |= 0x04;
                }
                let mut p = vec![b0, 0x80, 0x01, sid << 1];
                if !flexible {
                    p.push(0); // TL0PICIDX
                }
                p.extend_from_slice(c);
                Some(pkt(seq0 + i as u64, ts, last_layer && i + 1 == n, &p))
            })
            .collect()
    }

    #[test]
    fn pictures_in_both_modes() {
        for flexible in [false, true] {
            let mut d = Depacketizer::new(Codec::Vp9).unwrap();
            let key = keyframe(320, 240);
            let inter = interframe();
            let mut ps = layer_packets(&key, 1, 0, flexible, 0, true);
            let next = 1 + ps.len() as u64;
            ps.extend(layer_packets(&inter, next, 3000, flexible, 0, true));
            let (frames, drops) = run(&mut d, &ps);
            assert!(drops.is_empty());
            assert_eq!(frames, vec![(0, true, key.clone()), (3000, false, inter)]);
            assert_eq!(d.dimensions(), Some((320, 240)));
        }
    }

    #[test]
    fn spatial_layers_become_a_superframe() {
        let mut d = Depacketizer::new(Codec::Vp9).unwrap();
        let base = keyframe(160, 120);
        let top = interframe();
        let mut ps = layer_packets(&base, 1, 0, false, 0, false);
        let next = 1 + ps.len() as u64;
        ps.extend(layer_packets(&top, next, 0, false, 1, true));
        let (frames, drops) = run(&mut d, &ps);
        assert!(drops.is_empty());
        assert_eq!(frames.len(), 1);
        let f = &frames[0].2;
        assert!(frames[0].1);
        let n = base.len() + top.len();
        assert_eq!(&f[..base.len()], &base[..]);
        // Index: marker 0b110_00_001 (mag 1, 2 frames), sizes, marker.
        assert_eq!(&f[n..], &[0xC1, base.len() as u8, top.len() as u8, 0xC1]);
    }

    #[test]
    fn loss_inside_a_layer_drops_the_picture() {
        let mut d = Depacketizer::new(Codec::Vp9).unwrap();
        let key = keyframe(320, 240);
        let mut ps = layer_packets(&key, 1, 0, false, 0, true);
        ps[2] = None;
        let next = 1 + ps.len() as u64;
        ps.extend(layer_packets(&interframe(), next, 3000, false, 0, true));
        let (frames, drops) = run(&mut d, &ps);
        assert_eq!(drops, vec![false]);
        assert_eq!(frames.len(), 1);
        assert!(!frames[0].1);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = descriptor(&bytes);
            let _ = parse_header(&bytes);
            let mut d = Depacketizer::new(Codec::Vp9).unwrap();
            let _ = run(&mut d, &[Some(pkt(1, 0, true, &bytes))]);
        }
    }
}
