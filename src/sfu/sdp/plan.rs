//! Negotiation decisions taken on the text of a client's description, before the WebRTC stack
//! applies it: which m-line our answer tags in its BUNDLE group, whether an answer fits the offer
//! it answers, how many tracks an offer publishes. Pure functions of [`Sections`].
//!
//! Why the BUNDLE tag is ours to choose: a client that gathers one transport per media kind
//! before BUNDLE is agreed (aiortc's default `bundlePolicy: balanced`) marks its second video
//! m-line as already sharing the first one's transport, and when the answer bundles everything
//! onto the *audio* transport it moves the first video m-line and leaves the second on a
//! transport it then stops: that m-line's media is never sent nor received. Tagging an m-line of
//! the shared transport instead (RFC 8843 lets the answerer pick its tagged m= section) moves
//! the lone audio m-line onto it and every m-line keeps a live transport. A client with two such
//! shared transports (two audio and two video m-lines in its first offer) cannot be helped by any
//! tag: its offer is refused with a message saying what to change.

use super::sections::{Section, Sections};

/// A writer's transport as its description shows it (see [`Section::transport_key`]).
type TransportKey<'a> = (u16, &'a [String]);

/// How our answer bundles the client's m-lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundlePlan {
    /// The stack's answer as it is.
    AsIs,
    /// Put this mid first in the answer's BUNDLE group.
    Tag(String),
    /// No answer can keep every m-line on a live transport.
    Unservable(String),
}

/// Which BUNDLE tag keeps every m-line of `offer` alive (see the module doc).
pub fn bundle_plan(offer: &Sections) -> BundlePlan {
    // relais serves every m-line of a PeerConnection on one transport: an m-line the client
    // keeps out of BUNDLE would get an ICE and DTLS transport of its own that nothing answers.
    let live: Vec<&Section> = offer
        .media
        .iter()
        .filter(|s| s.is_media() && !s.rejected())
        .collect();
    let outside: Vec<String> = live
        .iter()
        .filter(|s| {
            offer
                .bundle()
                .is_none_or(|g| !s.mid.as_ref().is_some_and(|m| g.contains(m)))
        })
        .map(|s| s.mid.clone().unwrap_or_else(|| "(no mid)".into()))
        .collect();
    if live.len() > 1 && !outside.is_empty() {
        return BundlePlan::Unservable(format!(
            "m-lines {} are not in a BUNDLE group: relais carries all media of a connection on \
             one transport; offer a=group:BUNDLE with every m-line (bundlePolicy max-bundle)",
            outside.join(", ")
        ));
    }
    let Some(group) = offer.bundle() else {
        return BundlePlan::AsIs;
    };
    let members: Vec<&Section> = group
        .iter()
        .filter_map(|mid| offer.by_mid(mid))
        .filter(|s| !s.rejected() && !s.bundle_only && s.port != 9 && s.port != 0)
        .collect();
    // Without candidates or real ports in the offer nothing shows how its writer laid out its
    // transports: such writers (browsers) bundle as JSEP says.
    if members.len() < 2 || members.iter().all(|s| s.candidates.is_empty()) {
        return BundlePlan::AsIs;
    }
    let Some(tagged) = group.first().and_then(|mid| offer.by_mid(mid)) else {
        return BundlePlan::AsIs;
    };
    // Transports, by the port and candidates their m-lines repeat, in order of first use.
    let mut transports: Vec<(TransportKey, Vec<&Section>)> = Vec::new();
    for s in &members {
        match transports.iter_mut().find(|(k, _)| *k == s.transport_key()) {
            Some((_, list)) => list.push(s),
            None => transports.push((s.transport_key(), vec![s])),
        }
    }
    let shared_untagged: Vec<&Vec<&Section>> = transports
        .iter()
        .filter(|(k, list)| list.len() > 1 && *k != tagged.transport_key())
        .map(|(_, list)| list)
        .collect();
    let tag_shared = transports
        .iter()
        .any(|(k, list)| list.len() > 1 && *k == tagged.transport_key());
    match shared_untagged.as_slice() {
        [] => BundlePlan::AsIs,
        [one] if !tag_shared => match one.first().and_then(|s| s.mid.clone()) {
            Some(mid) => BundlePlan::Tag(mid),
            None => BundlePlan::AsIs,
        },
        _ => BundlePlan::Unservable(
            "this offer puts its audio m-lines on one transport and its video m-lines on \
             another before BUNDLE is agreed (aiortc's bundlePolicy \"balanced\" does this with \
             two tracks of each kind in a first offer), and one of them would be left on a \
             stopped transport: set bundlePolicy to max-bundle, or add the extra tracks in a \
             later offer once the call is connected"
                .into(),
        ),
    }
}

/// `sdp` with `a=msid-semantic:WMS *` at session level (the stack writes it in some
/// descriptions only). Clients such as aiortc name a received track after its `a=msid` only
/// when the session lists its stream under that attribute; without it they make a name up, and
/// the other side's tracks cannot be told apart.
pub fn with_msid_semantic(sdp: &str) -> String {
    if sdp.lines().any(|l| l.starts_with("a=msid-semantic")) {
        return sdp.to_string();
    }
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    match sdp.find("\nm=") {
        Some(i) => format!("{}a=msid-semantic:WMS *{eol}{}", &sdp[..=i], &sdp[i + 1..]),
        None => format!("{sdp}a=msid-semantic:WMS *{eol}"),
    }
}

/// Our answer without simulcast (`a=simulcast`, `a=rid`): relais forwards one encoding per
/// track, and an offerer whose simulcast is not answered sends a single stream (RFC 8853 §5.3).
pub fn without_simulcast(sdp: &str) -> String {
    sdp.split_inclusive('\n')
        .filter(|l| {
            let l = l.trim_start();
            !l.starts_with("a=simulcast:") && !l.starts_with("a=rid:")
        })
        .collect()
}

/// Rewrites the first `a=group:BUNDLE` line of `sdp` so that `tag` comes first, and gives the
/// tagged m-line the candidates of the m-line tagged before (the stack writes them there only):
/// a client gathers the bundle's remote candidates from its tagged m-line.
pub fn retag_bundle(sdp: &str, tag: &str) -> String {
    let lines: Vec<&str> = sdp.split_inclusive('\n').collect();
    let body = |l: &str| l.trim_end_matches(['\r', '\n']).to_string();
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    // The candidate lines of the first m-line that has any.
    let candidates: Vec<String> = {
        let mut found = Vec::new();
        let mut in_media = false;
        for l in &lines {
            let b = body(l);
            if b.starts_with("m=") {
                if !found.is_empty() {
                    break;
                }
                in_media = true;
            } else if in_media && (b.starts_with("a=candidate:") || b == "a=end-of-candidates") {
                found.push(b);
            }
        }
        found
    };
    let mut out = String::with_capacity(sdp.len() + 256);
    let mut section_mid: Option<String> = None;
    let mut section_has_candidates = false;
    let mut pending: Vec<String> = Vec::new();
    let flush = |out: &mut String, mid: &Option<String>, has: bool, pending: &mut Vec<String>| {
        for l in pending.drain(..) {
            out.push_str(&l);
        }
        if mid.as_deref() == Some(tag) && !has {
            for c in &candidates {
                out.push_str(c);
                out.push_str(eol);
            }
        }
    };
    let mut grouped = false;
    for l in lines {
        let b = body(l);
        if b.starts_with("m=") {
            flush(&mut out, &section_mid, section_has_candidates, &mut pending);
            section_mid = None;
            section_has_candidates = false;
            pending.push(l.to_string());
            continue;
        }
        if !grouped && let Some(mids) = b.strip_prefix("a=group:BUNDLE ") {
            let mut mids: Vec<&str> = mids.split_whitespace().collect();
            if let Some(i) = mids.iter().position(|m| *m == tag) {
                let tagged = mids.remove(i);
                mids.insert(0, tagged);
            }
            pending.push(format!(
                "a=group:BUNDLE {}{}",
                mids.join(" "),
                &l[b.len()..]
            ));
            grouped = true;
            continue;
        }
        if let Some(mid) = b.strip_prefix("a=mid:") {
            section_mid = Some(mid.trim().to_string());
        }
        if b.starts_with("a=candidate:") {
            section_has_candidates = true;
        }
        // Lines keep their order; the tagged m-line's candidates go at its end.
        pending.push(l.to_string());
    }
    flush(&mut out, &section_mid, section_has_candidates, &mut pending);
    out
}

/// The tagged mid of a description's first BUNDLE group (where candidates belong), or its
/// first mid.
pub fn bundle_tag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("a=group:BUNDLE ")?
                .split_whitespace()
                .next()
        })
        .or_else(|| super::first_mid(sdp))
}

/// Whether `answer` answers `offer`: the same m-lines in the same order with the same mids
/// (RFC 3264 §6), and not every one of them rejected. The message says what is wrong.
pub fn check_answer(offer: &Sections, answer: &Sections) -> Result<(), String> {
    if answer.media.len() != offer.media.len() {
        return Err(format!(
            "the answer has {} m-lines where the offer has {}: answer each m-line of the offer, \
             in order",
            answer.media.len(),
            offer.media.len()
        ));
    }
    for (i, (o, a)) in offer.media.iter().zip(&answer.media).enumerate() {
        if a.kind != o.kind {
            return Err(format!(
                "m-line {i} of the answer is {} where the offer has {}",
                a.kind, o.kind
            ));
        }
        if !a.rejected() && a.mid != o.mid {
            return Err(format!(
                "m-line {i} of the answer has mid {} where the offer has {}: mids cannot change",
                a.mid.as_deref().unwrap_or("(none)"),
                o.mid.as_deref().unwrap_or("(none)")
            ));
        }
    }
    let media: Vec<&Section> = answer.media.iter().filter(|s| s.is_media()).collect();
    if !media.is_empty() && media.iter().all(|s| s.rejected()) {
        return Err(
            "the answer rejects every m-line (port 0): nothing could be sent or received".into(),
        );
    }
    Ok(())
}

/// The tracks an offer publishes: its media m-lines, not rejected, on which the client sends.
pub fn published_tracks(offer: &Sections) -> usize {
    offer
        .media
        .iter()
        .filter(|s| s.is_media() && !s.rejected() && s.direction().sends())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// aiortc 1.16, default configuration, audio + camera + screen (one ufrag, one transport per
    /// kind: the two video m-lines repeat the same port and candidates).
    const AIORTC_BALANCED: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1 2\r\na=msid-semantic:WMS *\r\n\
        m=audio 37359 UDP/TLS/RTP/SAVPF 96 0\r\nc=IN IP4 192.0.2.2\r\na=sendrecv\r\na=mid:0\r\n\
        a=rtpmap:96 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n\
        a=candidate:f9 1 udp 2130706431 192.0.2.2 37359 typ host\r\na=ice-ufrag:xcKz\r\n\
        m=video 56486 UDP/TLS/RTP/SAVPF 97\r\nc=IN IP4 192.0.2.2\r\na=sendrecv\r\na=mid:1\r\n\
        a=rtpmap:97 VP8/90000\r\na=candidate:f9 1 udp 2130706431 192.0.2.2 56486 typ host\r\n\
        a=ice-ufrag:xcKz\r\n\
        m=video 56486 UDP/TLS/RTP/SAVPF 97\r\nc=IN IP4 192.0.2.2\r\na=sendrecv\r\na=mid:2\r\n\
        a=rtpmap:97 VP8/90000\r\na=candidate:f9 1 udp 2130706431 192.0.2.2 56486 typ host\r\n\
        a=ice-ufrag:xcKz\r\n";

    fn m(kind: &str, port: u16, mid: &str, cand_port: Option<u16>) -> String {
        let cand = cand_port
            .map(|p| format!("a=candidate:1 1 udp 1 192.0.2.2 {p} typ host\r\n"))
            .unwrap_or_default();
        format!("m={kind} {port} UDP/TLS/RTP/SAVPF 96\r\na=mid:{mid}\r\n{cand}")
    }

    fn offer(group: &str, lines: &[String]) -> Sections {
        Sections::parse(&format!(
            "v=0\r\na=group:BUNDLE {group}\r\n{}",
            lines.concat()
        ))
    }

    #[test]
    fn aiortc_balanced_video_pair_gets_a_video_tag() {
        let s = Sections::parse(AIORTC_BALANCED);
        assert_eq!(bundle_plan(&s), BundlePlan::Tag("1".into()));
        let answer = "v=0\r\na=group:BUNDLE 0 1 2\r\n\
            m=audio 9 x\r\na=mid:0\r\na=candidate:1 1 udp 1 198.51.100.1 3479 typ host\r\n\
            a=end-of-candidates\r\nm=video 9 x\r\na=mid:1\r\na=sendrecv\r\n\
            m=video 9 x\r\na=mid:2\r\n";
        let retagged = retag_bundle(answer, "1");
        assert_eq!(
            retagged,
            "v=0\r\na=group:BUNDLE 1 0 2\r\n\
            m=audio 9 x\r\na=mid:0\r\na=candidate:1 1 udp 1 198.51.100.1 3479 typ host\r\n\
            a=end-of-candidates\r\nm=video 9 x\r\na=mid:1\r\na=sendrecv\r\n\
            a=candidate:1 1 udp 1 198.51.100.1 3479 typ host\r\na=end-of-candidates\r\n\
            m=video 9 x\r\na=mid:2\r\n"
        );
        assert_eq!(bundle_tag(&retagged), Some("1"));
        assert_eq!(bundle_tag("v=0\r\nm=audio 9 x\r\na=mid:a\r\n"), Some("a"));
    }

    #[test]
    fn browsers_and_bundled_offers_are_left_alone() {
        // Chrome's first offer: port 9, candidates trickled later.
        let chrome = offer(
            "0 1 2",
            &[
                m("audio", 9, "0", None),
                m("video", 9, "1", None),
                m("video", 9, "2", None),
            ],
        );
        assert_eq!(bundle_plan(&chrome), BundlePlan::AsIs);
        // Everything on one transport (max-bundle, or any re-offer).
        let bundled = offer(
            "0 1 2",
            &[
                m("audio", 5000, "0", Some(5000)),
                m("video", 5000, "1", Some(5000)),
                m("video", 5000, "2", Some(5000)),
            ],
        );
        assert_eq!(bundle_plan(&bundled), BundlePlan::AsIs);
        // One transport per m-line (max-compat): all move to the tagged one.
        let compat = offer(
            "0 1 2",
            &[
                m("audio", 5000, "0", Some(5000)),
                m("video", 5002, "1", Some(5002)),
                m("video", 5004, "2", Some(5004)),
            ],
        );
        assert_eq!(bundle_plan(&compat), BundlePlan::AsIs);
        // Firefox bundle-only m-lines (port 0 + a=bundle-only) and no group at all.
        let bundle_only = Sections::parse(
            "v=0\r\na=group:BUNDLE 0 1\r\nm=audio 5000 x\r\na=mid:0\r\n\
             a=candidate:1 1 udp 1 192.0.2.2 5000 typ host\r\nm=video 0 x\r\na=bundle-only\r\na=mid:1\r\n",
        );
        assert_eq!(bundle_plan(&bundle_only), BundlePlan::AsIs);
        assert_eq!(
            bundle_plan(&Sections::parse("v=0\r\nm=audio 5000 x\r\na=mid:0\r\n")),
            BundlePlan::AsIs
        );
        // The shared transport is the tagged one's: the others move onto it.
        let tag_shared = offer(
            "0 1 2",
            &[
                m("video", 5000, "0", Some(5000)),
                m("video", 5000, "1", Some(5000)),
                m("audio", 5002, "2", Some(5002)),
            ],
        );
        assert_eq!(bundle_plan(&tag_shared), BundlePlan::AsIs);
    }

    #[test]
    fn m_lines_outside_bundle_cannot_be_served() {
        let none = Sections::parse("v=0\r\nm=audio 9 x\r\na=mid:0\r\nm=video 9 x\r\na=mid:1\r\n");
        match bundle_plan(&none) {
            BundlePlan::Unservable(why) => assert!(why.contains("m-lines 0, 1"), "{why}"),
            other => panic!("{other:?}"),
        }
        let partial = Sections::parse(
            "v=0\r\na=group:BUNDLE 0\r\nm=audio 9 x\r\na=mid:0\r\nm=video 9 x\r\na=mid:1\r\n",
        );
        match bundle_plan(&partial) {
            BundlePlan::Unservable(why) => assert!(why.contains("m-lines 1 "), "{why}"),
            other => panic!("{other:?}"),
        }
        // One m-line needs no group; a rejected one outside the group is no matter.
        let single = Sections::parse("v=0\r\nm=audio 9 x\r\na=mid:0\r\nm=video 0 x\r\na=mid:1\r\n");
        assert_eq!(bundle_plan(&single), BundlePlan::AsIs);
    }

    #[test]
    fn msid_semantic_is_always_written() {
        let sdp = "v=0\r\nt=0 0\r\nm=audio 9 x\r\na=mid:0\r\n";
        assert_eq!(
            with_msid_semantic(sdp),
            "v=0\r\nt=0 0\r\na=msid-semantic:WMS *\r\nm=audio 9 x\r\na=mid:0\r\n"
        );
        let has = "v=0\r\na=msid-semantic: WMS\r\nm=audio 9 x\r\n";
        assert_eq!(with_msid_semantic(has), has);
    }

    #[test]
    fn simulcast_is_not_answered() {
        let answer = "v=0\r\nm=video 9 x\r\na=mid:1\r\na=rid:h recv\r\na=rid:l recv\r\n\
                      a=simulcast:recv h;l\r\na=recvonly\r\n";
        assert_eq!(
            without_simulcast(answer),
            "v=0\r\nm=video 9 x\r\na=mid:1\r\na=recvonly\r\n"
        );
    }

    #[test]
    fn two_shared_transports_cannot_be_served() {
        let both = offer(
            "0 1 2 3",
            &[
                m("audio", 5000, "0", Some(5000)),
                m("audio", 5000, "1", Some(5000)),
                m("video", 5002, "2", Some(5002)),
                m("video", 5002, "3", Some(5002)),
            ],
        );
        match bundle_plan(&both) {
            BundlePlan::Unservable(why) => assert!(why.contains("max-bundle"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_must_fit_their_offer() {
        let o = offer("0 1", &[m("audio", 9, "0", None), m("video", 9, "1", None)]);
        let same = offer("0 1", &[m("audio", 9, "0", None), m("video", 9, "1", None)]);
        assert_eq!(check_answer(&o, &same), Ok(()));
        let one_rejected = offer("0", &[m("audio", 9, "0", None), m("video", 0, "1", None)]);
        assert_eq!(check_answer(&o, &one_rejected), Ok(()));
        let renamed = offer("0 x", &[m("audio", 9, "0", None), m("video", 9, "x", None)]);
        let e = check_answer(&o, &renamed).unwrap_err();
        assert!(e.contains("mid x") && e.contains("cannot change"), "{e}");
        let all_rejected = offer("", &[m("audio", 0, "0", None), m("video", 0, "1", None)]);
        assert!(
            check_answer(&o, &all_rejected)
                .unwrap_err()
                .contains("every m-line")
        );
        let short = offer("0", &[m("audio", 9, "0", None)]);
        assert!(check_answer(&o, &short).unwrap_err().contains("1 m-lines"));
        let swapped = offer("0 1", &[m("video", 9, "0", None), m("audio", 9, "1", None)]);
        assert!(check_answer(&o, &swapped).unwrap_err().contains("is video"));
    }

    #[test]
    fn counts_published_tracks() {
        let s = Sections::parse(
            "v=0\r\nm=audio 9 x\r\na=sendrecv\r\nm=video 9 x\r\na=recvonly\r\n\
             m=video 9 x\r\na=sendonly\r\nm=video 0 x\r\na=sendonly\r\nm=application 9 x\r\n",
        );
        assert_eq!(published_tracks(&s), 2);
    }
}
