//! Codecs the SFU forwards and what it needs to know of their payloads: where a keyframe
//! starts (a new subscriber, or a source switch, waits for one).

/// A forwarded codec, by MIME type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Opus,
    Vp8,
    Vp9,
    H264,
    Other,
}

impl Codec {
    pub fn from_mime(mime: &str) -> Self {
        match mime.to_ascii_lowercase().as_str() {
            "audio/opus" => Codec::Opus,
            "video/vp8" => Codec::Vp8,
            "video/vp9" => Codec::Vp9,
            "video/h264" => Codec::H264,
            _ => Codec::Other,
        }
    }

    pub fn is_video(self) -> bool {
        matches!(self, Codec::Vp8 | Codec::Vp9 | Codec::H264)
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::Opus => "opus",
            Codec::Vp8 => "vp8",
            Codec::Vp9 => "vp9",
            Codec::H264 => "h264",
            Codec::Other => "other",
        }
    }
}

/// How well an H264 `fmtp` line fits another (1 to 4): the same packetization mode counts
/// most (a receiver cannot depacketize another mode), then the same profile (RFC 6184 §8.1,
/// the first four hex digits of `profile-level-id`; the level may differ).
pub fn h264_match(fmtp: &str, wanted: &str) -> u8 {
    fn param<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
        fmtp.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
        })
    }
    let mode = |f| param(f, "packetization-mode").unwrap_or("0");
    let profile = |f| {
        param(f, "profile-level-id")
            .and_then(|p| p.get(..4))
            .map(str::to_ascii_lowercase)
    };
    let mut score = 1;
    if mode(fmtp) == mode(wanted) {
        score += 2;
    }
    if profile(fmtp).is_some() && profile(fmtp) == profile(wanted) {
        score += 1;
    }
    score
}

/// True when this RTP payload starts a keyframe (audio: always).
pub fn is_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8_keyframe(payload),
        Codec::Vp9 => vp9_keyframe(payload),
        Codec::H264 => h264_keyframe(payload),
        Codec::Opus | Codec::Other => true,
    }
}

/// RFC 7741 §4.2: payload descriptor, then the VP8 payload header whose P bit is 0 on
/// keyframes; only meaningful at the start of partition 0 (S=1, PID=0).
fn vp8_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let start_of_partition = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    if !start_of_partition || pid != 0 {
        return false;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = p.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits (M flag).
            let Some(&pid0) = p.get(i) else { return false };
            i += if pid0 & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    p.get(i).is_some_and(|h| h & 0x01 == 0)
}

/// VP9 payload descriptor: not inter-predicted (P=0), start of a frame (B=1), spatial layer 0.
fn vp9_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let inter_predicted = b0 & 0x40 != 0;
    let begins_frame = b0 & 0x08 != 0;
    if inter_predicted || !begins_frame {
        return false;
    }
    if b0 & 0x20 != 0 {
        // Layer indices present: find the spatial id.
        let mut i = 1;
        if b0 & 0x80 != 0 {
            let Some(&pid0) = p.get(i) else { return false };
            i += if pid0 & 0x80 != 0 { 2 } else { 1 };
        }
        let Some(&layers) = p.get(i) else {
            return false;
        };
        return (layers >> 1) & 0x07 == 0;
    }
    true
}

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

/// RFC 6184: an IDR slice or an SPS (which precedes one), alone, aggregated (STAP-A) or at
/// the start of a fragmented unit (FU-A).
fn h264_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1F {
        NAL_IDR | NAL_SPS => true,
        NAL_STAP_A => {
            let mut i = 1;
            while i + 2 < p.len() {
                let size = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                if size == 0 {
                    return false;
                }
                if matches!(p[i + 2] & 0x1F, NAL_IDR | NAL_SPS) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        NAL_FU_A => p
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && matches!(fu & 0x1F, NAL_IDR | NAL_SPS)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_variants_are_ranked() {
        let chrome_main = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f";
        let baseline_pm1 = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
        let baseline_pm0 = "profile-level-id=42e01f;level-asymmetry-allowed=1";
        assert_eq!(h264_match(baseline_pm1, baseline_pm1), 4);
        assert_eq!(h264_match(chrome_main, baseline_pm1), 3);
        assert_eq!(h264_match(baseline_pm0, baseline_pm1), 2);
        assert_eq!(h264_match("", "packetization-mode=0"), 3);
        assert_eq!(h264_match("garbage;;=", baseline_pm1), 1);
    }

    #[test]
    fn vp8() {
        // S=1 PID=0, no extension, payload header P=0: keyframe.
        assert!(is_keyframe(Codec::Vp8, &[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        // Same with P=1: interframe.
        assert!(!is_keyframe(Codec::Vp8, &[0x10, 0x01]));
        // Continuation packet (S=0).
        assert!(!is_keyframe(Codec::Vp8, &[0x00, 0x00]));
        // X=1, I=1 with a 15-bit picture id, then header P=0.
        assert!(is_keyframe(Codec::Vp8, &[0x90, 0x80, 0x81, 0x23, 0x00]));
        // X=1, I=1 7-bit picture id, L=1, T=1: header at index 5.
        assert!(is_keyframe(
            Codec::Vp8,
            &[0x90, 0xE0, 0x05, 0x01, 0x20, 0x00]
        ));
        assert!(!is_keyframe(
            Codec::Vp8,
            &[0x90, 0xE0, 0x05, 0x01, 0x20, 0x01]
        ));
        assert!(!is_keyframe(Codec::Vp8, &[]));
        assert!(!is_keyframe(Codec::Vp8, &[0x90, 0x80]));
    }

    #[test]
    fn vp9() {
        assert!(is_keyframe(Codec::Vp9, &[0x08]));
        assert!(!is_keyframe(Codec::Vp9, &[0x48])); // inter-predicted
        assert!(!is_keyframe(Codec::Vp9, &[0x04])); // not the start of a frame
        // L=1, no picture id, spatial id 0 and 1.
        assert!(is_keyframe(Codec::Vp9, &[0x28, 0x00]));
        assert!(!is_keyframe(Codec::Vp9, &[0x28, 0x02]));
    }

    #[test]
    fn h264() {
        assert!(is_keyframe(Codec::H264, &[0x65, 0x88])); // IDR
        assert!(is_keyframe(Codec::H264, &[0x67, 0x42])); // SPS
        assert!(!is_keyframe(Codec::H264, &[0x41, 0x9a])); // non-IDR slice
        // STAP-A holding SPS.
        assert!(is_keyframe(
            Codec::H264,
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]
        ));
        assert!(!is_keyframe(Codec::H264, &[0x78, 0x00, 0x02, 0x41, 0x9a]));
        // FU-A start of an IDR, and a middle fragment.
        assert!(is_keyframe(Codec::H264, &[0x7c, 0x85, 0x00]));
        assert!(!is_keyframe(Codec::H264, &[0x7c, 0x05, 0x00]));
        assert!(is_keyframe(Codec::Opus, &[]));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            for c in [Codec::Vp8, Codec::Vp9, Codec::H264] {
                let _ = is_keyframe(c, &bytes);
            }
        }
    }
}
