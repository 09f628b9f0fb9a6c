//! What the SFU reads from SDP text before handing it to the WebRTC stack: a sanity check that
//! refuses garbage early with a clear reason, the ICE/DTLS identity of a description (its DTLS
//! role and certificate fingerprints, which relais's own DTLS needs), and which SSRC a client
//! declares for which m-line.

pub mod plan;
pub mod sections;

/// Largest SDP accepted.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Why an SDP was refused before parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpProblem {
    Empty,
    TooLarge,
    NotSdp,
    NoMedia,
    NoFingerprint,
}

impl SdpProblem {
    pub fn message(self) -> &'static str {
        match self {
            SdpProblem::Empty => "the SDP is empty",
            SdpProblem::TooLarge => "the SDP is larger than 64 KiB",
            SdpProblem::NotSdp => "this is not an SDP description (it must start with v=0)",
            SdpProblem::NoMedia => "the SDP has no audio or video m-line",
            SdpProblem::NoFingerprint => {
                "the SDP has no a=fingerprint:sha-256 (DTLS-SRTP authenticates with it)"
            }
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

/// What relais's DTLS needs of a client's description: a SHA-256 certificate fingerprint.
pub fn check_fingerprint(sdp: &str) -> Result<(), SdpProblem> {
    if fingerprints(sdp).iter().any(|(alg, _)| alg == "sha-256") {
        Ok(())
    } else {
        Err(SdpProblem::NoFingerprint)
    }
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

/// The DTLS role a description takes (`a=setup`, RFC 4145 and RFC 5763).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Starts the handshake (DTLS client).
    Active,
    /// Waits for it (DTLS server).
    Passive,
    /// Either (offers only): the answer decides.
    ActPass,
}

/// The first `a=setup` of a description.
pub fn setup(sdp: &str) -> Option<Setup> {
    match attribute(sdp, "setup")? {
        "active" => Some(Setup::Active),
        "passive" => Some(Setup::Passive),
        "actpass" => Some(Setup::ActPass),
        _ => None,
    }
}

/// Every `a=fingerprint` (session or media level) as (hash function, value), lower-case.
pub fn fingerprints(sdp: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let found = sdp
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=fingerprint:"))
        .filter_map(|v| {
            let (alg, value) = v.trim().split_once(' ')?;
            Some((alg.to_ascii_lowercase(), value.trim().to_ascii_lowercase()))
        });
    for f in found {
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

/// The SSRCs a description declares (`a=ssrc`), each with the mid of its m-line.
pub fn ssrc_mids(sdp: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut section_ssrcs: Vec<u32> = Vec::new();
    let mut section_mid: Option<&str> = None;
    let mut flush = |ssrcs: &mut Vec<u32>, mid: Option<&str>| {
        if let Some(mid) = mid {
            for ssrc in ssrcs.iter() {
                out.push((*ssrc, mid.to_string()));
            }
        }
        ssrcs.clear();
    };
    for line in sdp.lines().map(str::trim) {
        if line.starts_with("m=") {
            flush(&mut section_ssrcs, section_mid.take());
        } else if let Some(mid) = line.strip_prefix("a=mid:") {
            section_mid = Some(mid.trim());
        } else if let Some(rest) = line.strip_prefix("a=ssrc:")
            && let Some(ssrc) = rest.split(' ').next().and_then(|s| s.parse().ok())
            && !section_ssrcs.contains(&ssrc)
        {
            section_ssrcs.push(ssrc);
        }
    }
    flush(&mut section_ssrcs, section_mid);
    out
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
        assert_eq!(check_fingerprint(OFFER), Ok(()));
        assert_eq!(
            check_fingerprint("v=0\r\nm=audio 9 x\r\na=fingerprint:sha-1 00:11\r\n"),
            Err(SdpProblem::NoFingerprint)
        );
        assert_eq!(ice_ufrag(OFFER), Some("abcd"));
        assert_eq!(fingerprint(OFFER), Some("sha-256 AB:CD"));
        assert_eq!(first_mid(OFFER), Some("0"));
    }

    #[test]
    fn dtls_identity_and_declared_ssrcs() {
        let sdp = "v=0\r\na=fingerprint:SHA-256 AB:CD\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=setup:actpass\r\na=ssrc:11 cname:x\r\n\
            a=ssrc:11 msid:a b\r\na=mid:0\r\na=fingerprint:sha-256 ab:cd\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\na=ssrc:22 cname:x\r\n\
            a=fingerprint:sha-1 00:11\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=ssrc:33 cname:x\r\n";
        assert_eq!(setup(sdp), Some(Setup::ActPass));
        assert_eq!(setup("v=0\r\na=setup:passive\r\n"), Some(Setup::Passive));
        assert_eq!(setup("v=0\r\na=setup:holdconn\r\n"), None);
        assert_eq!(
            fingerprints(sdp),
            vec![
                ("sha-256".into(), "ab:cd".into()),
                ("sha-1".into(), "00:11".into())
            ]
        );
        // The last m-line has no mid: its SSRC cannot be placed.
        assert_eq!(ssrc_mids(sdp), vec![(11, "0".into()), (22, "v".into())]);
    }
}
