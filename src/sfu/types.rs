//! Values that cross between the SFU's tasks: rooms, peers and the media socket.

use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use tokio::sync::{mpsc, oneshot};

use super::peer::stats::TrackStatsView;
use crate::ids::Identity;

/// A map on the media path (keyed by SSRCs, track ids, addresses): foldhash costs a fraction of
/// SipHash per lookup and is still seeded per process.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// The set form of [`FastMap`].
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// A PeerConnection, unique in the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct PeerId(pub u64);

/// A published track, unique in the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct TrackId(pub u64);

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for TrackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Header-extension ids used between a publisher's task and its subscribers' tasks: the
/// publisher renumbers to these once, each subscriber renumbers to its own leg's ids.
pub mod internal_ext {
    pub const AUDIO_LEVEL: u8 = 1;
    pub const VIDEO_ORIENTATION: u8 = 2;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

/// A track someone publishes, as its subscribers need to know it.
#[derive(Debug, Clone)]
pub struct TrackInfo {
    pub id: TrackId,
    pub owner: Identity,
    /// The stream subscribers see it in: `{role}-{id}` for the publisher's first stream
    /// (camera and microphone), `{role}-{id}.{n}` for its n-th (a shared screen), mirroring how
    /// the publisher grouped its tracks.
    pub stream: String,
    pub kind: MediaKind,
    /// The codec the publisher sends (the first one negotiated on its m-line).
    pub codec: RTCRtpCodec,
    /// The publisher's task, to ask it for keyframes.
    pub publisher: mpsc::Sender<PeerCommand>,
}

/// A subscriber as a publisher's task sees it: where to forward packets.
#[derive(Clone)]
pub struct SubscriberLink {
    pub peer: PeerId,
    pub outbound: super::peer::SharedOutbound,
}

impl std::fmt::Debug for SubscriberLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberLink")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

pub use crate::error::{ErrorCode, SignalError, SignalResult};

/// Our answer to a client's offer, with our candidates to trickle after it.
#[derive(Debug, Clone)]
pub struct LocalAnswer {
    pub sdp: String,
    pub candidates: Vec<rtc::peer_connection::transport::RTCIceCandidateInit>,
}

/// What a room (or the SFU) asks of a peer's task.
#[derive(Debug)]
pub enum PeerCommand {
    /// The client offers (first offer, renegotiation or ICE restart): answer it.
    RemoteOffer {
        sdp: String,
        reply: oneshot::Sender<SignalResult<LocalAnswer>>,
    },
    /// The client answers our outstanding offer.
    RemoteAnswer {
        sdp: String,
        reply: oneshot::Sender<SignalResult<()>>,
    },
    /// Trickled candidates from the client (kept until a remote description exists).
    RemoteCandidates {
        candidates: Vec<rtc::peer_connection::transport::RTCIceCandidateInit>,
        reply: oneshot::Sender<SignalResult<usize>>,
    },
    /// Make the first offer ourselves: slots for the client's own audio (and video), plus
    /// the tracks it receives from the start (one offer for all of it).
    StartOffer {
        audio: bool,
        video: bool,
        subscribe: Vec<TrackInfo>,
    },
    /// Start sending this track to the client.
    Subscribe(TrackInfo),
    /// Stop sending this track to the client.
    Unsubscribe(TrackId),
    /// A subscriber of one of our published tracks.
    AddSubscriber {
        track: TrackId,
        link: SubscriberLink,
    },
    RemoveSubscriber {
        track: TrackId,
        peer: PeerId,
    },
    /// Some subscriber of `track` decodes only these codecs: the client is asked (by a new
    /// offer) to send the first of its own codecs among them.
    PreferCodecs {
        track: TrackId,
        codecs: Vec<crate::codec::Codec>,
    },
    /// What a subscriber of one of our published video tracks can take of it now (bits per
    /// second; `None`: it is not limited), for the REMB to our client
    /// ([`crate::sfu::congestion::cap`]).
    SubscriberRate {
        track: TrackId,
        peer: PeerId,
        bps: Option<f64>,
    },
    /// A subscriber waits for a keyframe of one of our published tracks.
    RequestKeyframe {
        track: TrackId,
    },
    /// Push (`Some`) or stop pushing (`None`) one of our published tracks to a recorder.
    RecordTrack {
        track: TrackId,
        tap: Option<crate::recording::worker::RecordTap>,
    },
    Stats {
        reply: oneshot::Sender<(Option<MediaPath>, Vec<TrackStatsView>)>,
    },
    Close,
}

/// What a peer's task tells its room.
#[derive(Debug)]
pub enum PeerEvent {
    /// An offer of ours for the client (renegotiation).
    Offer {
        peer: PeerId,
        sdp: String,
    },
    /// Candidates of ours, for clients that want them trickled (they are in the SDP too).
    LocalCandidates {
        peer: PeerId,
        candidates: Vec<rtc::peer_connection::transport::RTCIceCandidateInit>,
    },
    Published {
        peer: PeerId,
        tracks: Vec<TrackInfo>,
    },
    Unpublished {
        peer: PeerId,
        tracks: Vec<TrackId>,
    },
    /// A track the client refused (the m-line carrying it): not sent to it.
    Refused {
        peer: PeerId,
        track: TrackId,
        code: crate::error::ErrorCode,
        message: String,
    },
    /// The client did not accept `codec`, which `track`'s publisher sends; `accepted` are the
    /// codecs of that kind it takes (the room asks the publisher to change).
    CodecUnsupported {
        peer: PeerId,
        track: TrackId,
        codec: crate::codec::Codec,
        accepted: Vec<crate::codec::Codec>,
    },
    /// Asked to send `track` with one of `asked`, the publisher's client offered none of them.
    CodecUnavailable {
        peer: PeerId,
        track: TrackId,
        asked: Vec<crate::codec::Codec>,
    },
    /// The client's downlink became weak (relais sends it less than a good video needs), or
    /// good again ([`crate::sfu::congestion::cap::LinkQuality`]).
    LinkQuality {
        peer: PeerId,
        weak: bool,
        available_bps: Option<u64>,
    },
    /// The first RTP packet from this peer.
    FirstMedia {
        peer: PeerId,
    },
    Connected {
        peer: PeerId,
    },
    /// ICE or DTLS failed, or the task stopped on an error: the peer is gone.
    Failed {
        peer: PeerId,
        reason: crate::error::ErrorCode,
    },
    /// The task stopped (after Close or Failed).
    Closed {
        peer: PeerId,
    },
}

/// How the server reaches a participant's media: the transport and the server's own port it
/// arrives on (the media UDP port, the ICE-TCP listener's, or the shared HTTPS port's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaPath {
    /// `udp` or `tcp` (ICE-TCP).
    pub transport: &'static str,
    pub server_port: Option<u16>,
}
