//! Negotiation on foreign SDP shapes, without a network: a server peer (its task not started)
//! is handed offers as Firefox and Safari write them, and answers that reject an m-line, drop a
//! codec, change a mid or reject everything; the tests read what it answered and what its legs
//! would forward. Answers are made by an `rtc` PeerConnection playing the client, then edited as
//! the foreign client would write them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use crate::error::ErrorCode;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use tokio::sync::mpsc;

use super::setup::PeerFactory;
use super::{Peer, PeerContext};
use crate::codec::Codec;
use crate::ids::{Identity, Role};
use crate::metrics::Metrics;
use crate::sfu::media_plane::MediaPlane;
use crate::sfu::sdp::sections::{Direction, Sections};
use crate::sfu::types::{MediaKind, PeerCommand, PeerEvent, PeerId, TrackId, TrackInfo};

const FINGERPRINT: &str = "sha-256 \
    3B:53:0A:2A:5C:80:2E:6F:3E:06:0F:AD:2C:8B:57:0C:54:A6:4C:72:6F:21:E1:E9:D6:FE:92:37:44:8E:11:C2";

/// Firefox 13x, audio and camera: attributes in alphabetical order, its own extension ids and
/// payload types (VP8 is 120), RTX, `a=msid-semantic:WMS *`, candidates trickled.
fn firefox_offer() -> String {
    format!(
        "v=0\r\no=mozilla...THIS_IS_SDPARTA-133.0 4711 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
         a=fingerprint:{FINGERPRINT}\r\na=group:BUNDLE 0 1\r\na=ice-options:trickle\r\n\
         a=msid-semantic:WMS *\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\n\
         a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
         a=extmap:2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level\r\n\
         a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
         a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1\r\na=fmtp:101 0-15\r\n\
         a=ice-pwd:9a3f4c1ab5b6bcd13e1c2e57ea35e6f1\r\na=ice-ufrag:ff82c2a9\r\na=mid:0\r\n\
         a=msid:{{a1}} {{t1}}\r\na=rtcp-mux\r\na=rtpmap:109 opus/48000/2\r\na=rtpmap:9 G722/8000/1\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=setup:actpass\r\na=ssrc:1111 cname:{{c}}\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 120 124 121 125 126 127 97 98\r\nc=IN IP4 0.0.0.0\r\n\
         a=sendrecv\r\na=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
         a=extmap:4 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
         a=extmap:5 urn:ietf:params:rtp-hdrext:toffset\r\n\
         a=extmap:7 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
         a=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1\r\n\
         a=fmtp:97 profile-level-id=42e01f;level-asymmetry-allowed=1\r\n\
         a=fmtp:120 max-fs=12288;max-fr=60\r\na=fmtp:124 apt=120\r\n\
         a=fmtp:121 max-fs=12288;max-fr=60\r\na=fmtp:125 apt=121\r\na=fmtp:127 apt=126\r\n\
         a=fmtp:98 apt=97\r\na=ice-pwd:9a3f4c1ab5b6bcd13e1c2e57ea35e6f1\r\na=ice-ufrag:ff82c2a9\r\n\
         a=mid:1\r\na=msid:{{a1}} {{t2}}\r\na=rtcp-fb:120 nack\r\na=rtcp-fb:120 nack pli\r\n\
         a=rtcp-fb:120 ccm fir\r\na=rtcp-fb:120 goog-remb\r\na=rtcp-fb:120 transport-cc\r\n\
         a=rtcp-fb:121 nack\r\na=rtcp-fb:121 nack pli\r\na=rtcp-fb:121 ccm fir\r\n\
         a=rtcp-fb:126 nack\r\na=rtcp-fb:126 nack pli\r\na=rtcp-fb:126 ccm fir\r\na=rtcp-mux\r\n\
         a=rtcp-rsize\r\na=rtpmap:120 VP8/90000\r\na=rtpmap:124 rtx/90000\r\na=rtpmap:121 VP9/90000\r\n\
         a=rtpmap:125 rtx/90000\r\na=rtpmap:126 H264/90000\r\na=rtpmap:127 rtx/90000\r\n\
         a=rtpmap:97 H264/90000\r\na=rtpmap:98 rtx/90000\r\na=setup:actpass\r\n\
         a=ssrc:2222 cname:{{c}}\r\na=ssrc:2223 cname:{{c}}\r\na=ssrc-group:FID 2222 2223\r\n"
    )
}

/// Firefox publishing its camera with simulcast: `a=rid` layers and `a=simulcast:send`.
fn firefox_simulcast_offer() -> String {
    firefox_offer().replace(
        "a=ssrc:2222 cname:{c}\r\na=ssrc:2223 cname:{c}\r\na=ssrc-group:FID 2222 2223\r\n",
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
         a=rid:h send\r\na=rid:l send\r\na=simulcast:send h;l\r\n",
    )
}

/// Safari 18 (libwebrtc inside WebKit), video first: no `a=msid-semantic`, H264 listed first,
/// `a=extmap-allow-mixed`, and `a=setup:active` (an offer that already chose its DTLS role).
fn safari_offer() -> String {
    format!(
        "v=0\r\no=- 8345347563247 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
         a=extmap-allow-mixed\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:Sf1q\r\na=ice-pwd:Qm3oJj9dW2cBf4r0sLq8eXzT\r\na=ice-options:trickle\r\n\
         a=fingerprint:{FINGERPRINT}\r\na=setup:active\r\na=mid:0\r\n\
         a=extmap:2 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
         a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=sendonly\r\n\
         a=msid:cam camtrack\r\na=rtcp-mux\r\na=rtcp-rsize\r\na=rtpmap:96 H264/90000\r\n\
         a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 transport-cc\r\n\
         a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f\r\n\
         a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=rtpmap:98 VP8/90000\r\n\
         a=rtcp-fb:98 nack\r\na=rtcp-fb:98 nack pli\r\na=rtpmap:99 rtx/90000\r\na=fmtp:99 apt=98\r\n\
         a=ssrc-group:FID 3333 3334\r\na=ssrc:3333 cname:s\r\na=ssrc:3334 cname:s\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111 63 0\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:Sf1q\r\na=ice-pwd:Qm3oJj9dW2cBf4r0sLq8eXzT\r\na=ice-options:trickle\r\n\
         a=fingerprint:{FINGERPRINT}\r\na=setup:active\r\na=mid:1\r\n\
         a=extmap:14 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
         a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=sendonly\r\n\
         a=msid:cam mictrack\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n\
         a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\n\
         a=rtpmap:0 PCMU/8000\r\na=ssrc:4444 cname:s\r\n"
    )
}

struct Harness {
    peer: Peer,
    /// The room's side of the peer (its command queue keeps published tracks alive).
    _handle: super::PeerHandle,
    events: mpsc::UnboundedReceiver<PeerEvent>,
    /// Keeps the fake publishers' queues open.
    _publishers: Vec<mpsc::Receiver<PeerCommand>>,
}

impl Harness {
    async fn new(owner: Identity) -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let metrics = Arc::new(Metrics::new());
        let plane = MediaPlane::new(socket, metrics.clone(), tokio::runtime::Handle::current());
        let addr: SocketAddr = "127.0.0.1:3479".parse().unwrap();
        let factory = Arc::new(PeerFactory::new(vec![addr], Vec::new()).unwrap());
        let (events_tx, events) = mpsc::unbounded_channel();
        let ctx = PeerContext {
            id: PeerId(1),
            owner,
            allow_video: true,
            max_tracks: 8,
            plane,
            factory,
            metrics,
            events: events_tx,
            next_track_id: Arc::new(AtomicU64::new(100)),
            echo: false,
        };
        let (peer, handle, _cmds, _inbox) = Peer::build(ctx, Instant::now()).unwrap();
        Self {
            peer,
            _handle: handle,
            events,
            _publishers: Vec::new(),
        }
    }

    fn track(&mut self, id: u64, kind: MediaKind, mime: &str, fmtp: &str) -> TrackInfo {
        let (tx, rx) = mpsc::channel(8);
        self._publishers.push(rx);
        TrackInfo {
            id: TrackId(id),
            owner: Identity::new(Role::Medecin, 79),
            stream: "medecin-79".into(),
            kind,
            codec: RTCRtpCodec {
                mime_type: mime.into(),
                clock_rate: if kind == MediaKind::Audio {
                    48_000
                } else {
                    90_000
                },
                channels: if kind == MediaKind::Audio { 2 } else { 0 },
                sdp_fmtp_line: fmtp.into(),
                rtcp_feedback: Vec::new(),
            },
            publisher: tx,
        }
    }

    fn drain(&mut self) -> Vec<PeerEvent> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }

    /// Our pending offer, as the client gets it.
    fn take_offer(&mut self) -> String {
        assert!(self.peer.maybe_offer(), "an offer is made");
        self.drain()
            .into_iter()
            .find_map(|e| match e {
                PeerEvent::Offer { sdp, .. } => Some(sdp),
                _ => None,
            })
            .expect("the offer reaches the room")
    }

    fn payload_types(&self, track: u64) -> Vec<(Codec, u8)> {
        self.peer
            .outbound
            .lock()
            .leg(TrackId(track))
            .map(|l| l.payload_types.clone())
            .unwrap_or_default()
    }
}

/// A client (an `rtc` PeerConnection) that answers `offer` receiving everything.
fn client_answer(offer: &str) -> String {
    let mut me = MediaEngine::default();
    me.register_default_codecs().unwrap();
    let mut pc: RTCPeerConnection = RTCPeerConnectionBuilder::new()
        .with_media_engine(me)
        .build(Instant::now())
        .unwrap();
    pc.set_remote_description(
        Instant::now(),
        RTCSessionDescription::offer(offer.to_string()).unwrap(),
    )
    .unwrap();
    let answer = pc.create_answer(None).unwrap();
    pc.set_local_description(Instant::now(), answer.clone())
        .unwrap();
    answer.sdp
}

/// `sdp` with the m-line of `mid` rewritten by `edit` (the m= line and its attributes).
fn edit_section(sdp: &str, mid: &str, edit: impl Fn(&str) -> String) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("m=") {
            parts.push(std::mem::take(&mut current));
        }
        current.push_str(line);
    }
    parts.push(current);
    let tag = format!("a=mid:{mid}\r\n");
    parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            if i > 0 && p.contains(&tag) {
                edit(&p)
            } else {
                p
            }
        })
        .collect()
}

/// An m-line section without the payload types `drop` (its m= line and their attributes).
fn without_payload_types(section: &str, drop: &[u8]) -> String {
    section
        .split_inclusive('\n')
        .filter_map(|l| {
            if l.starts_with("m=") {
                let words: Vec<&str> = l.trim_end().split(' ').collect();
                let (head, formats) = words.split_at(3.min(words.len()));
                let kept: Vec<&str> = formats
                    .iter()
                    .copied()
                    .filter(|x| x.parse::<u8>().map_or(true, |pt| !drop.contains(&pt)))
                    .collect();
                return Some(format!("{} {}\r\n", head.join(" "), kept.join(" ")));
            }
            let pt = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"]
                .iter()
                .find_map(|p| l.strip_prefix(p))
                .and_then(|r| r.split([' ', '\r']).next())
                .and_then(|n| n.parse::<u8>().ok());
            match pt {
                Some(pt) if drop.contains(&pt) => None,
                _ => Some(l.to_string()),
            }
        })
        .collect()
}

fn me() -> Identity {
    Identity::new(Role::Patient, 11)
}

#[tokio::test]
async fn firefox_offer_is_answered_on_its_own_payload_types() {
    let mut h = Harness::new(me()).await;
    let answer = h.peer.remote_offer(&firefox_offer()).expect("answered");
    let a = Sections::parse(&answer.sdp);
    assert_eq!(a.bundles, vec![vec!["0".to_string(), "1".to_string()]]);
    assert_eq!(a.media.len(), 2);
    for s in &a.media {
        assert!(!s.rejected(), "{answer:?}");
        assert_eq!(
            s.direction(),
            Direction::RecvOnly,
            "relais receives what it is offered"
        );
    }
    // The answer uses the offer's numbers (RFC 3264 §6.1): Firefox's VP8 is 120, Opus 109.
    assert!(
        a.media[1]
            .formats
            .iter()
            .any(|f| f.payload_type == 120 && f.mime == "video/vp8")
    );
    assert!(
        a.media[0]
            .formats
            .iter()
            .any(|f| f.payload_type == 109 && f.mime == "audio/opus")
    );
    assert!(
        answer.sdp.contains("a=setup:passive"),
        "relais takes the DTLS server role"
    );
    let published: Vec<_> = h
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            PeerEvent::Published { tracks, .. } => Some(tracks),
            _ => None,
        })
        .flatten()
        .map(|t| (t.kind, Codec::from_mime(&t.codec.mime_type)))
        .collect();
    assert_eq!(
        published,
        vec![
            (MediaKind::Audio, Codec::Opus),
            (MediaKind::Video, Codec::Vp8)
        ]
    );
}

#[tokio::test]
async fn simulcast_offer_gets_one_layer_asked() {
    let mut h = Harness::new(me()).await;
    let answer = h.peer.remote_offer(&firefox_simulcast_offer()).unwrap();
    assert!(!answer.sdp.contains("a=simulcast"), "{}", answer.sdp);
    assert!(!answer.sdp.contains("a=rid:"), "{}", answer.sdp);
    assert_eq!(h.peer.ups.len(), 2, "one video track, whatever the layers");
}

#[tokio::test]
async fn safari_offer_without_msid_semantic_and_setup_active() {
    let mut h = Harness::new(me()).await;
    let answer = h.peer.remote_offer(&safari_offer()).expect("answered");
    assert!(answer.sdp.contains("a=setup:passive"), "{}", answer.sdp);
    let a = Sections::parse(&answer.sdp);
    assert_eq!(a.media[0].kind, "video");
    assert_eq!(
        a.media[0].formats[0].mime, "video/h264",
        "its H264 first, kept first"
    );
    assert_eq!(a.media[0].formats[0].payload_type, 96);
    assert_eq!(h.peer.ups.len(), 2);
    assert_eq!(h.peer.ups[0].codec, Codec::H264);
}

#[tokio::test]
async fn offers_relais_cannot_serve_are_refused_saying_why() {
    let mut h = Harness::new(me()).await;
    let no_bundle = firefox_offer().replace("a=group:BUNDLE 0 1\r\n", "");
    let e = h.peer.remote_offer(&no_bundle).unwrap_err();
    assert_eq!(e.code, "unbundled_transports");
    assert!(e.message.contains("BUNDLE"), "{}", e.message);
    let mut many = firefox_offer();
    for mid in 2..11 {
        many.push_str(&format!(
            "m=video 9 UDP/TLS/RTP/SAVPF 120\r\na=mid:{mid}\r\na=sendrecv\r\na=rtpmap:120 VP8/90000\r\n"
        ));
    }
    let many = many.replace(
        "a=group:BUNDLE 0 1",
        "a=group:BUNDLE 0 1 2 3 4 5 6 7 8 9 10",
    );
    let e = h.peer.remote_offer(&many).unwrap_err();
    assert_eq!(e.code, "too_many_tracks");
    assert!(e.message.contains("media.max_tracks"), "{}", e.message);
    // Nothing of it stayed: a good offer is answered afterwards.
    assert!(h.peer.remote_offer(&firefox_offer()).is_ok());
}

/// A patient joining: our first offer with a slot per kind, the doctor's camera and microphone
/// riding on them.
async fn joined() -> (Harness, String) {
    let mut h = Harness::new(me()).await;
    h.peer.start_offer(true, true);
    let audio = h.track(
        1,
        MediaKind::Audio,
        "audio/opus",
        "minptime=10;useinbandfec=1",
    );
    let video = h.track(2, MediaKind::Video, "video/VP8", "");
    h.peer.subscribe(audio);
    h.peer.subscribe(video);
    let offer = h.take_offer();
    (h, offer)
}

#[tokio::test]
async fn first_offer_has_one_m_line_per_kind_carrying_the_others_tracks() {
    let (mut h, offer) = joined().await;
    let o = Sections::parse(&offer);
    let kinds: Vec<_> = o
        .media
        .iter()
        .map(|s| (s.kind.as_str(), s.direction()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("audio", Direction::SendRecv),
            ("video", Direction::SendRecv)
        ]
    );
    assert!(offer.contains("a=msid:medecin-79 "), "{offer}");
    // A third track (someone's screen) waits for the next offer.
    let screen = h.track(3, MediaKind::Video, "video/VP8", "");
    h.peer.subscribe(screen);
    assert!(h.peer.deferred.iter().any(|t| t.id == TrackId(3)));
    h.peer
        .remote_answer(&client_answer(&offer))
        .expect("answer taken");
    assert!(h.peer.deferred.is_empty());
    assert!(
        h.peer.downs.contains_key(&TrackId(3)),
        "added once the first answer came"
    );
    // Nothing is forwarded before the answer carrying a leg; afterwards it is mapped.
    assert!(h.payload_types(3).is_empty());
    assert!(
        h.payload_types(2).contains(&(Codec::Vp8, 96)),
        "{:?}",
        h.payload_types(2)
    );
}

#[tokio::test]
async fn answers_that_change_a_mid_or_reject_everything_are_refused() {
    let (mut h, offer) = joined().await;
    let answer = client_answer(&offer);
    let renamed = answer
        .replace("a=mid:1", "a=mid:x")
        .replace("BUNDLE 0 1", "BUNDLE 0 x");
    let e = h.peer.remote_answer(&renamed).unwrap_err();
    assert_eq!(e.code, "bad_sdp");
    assert!(e.message.contains("mids cannot change"), "{}", e.message);
    let all_rejected = edit_section(
        &edit_section(&answer, "0", |s| s.replacen("m=audio 9", "m=audio 0", 1)),
        "1",
        |s| s.replacen("m=video 9", "m=video 0", 1),
    );
    let e = h.peer.remote_answer(&all_rejected).unwrap_err();
    assert!(e.message.contains("every m-line"), "{}", e.message);
    // The offer is still outstanding: a correct answer is taken, and the legs open.
    assert!(
        h.payload_types(2).is_empty(),
        "nothing forwarded after a refused answer"
    );
    h.peer.remote_answer(&answer).expect("the real answer");
    assert!(!h.payload_types(2).is_empty());
}

#[tokio::test]
async fn a_rejected_m_line_is_never_forwarded_into() {
    let (mut h, offer) = joined().await;
    h.peer
        .remote_answer(&client_answer(&offer))
        .expect("first answer");
    h.drain();
    // A second video: its own sendonly m-line, which this client rejects (port 0).
    let screen = h.track(3, MediaKind::Video, "video/VP8", "");
    h.peer.subscribe(screen);
    h.peer.offer_not_before = None;
    let offer = h.take_offer();
    let mid = Sections::parse(&offer).media[2].mid.clone().unwrap();
    let answer = edit_section(&client_answer(&offer), &mid, |s| {
        s.replacen("m=video 9", "m=video 0", 1)
    });
    h.peer
        .remote_answer(&answer)
        .expect("a partial answer is an answer");
    assert!(
        !h.peer.downs.contains_key(&TrackId(3)),
        "the refused track is dropped"
    );
    assert!(h.payload_types(3).is_empty());
    let refused: Vec<_> = h
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            PeerEvent::Refused { track, code, .. } => Some((track, code)),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec![(TrackId(3), ErrorCode::TrackRefused)]);
    // The camera goes on.
    assert!(h.payload_types(2).contains(&(Codec::Vp8, 96)));
}

#[tokio::test]
async fn a_dropped_codec_is_reported_and_not_sent() {
    let (mut h, offer) = joined().await;
    // The client takes H264 only on the video slot, where relais sends the doctor's VP8.
    let answer = edit_section(&client_answer(&offer), "1", |s| {
        without_payload_types(s, &[96, 98])
    });
    assert!(!answer.contains("VP8"), "{answer}");
    h.peer.remote_answer(&answer).expect("answered");
    let pts = h.payload_types(2);
    assert!(pts.iter().all(|(c, _)| *c != Codec::Vp8), "{pts:?}");
    let reports: Vec<_> = h
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            PeerEvent::CodecUnsupported {
                track,
                codec,
                accepted,
                ..
            } => Some((track, codec, accepted)),
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].0, TrackId(2));
    assert_eq!(reports[0].1, Codec::Vp8);
    assert!(reports[0].2.contains(&Codec::H264), "{reports:?}");
    // And a VP8 packet would not go out on this leg.
    let packet = rtc::rtp::Packet::default();
    let forwarded =
        h.peer
            .outbound
            .lock()
            .forward(TrackId(2), packet, Codec::Vp8, true, Instant::now());
    assert!(
        !matches!(forwarded, super::outbound::Forward::Sent(_)),
        "{forwarded:?}"
    );
}

#[tokio::test]
async fn the_client_refusing_to_receive_on_its_own_m_line_moves_the_track() {
    let mut h = Harness::new(me()).await;
    // The client publishes on sendrecv m-lines (addTrack), so the doctor's tracks ride on them.
    h.peer.remote_offer(&firefox_offer()).unwrap();
    h.drain();
    let video = h.track(2, MediaKind::Video, "video/VP8", "");
    h.peer.subscribe(video);
    h.peer.offer_not_before = None;
    let offer = h.take_offer();
    let o = Sections::parse(&offer);
    assert_eq!(o.media.len(), 2, "no new m-line: {offer}");
    assert_eq!(o.media[1].direction(), Direction::SendRecv);
    // It answers sendonly there (it only publishes): the track gets an m-line of its own.
    let answer = edit_section(&client_answer(&offer), "1", |s| {
        s.replace("a=sendrecv", "a=sendonly")
            .replace("a=recvonly", "a=sendonly")
    });
    h.peer.remote_answer(&answer).unwrap();
    h.peer.offer_not_before = None;
    let offer = h.take_offer();
    let o = Sections::parse(&offer);
    assert_eq!(o.media.len(), 3, "{offer}");
    assert_eq!(o.media[2].direction(), Direction::SendOnly);
    assert_eq!(o.media[1].direction(), Direction::RecvOnly);
    // The moved track is named on one m-line only (browsers refuse a duplicate a=msid).
    let naming: Vec<&str> = offer
        .split("\r\nm=")
        .filter(|section| section.contains("a=msid:medecin-79 medecin-79-video-2"))
        .collect();
    assert_eq!(naming.len(), 1, "{offer}");
}

#[tokio::test]
async fn a_publisher_is_asked_for_a_codec_its_subscribers_decode_until_it_sends_it() {
    let mut h = Harness::new(me()).await;
    h.peer.remote_offer(&firefox_offer()).unwrap();
    let video = h
        .peer
        .ups
        .iter()
        .find(|u| u.codec == Codec::Vp8)
        .unwrap()
        .info
        .id;
    h.drain();
    // A subscriber decodes H264 only: the next offer puts Firefox's H264 (126) first.
    h.peer.prefer_codecs(video, &[Codec::H264]);
    h.peer.offer_not_before = None;
    let offer = h.take_offer();
    let first = |sdp: &str| Sections::parse(sdp).media[1].formats[0].clone();
    assert_eq!(first(&offer).mime, "video/h264", "{offer}");
    // The client's answer lists its own order again; the wish holds for later offers.
    h.peer.remote_answer(&client_answer(&offer)).unwrap();
    let audio = h.track(9, MediaKind::Audio, "audio/opus", "");
    h.peer.subscribe(audio);
    h.peer.offer_not_before = None;
    let offer = h.take_offer();
    assert_eq!(first(&offer).mime, "video/h264", "{offer}");
    // A codec it never offered: the room is told, nothing is renegotiated.
    h.drain();
    h.peer.prefer_codecs(video, &[Codec::Opus]);
    assert!(
        h.drain()
            .iter()
            .any(|e| matches!(e, PeerEvent::CodecUnavailable { .. }))
    );
}
