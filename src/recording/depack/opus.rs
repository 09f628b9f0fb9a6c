//! Opus (RFC 7587): one RTP packet is one Opus packet, written as one block. Every packet
//! decodes on its own, so a loss needs nothing but a gap in time.

use super::super::jitter::BufferedPacket;
use super::{Frame, Output};

/// Opus packets larger than this are not valid (RFC 6716 §3.4: at most 120 ms of 1275-byte
/// frames, and WebRTC sends far less).
const MAX_PACKET: usize = 1275 * 3 + 7;

#[derive(Debug, Default)]
pub struct Opus;

impl Opus {
    pub fn push(&mut self, p: &BufferedPacket, emit: &mut dyn FnMut(Output<'_>)) {
        if p.payload.is_empty()
            || p.payload.len() > MAX_PACKET
            || duration_48k(&p.payload).is_none()
        {
            return;
        }
        emit(Output::Frame(Frame {
            timestamp: p.timestamp,
            keyframe: true,
            data: &p.payload,
        }))
    }
}

/// Samples at 48 kHz an Opus packet decodes to, from its TOC byte (RFC 6716 §3.1); None
/// when the packet is malformed.
pub fn duration_48k(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let per_frame: u32 = match config {
        0..=11 => [480, 960, 1920, 2880][(config % 4) as usize], // SILK: 10/20/40/60 ms
        12..=15 => [480, 960][(config % 2) as usize],            // hybrid: 10/20 ms
        _ => [120, 240, 480, 960][(config % 4) as usize],        // CELT: 2.5/5/10/20 ms
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => (*packet.get(1)? & 0x3F) as u32,
    };
    let total = per_frame * frames;
    // At most 120 ms per packet.
    (frames > 0 && total <= 5760).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toc_durations() {
        assert_eq!(duration_48k(&[0x78]), Some(960)); // CELT FB 20 ms (config 15? hybrid FB 20)
        assert_eq!(duration_48k(&[0xF8]), Some(960)); // CELT FB 20 ms
        assert_eq!(duration_48k(&[0x08]), Some(960)); // SILK NB 20 ms
        assert_eq!(duration_48k(&[0x09]), Some(1920)); // two 20 ms frames
        assert_eq!(duration_48k(&[0x0B, 0x03]), Some(2880)); // code 3, three frames
        assert_eq!(duration_48k(&[0x0B, 0x00]), None);
        assert_eq!(duration_48k(&[0x1B, 0x03]), None); // 3 x 60 ms > 120 ms
        assert_eq!(duration_48k(&[]), None);
    }
}
