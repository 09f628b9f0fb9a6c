//! VP8 (RFC 7741): strips the payload descriptor; a frame starts at S=1, PID=0 and ends at
//! the marker bit. Keyframe and size come from the VP8 frame header (RFC 6386 §9.1).

use super::{Malformed, PacketInfo, PayloadFormat};

#[derive(Debug, Default)]
pub struct Vp8 {
    /// Coded size of the last keyframe.
    pub dimensions: Option<(u16, u16)>,
}

/// The parsed payload descriptor: where the VP8 data starts, and its flags.
pub(crate) struct Descriptor {
    pub offset: usize,
    pub start_of_partition: bool,
    pub partition_id: u8,
    pub non_reference: bool,
}

pub(crate) fn descriptor(p: &[u8]) -> Option<Descriptor> {
    let b0 = *p.first()?;
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            // PictureID, 7 or 15 bits (M flag).
            i += if *p.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    if i > p.len() {
        return None;
    }
    Some(Descriptor {
        offset: i,
        start_of_partition: b0 & 0x10 != 0,
        partition_id: b0 & 0x07,
        non_reference: b0 & 0x20 != 0,
    })
}

impl PayloadFormat for Vp8 {
    fn parse(
        &mut self,
        payload: &[u8],
        frame: &mut Vec<u8>,
        _first_of_frame: bool,
    ) -> Result<PacketInfo, Malformed> {
        let d = descriptor(payload).ok_or(Malformed)?;
        let data = &payload[d.offset..];
        if data.is_empty() {
            return Err(Malformed);
        }
        frame.extend_from_slice(data);
        Ok(PacketInfo {
            starts_frame: d.start_of_partition && d.partition_id == 0,
            discardable: d.non_reference,
        })
    }

    fn finish(&mut self, frame: &mut Vec<u8>) -> Result<bool, Malformed> {
        // Frame tag (3 bytes): bit 0 of the first is 0 on keyframes, which then carry the
        // start code 9d 01 2a and 14-bit width and height.
        let tag = *frame.first().ok_or(Malformed)?;
        let keyframe = tag & 0x01 == 0;
        if keyframe {
            if frame.len() < 10 || frame[3..6] != [0x9d, 0x01, 0x2a] {
                return Err(Malformed);
            }
            let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
            let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
            self.dimensions = Some((w, h));
        }
        Ok(keyframe)
    }

    fn abort(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{pkt, run};
    use super::super::{Depacketizer, Output};
    use crate::codec::Codec;

    fn keyframe_bytes() -> Vec<u8> {
        // Tag with key bit 0, start code, 320x240, then body.
        let mut f = vec![0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
        f.extend((0..50).map(|i| i as u8));
        f
    }

    fn packets(
        frame: &[u8],
        seq0: u64,
        ts: u32,
        chunk: usize,
    ) -> Vec<super::super::super::jitter::BufferedPacket> {
        let n = frame.len().div_ceil(chunk);
        frame
            .chunks(chunk)
            .enumerate()
            .map(|(i, c)| {
                // X=1, I=1 with a 15-bit picture id; S on the first packet.
                let mut p = vec![if i == 0 { 0x90 } else { 0x80 }, 0x80, 0x80 | 0x12, 0x34];
                p.extend_from_slice(c);
                pkt(seq0 + i as u64, ts, i + 1 == n, &p)
            })
            .collect()
    }

    #[test]
    fn frames_across_packets() {
        let mut d = Depacketizer::new(Codec::Vp8).unwrap();
        let key = keyframe_bytes();
        let delta = vec![0x31, 0x01, 0x00, 7, 7, 7, 7];
        let mut ps: Vec<_> = packets(&key, 10, 1000, 16).into_iter().map(Some).collect();
        ps.extend(packets(&delta, 14, 4000, 16).into_iter().map(Some));
        let (frames, drops) = run(&mut d, &ps);
        assert!(drops.is_empty());
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], (1000, true, key));
        assert_eq!(frames[1], (4000, false, delta));
        assert_eq!(d.dimensions(), Some((320, 240)));
    }

    #[test]
    fn a_lost_packet_drops_the_frame_only() {
        let mut d = Depacketizer::new(Codec::Vp8).unwrap();
        let key = keyframe_bytes();
        let mut ps: Vec<_> = packets(&key, 10, 1000, 16).into_iter().map(Some).collect();
        ps[1] = None; // lost middle packet
        let delta = vec![0x31, 0x01, 0x00, 7];
        ps.extend(packets(&delta, 14, 4000, 16).into_iter().map(Some));
        let (frames, drops) = run(&mut d, &ps);
        assert_eq!(drops, vec![false]);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0, 4000);
    }

    #[test]
    fn lost_first_packet_or_marker() {
        let mut d = Depacketizer::new(Codec::Vp8).unwrap();
        let key = keyframe_bytes();
        let mut ps: Vec<_> = packets(&key, 10, 1000, 16).into_iter().map(Some).collect();
        // Stream starts mid-frame: the first packet never came.
        ps.remove(0);
        let (frames, drops) = run(&mut d, &ps);
        assert!(frames.is_empty());
        assert_eq!(drops.len(), 1);

        // Marker packet lost: the next frame's timestamp ends it, incomplete.
        let mut d = Depacketizer::new(Codec::Vp8).unwrap();
        let mut ps: Vec<_> = packets(&key, 10, 1000, 16).into_iter().map(Some).collect();
        ps[3] = None;
        ps.extend(packets(&key, 14, 4000, 16).into_iter().map(Some));
        let (frames, drops) = run(&mut d, &ps);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0, 4000);
        assert_eq!(drops, vec![false]);
    }

    #[test]
    fn non_reference_frames_are_discardable() {
        let mut d = Depacketizer::new(Codec::Vp8).unwrap();
        // N=1, S=1, no extension; two packets, the second lost.
        let ps = vec![Some(pkt(1, 10, false, &[0x30, 0x31, 0x01, 0x00])), None];
        let (frames, drops) = run(&mut d, &ps);
        assert!(frames.is_empty());
        assert_eq!(drops, vec![true]);
    }

    #[test]
    fn garbage_is_dropped() {
        let mut d = Depacketizer::new(Codec::Vp8).unwrap();
        let mut out = 0;
        for p in [&[][..], &[0x90], &[0x90, 0x80], &[0x10]] {
            d.push(&pkt(1, 1, true, p), &mut |o| {
                if matches!(o, Output::Frame(_)) {
                    out += 1
                }
            });
        }
        assert_eq!(out, 0);
    }
}
