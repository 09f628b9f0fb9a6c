//! What the SFU reads from SDP text before handing it to the WebRTC stack: a sanity check that
//! refuses garbage early with a clear reason, and the ICE/DTLS identity of a description.

/// Largest SDP accepted.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Why an SDP was refused before parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpProblem {
    Empty,
    TooLarge,
    NotSdp,
    NoMedia,
}

impl SdpProblem {
    pub fn message(self) -> &'static str {
        match self {
            SdpProblem::Empty => "the SDP is empty",
            SdpProblem::TooLarge => "the SDP is larger than 64 KiB",
            SdpProblem::NotSdp => "this is not an SDP description (it must start with v=0)",
            SdpProblem::NoMedia => "the SDP has no audio or video m-line",
        }
    }
}

/// A quick structural check of an offer or answer.
pub fn check(sdp: &str) -> Result<(), SdpProblem> {
    let sdp = sdp.trim_start();
    if sdp.is_empty() {
        return Err(SdpProblem::Empty);
    }
    if sdp.len() > MAX_SDP_BYTES {
        return Err(SdpProblem::TooLarge);
    }
    if !sdp.starts_with("v=0") {
        return Err(SdpProblem::NotSdp);
    }
    if !sdp
        .lines()
        .any(|l| l.starts_with("m=audio ") || l.starts_with("m=video "))
    {
        return Err(SdpProblem::NoMedia);
    }
    Ok(())
}

fn attribute<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=")?.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// The first `a=ice-ufrag`.
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    attribute(sdp, "ice-ufrag")
}

/// The first `a=fingerprint` (a different one means a different PeerConnection).
pub fn fingerprint(sdp: &str) -> Option<&str> {
    attribute(sdp, "fingerprint")
}

/// The mid of the first m-line (where candidates are attached).
pub fn first_mid(sdp: &str) -> Option<&str> {
    attribute(sdp, "mid")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 AB:CD\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:abcd\r\n";

    #[test]
    fn checks() {
        assert_eq!(check(OFFER), Ok(()));
        assert_eq!(check(""), Err(SdpProblem::Empty));
        assert_eq!(check("hello"), Err(SdpProblem::NotSdp));
        assert_eq!(
            check("v=0\r\ns=-\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"),
            Err(SdpProblem::NoMedia)
        );
        assert_eq!(
            check(&"v=0\r\nm=audio 9 x\r\n".repeat(10_000)),
            Err(SdpProblem::TooLarge)
        );
        assert_eq!(ice_ufrag(OFFER), Some("abcd"));
        assert_eq!(fingerprint(OFFER), Some("sha-256 AB:CD"));
        assert_eq!(first_mid(OFFER), Some("0"));
    }
}
