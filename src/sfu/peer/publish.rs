//! What a peer publishes: the client's incoming tracks, which SSRC is which of them, their
//! statistics, fan-out to subscribers, and keyframe requests (PLI) toward the client.
//!
//! A stream's SSRC is bound to its track by the first of: the SSRC the client declared for
//! that m-line (`a=ssrc`), the mid its packets carry (`sdes:mid` extension), or its payload
//! type when a single unbound track accepts it.

use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use rtc::sdp::extmap::{AUDIO_LEVEL_URI, SDES_MID_URI, TRANSPORT_CC_URI, VIDEO_ORIENTATION_URI};

use super::Peer;
use super::outbound::Forward;
use super::stats::{RateMeter, ReceiveStats, TrackStatsView};
use crate::codec::{Codec, is_keyframe};
use crate::recording::worker::{RecordTap, TapError};
use crate::sfu::congestion::cap::{TrackCaps, publisher_cap};
use crate::sfu::feedback::nack::NackTracker;
use crate::sfu::feedback::reports::{LastSenderReport, ntp_middle};
use crate::sfu::forward::Throttle;
use crate::sfu::types::{MediaKind, PeerEvent, SubscriberLink, TrackId, TrackInfo, internal_ext};

/// Keyframe requests to one publisher track are sent at most this often, however many
/// subscribers ask.
const PLI_INTERVAL: Duration = Duration::from_millis(300);

pub(super) struct UpTrack {
    pub info: TrackInfo,
    receiver: RTCRtpReceiverId,
    /// The m-line the track arrives on.
    mid: Option<String>,
    /// This leg's id of the `sdes:mid` extension, when negotiated.
    mid_ext: Option<u8>,
    pub(super) codec: Codec,
    clock_rate: u32,
    payload_types: Vec<(u8, Codec)>,
    /// Publisher-leg ids of the extensions we forward, and their internal ids.
    ext_map: Vec<(u8, u8)>,
    pub(super) ssrc: Option<u32>,
    subscribers: Vec<SubscriberLink>,
    /// PLIs to the client ([`PLI_INTERVAL`]).
    pli_throttle: Throttle,
    pub(super) stats: ReceiveStats,
    /// Holes to NACK, when the client accepts NACKs on this (video) stream.
    pub(super) nack: Option<NackTracker>,
    /// This leg's id of the transport-wide sequence number extension, when negotiated.
    twcc_ext: Option<u8>,
    /// The client's last Sender Report on this stream (for LSR/DLSR in our reports).
    pub(super) last_sr: Option<LastSenderReport>,
    rate: RateMeter,
    plis: u64,
    /// Set while this track is recorded: packets are copied to the recorder's queue.
    record: Option<RecordTap>,
    /// The codec the recording was started with (its file is of that codec).
    record_codec: Codec,
    /// Codecs a subscriber needs this track in, asked of the client in each description.
    wanted: Option<Vec<Codec>>,
    /// Video: what each subscriber can take of it ([`crate::sfu::congestion::cap`]).
    pub(super) caps: TrackCaps,
}

impl Peer {
    /// Brings the published tracks in line with what the client now sends (after each
    /// completed negotiation): new receiving m-lines become tracks, stopped ones go away.
    pub(super) fn refresh_published(&mut self) {
        let mut receiving = Vec::new();
        let ids: Vec<_> = self.pc.get_transceivers().collect();
        for tid in ids {
            let Some(t) = self.pc.rtp_transceiver(tid) else {
                continue;
            };
            if !t.current_direction().has_recv() {
                continue;
            }
            let Some(receiver) = t.receiver() else {
                continue;
            };
            receiving.push(receiver);
        }
        let mut gone = Vec::new();
        self.ups.retain(|u| {
            let keep = receiving.contains(&u.receiver);
            if !keep {
                gone.push(u.info.id);
            }
            keep
        });
        let mut added = Vec::new();
        for receiver in receiving {
            if self.ups.iter().any(|u| u.receiver == receiver) {
                continue;
            }
            if let Some(up) = self.new_up_track(receiver) {
                added.push(up.info.clone());
                self.ups.push(up);
            }
        }
        self.rebuild_ssrc_index();
        let metrics = &self.ctx.metrics.media;
        metrics.tracks.inc_by(added.len() as i64);
        metrics.tracks.dec_by(gone.len() as i64);
        if !added.is_empty() {
            let _ = self.ctx.events.send(PeerEvent::Published {
                peer: self.ctx.id,
                tracks: added,
            });
        }
        if !gone.is_empty() {
            let _ = self.ctx.events.send(PeerEvent::Unpublished {
                peer: self.ctx.id,
                tracks: gone,
            });
        }
    }

    fn new_up_track(&mut self, receiver: RTCRtpReceiverId) -> Option<UpTrack> {
        let mut r = self.pc.rtp_receiver(receiver)?;
        let kind = match r.track().kind() {
            RtpCodecKind::Audio => MediaKind::Audio,
            RtpCodecKind::Video => MediaKind::Video,
            _ => return None,
        };
        if kind == MediaKind::Video && !self.ctx.allow_video {
            return None;
        }
        let params = r.get_parameters().rtp_parameters.clone();
        let first = params.codecs.first()?.clone();
        let codec = Codec::from_mime(&first.rtp_codec.mime_type);
        if codec == Codec::Other {
            return None;
        }
        let nack = (kind == MediaKind::Video
            && first
                .rtp_codec
                .rtcp_feedback
                .iter()
                .any(|f| f.typ == "nack" && f.parameter.is_empty()))
        .then(NackTracker::default);
        let ext_id = |uri: &str| {
            params
                .header_extensions
                .iter()
                .find(|e| e.uri == uri)
                .and_then(|e| u8::try_from(e.id).ok())
        };
        let twcc_ext = ext_id(TRANSPORT_CC_URI);
        let mid_ext = ext_id(SDES_MID_URI);
        let mid = self
            .pc
            .rtp_transceiver(receiver.into())
            .and_then(|t| t.mid().clone());
        let payload_types = params
            .codecs
            .iter()
            .map(|c| (c.payload_type, Codec::from_mime(&c.rtp_codec.mime_type)))
            .collect();
        let ext_map = params
            .header_extensions
            .iter()
            .filter_map(|e| {
                let internal = match e.uri.as_str() {
                    AUDIO_LEVEL_URI => internal_ext::AUDIO_LEVEL,
                    VIDEO_ORIENTATION_URI => internal_ext::VIDEO_ORIENTATION,
                    _ => return None,
                };
                u8::try_from(e.id).ok().map(|id| (id, internal))
            })
            .collect();
        let id = TrackId(
            self.ctx
                .next_track_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        let publisher = self.commands_weak.upgrade()?;
        let stream = self.stream_name(mid.as_deref());
        Some(UpTrack {
            info: TrackInfo {
                id,
                owner: self.ctx.owner,
                stream,
                kind,
                codec: RTCRtpCodec {
                    rtcp_feedback: Vec::new(),
                    ..first.rtp_codec.clone()
                },
                publisher,
            },
            receiver,
            mid,
            mid_ext,
            clock_rate: first.rtp_codec.clock_rate,
            codec,
            payload_types,
            ext_map,
            ssrc: None,
            subscribers: Vec::new(),
            pli_throttle: Throttle::default(),
            stats: ReceiveStats::default(),
            nack,
            twcc_ext,
            last_sr: None,
            rate: RateMeter::default(),
            plis: 0,
            record: None,
            record_codec: codec,
            wanted: None,
            caps: TrackCaps::default(),
        })
    }

    /// The stream name subscribers see the track of m-line `mid` in: the publisher's streams
    /// numbered in the order relais first saw them, a stream with audio (camera and microphone)
    /// before the others seen at the same time.
    fn stream_name(&mut self, mid: Option<&str>) -> String {
        let base = format!("{}-{}", self.ctx.owner.role, self.ctx.owner.id);
        let sections = &self.remote_sections.media;
        let mut fresh: Vec<(bool, String)> = Vec::new();
        for s in sections.iter().filter(|s| s.is_media() && !s.rejected()) {
            if let Some(id) = &s.stream
                && !self.client_streams.contains(id)
                && !fresh.iter().any(|(_, f)| f == id)
            {
                let with_audio = sections
                    .iter()
                    .any(|x| x.kind == "audio" && x.stream.as_ref() == Some(id));
                fresh.push((with_audio, id.clone()));
            }
        }
        fresh.sort_by_key(|(with_audio, _)| !with_audio);
        self.client_streams
            .extend(fresh.into_iter().map(|(_, id)| id));
        let index = mid
            .and_then(|m| self.remote_sections.by_mid(m))
            .and_then(|s| s.stream.as_ref())
            .and_then(|id| self.client_streams.iter().position(|c| c == id))
            .unwrap_or(0);
        match index {
            0 => base,
            n => format!("{base}.{}", n + 1),
        }
    }

    fn rebuild_ssrc_index(&mut self) {
        self.up_by_ssrc.clear();
        for (i, u) in self.ups.iter().enumerate() {
            if let Some(ssrc) = u.ssrc {
                self.up_by_ssrc.insert(ssrc, i);
            }
        }
    }

    /// The track a packet of a stream not seen before belongs to (see the module doc), now
    /// bound to its SSRC.
    fn bind_ssrc(&mut self, header: &rtc::rtp::header::Header) -> Option<usize> {
        let ssrc = header.ssrc;
        let declared = self
            .declared_ssrcs
            .iter()
            .find(|(s, _)| *s == ssrc)
            .map(|(_, mid)| mid.clone());
        let carried = || {
            self.ups.iter().find_map(|u| {
                let e = header.extensions.iter().find(|e| Some(e.id) == u.mid_ext)?;
                String::from_utf8(e.payload.to_vec()).ok()
            })
        };
        let index = match declared.or_else(carried) {
            Some(mid) => self
                .ups
                .iter()
                .position(|u| u.mid.as_deref() == Some(mid.as_str()))?,
            None => {
                let mut accepting = self.ups.iter().enumerate().filter(|(_, u)| {
                    u.ssrc.is_none()
                        && u.payload_types
                            .iter()
                            .any(|(pt, _)| *pt == header.payload_type)
                });
                let (index, _) = accepting.next()?;
                if accepting.next().is_some() {
                    return None;
                }
                index
            }
        };
        self.ups[index].ssrc = Some(ssrc);
        self.rebuild_ssrc_index();
        Some(index)
    }

    pub(super) fn on_rtp(&mut self, mut packet: rtc::rtp::Packet, now: Instant) {
        let ssrc = packet.header.ssrc;
        let index = match self.up_by_ssrc.get(&ssrc) {
            Some(&index) => index,
            None => match self.bind_ssrc(&packet.header) {
                Some(index) => index,
                None => {
                    self.count_drop("unknown_ssrc");
                    return;
                }
            },
        };
        self.counts.received += 1;
        if !self.saw_media {
            self.saw_media = true;
            let _ = self
                .ctx
                .events
                .send(PeerEvent::FirstMedia { peer: self.ctx.id });
        }
        if let Some(id) = self.ups[index].twcc_ext
            && let Some(seq) = transport_sequence(&packet.header, id)
        {
            self.twcc.record(seq, ssrc, now);
        }
        let up = &mut self.ups[index];
        let h = &packet.header;
        if let Some(nack) = &mut up.nack {
            nack.record(h.sequence_number, now);
        }
        up.stats.record(
            h.sequence_number,
            h.timestamp,
            packet.payload.len(),
            now,
            up.clock_rate,
        );
        let Some(codec) = up
            .payload_types
            .iter()
            .find(|(pt, _)| *pt == h.payload_type)
            .map(|(_, c)| *c)
            .filter(|c| *c != Codec::Other)
        else {
            self.count_drop("unknown_payload_type");
            return;
        };
        if codec != up.codec {
            // The client changed codec (relais asked it to, so that a subscriber can decode it,
            // or on its own): subscribers' legs map each codec they accepted.
            tracing::debug!(
                peer = %self.ctx.id,
                track = %up.info.id,
                from = up.codec.name(),
                to = codec.name(),
                "publisher changed codec"
            );
            up.codec = codec;
        }
        if let Some(tap) = &up.record
            && up.record_codec == codec
            && tap.rtp(up.info.id.0, &packet, now) == Err(TapError::Closed)
        {
            up.record = None;
        }
        if up.subscribers.is_empty() {
            return;
        }
        let keyframe = is_keyframe(codec, &packet.payload);
        normalize_extensions(&mut packet.header, &up.ext_map);
        let track = up.info.id;
        let last = up.subscribers.len() - 1;
        let mut dropped: Vec<&'static str> = Vec::new();
        let mut closed = Vec::new();
        let mut wants_keyframe = false;
        // Straight into each subscriber's outbound (one lock at a time, see its invariants).
        for (i, sub) in up.subscribers.iter().enumerate() {
            let packet = if i == last {
                std::mem::take(&mut packet)
            } else {
                packet.clone()
            };
            match sub
                .outbound
                .lock()
                .forward(track, packet, codec, keyframe, now)
            {
                Forward::Sent(payload) => {
                    self.counts.forwarded += 1;
                    self.counts.forwarded_bytes += payload as u64;
                }
                Forward::Dropped(reason) => dropped.push(reason),
                Forward::WantsKeyframe => {
                    dropped.push("awaiting_keyframe");
                    wants_keyframe = true;
                }
                Forward::Closed => closed.push(sub.peer),
            }
        }
        if !closed.is_empty() {
            up.subscribers.retain(|s| !closed.contains(&s.peer));
        }
        for reason in dropped {
            self.count_drop(reason);
        }
        if wants_keyframe {
            self.request_keyframe(track, now);
        }
    }

    pub(super) fn add_subscriber(&mut self, track: TrackId, link: SubscriberLink) {
        if let Some(up) = self.ups.iter_mut().find(|u| u.info.id == track) {
            up.subscribers.retain(|s| s.peer != link.peer);
            up.subscribers.push(link);
        }
    }

    pub(super) fn remove_subscriber(&mut self, track: TrackId, peer: crate::sfu::PeerId) {
        if let Some(up) = self.ups.iter_mut().find(|u| u.info.id == track) {
            up.subscribers.retain(|s| s.peer != peer);
            up.caps.remove(peer);
        }
    }

    /// What a subscriber of `track` can take now (`None`: not limited).
    pub(super) fn subscriber_rate(
        &mut self,
        track: TrackId,
        peer: crate::sfu::PeerId,
        bps: Option<f64>,
        now: Instant,
    ) {
        let Some(up) = self
            .ups
            .iter_mut()
            .find(|u| u.info.id == track && u.info.kind == MediaKind::Video)
        else {
            return;
        };
        // Only a current subscriber caps the track (a late message from one that left does not).
        if !up.subscribers.iter().any(|s| s.peer == peer) {
            return;
        }
        match bps {
            Some(bps) if bps.is_finite() && bps > 0.0 => up.caps.set(peer, bps, now),
            _ => up.caps.remove(peer),
        }
    }

    /// The REMB our client should get at `now`: its video tracks' weakest subscribers' shares
    /// plus its audio, `None` while any video track is not limited.
    pub(super) fn publisher_cap(&mut self, now: Instant) -> Option<f64> {
        let mut video = Vec::new();
        let mut audio = 0;
        for up in &mut self.ups {
            match up.info.kind {
                MediaKind::Video if up.ssrc.is_some() => video.push(up.caps.lowest(now)),
                MediaKind::Audio => audio += 1,
                MediaKind::Video => {}
            }
        }
        publisher_cap(&video, audio)
    }

    /// Asks the client for a keyframe of `track` (throttled).
    pub(super) fn request_keyframe(&mut self, track: TrackId, now: Instant) {
        let Some(up) = self.ups.iter_mut().find(|u| u.info.id == track) else {
            return;
        };
        let (Some(ssrc), MediaKind::Video) = (up.ssrc, up.info.kind) else {
            return;
        };
        if !up.pli_throttle.allow(now, PLI_INTERVAL) {
            return;
        }
        up.plis += 1;
        let pli = PictureLossIndication {
            sender_ssrc: self.rtcp_ssrc,
            media_ssrc: ssrc,
        };
        if self.write_rtcp(vec![Box::new(pli)]) {
            self.ctx.metrics.media.plis_sent.inc();
        }
    }

    /// Asks the client to send `track` with the first of its codecs that is in `codecs` (a
    /// subscriber decodes only those): that codec goes first on the m-line in our next offer,
    /// and clients send with the first codec the other side lists. Nothing happens when it
    /// already sends one of them; when its client offered none, the room is told.
    pub(super) fn prefer_codecs(&mut self, track: TrackId, codecs: &[Codec]) {
        let Some(i) = self.ups.iter().position(|u| u.info.id == track) else {
            return;
        };
        let up = &self.ups[i];
        if codecs.contains(&up.codec) {
            return;
        }
        let offered = up
            .mid
            .as_deref()
            .and_then(|m| self.remote_sections.by_mid(m))
            .is_some_and(|s| {
                s.formats.iter().any(|f| {
                    let c = Codec::from_mime(&f.mime);
                    c != Codec::Other && codecs.contains(&c)
                })
            });
        if !offered {
            let _ = self.ctx.events.send(PeerEvent::CodecUnavailable {
                peer: self.ctx.id,
                track,
                asked: codecs.to_vec(),
            });
            return;
        }
        tracing::debug!(
            peer = %self.ctx.id,
            %track,
            "asking the publisher to change codec"
        );
        self.ups[i].wanted = Some(codecs.to_vec());
        self.negotiation_needed = true;
    }

    /// Before each description of ours: the m-lines of tracks whose codec some subscriber cannot
    /// decode list the codecs it can first (the stack resets the order to the client's on every
    /// description it applies, so this is done each time).
    pub(super) fn apply_codec_wishes(&mut self) {
        let wishes: Vec<(RTCRtpReceiverId, Vec<Codec>)> = self
            .ups
            .iter()
            .filter_map(|u| Some((u.receiver, u.wanted.clone()?)))
            .collect();
        for (receiver, wanted) in wishes {
            let Some(mut r) = self.pc.rtp_receiver(receiver) else {
                continue;
            };
            let mut list = r.get_parameters().rtp_parameters.codecs.clone();
            // Stable: the wanted codecs first, each group in the client's own order.
            list.sort_by_key(|c| !wanted.contains(&Codec::from_mime(&c.rtp_codec.mime_type)));
            if let Some(mut t) = self.pc.rtp_transceiver(receiver.into())
                && let Err(e) = t.set_codec_preferences(list)
            {
                tracing::debug!(peer = %self.ctx.id, error = %e, "codec preference refused");
            }
        }
    }

    /// Starts (or stops) copying `track`'s packets to a recorder.
    pub(super) fn record_track(&mut self, track: TrackId, tap: Option<RecordTap>) {
        if let Some(up) = self.ups.iter_mut().find(|u| u.info.id == track) {
            up.record = tap;
            up.record_codec = up.codec;
        }
    }

    /// A publisher's Sender Report: our next report on the stream refers to it, and
    /// recorders line audio and video up with it.
    pub(super) fn record_sender_report(&mut self, sr: &SenderReport, now: Instant) {
        let Some(&index) = self.up_by_ssrc.get(&sr.ssrc) else {
            return;
        };
        let up = &mut self.ups[index];
        up.last_sr = Some(LastSenderReport {
            ntp_middle: ntp_middle(sr.ntp_time),
            at: now,
        });
        if let Some(tap) = &up.record
            && tap.sender_report(up.info.id.0, sr.ssrc, sr.ntp_time, sr.rtp_time)
                == Err(TapError::Closed)
        {
            up.record = None;
        }
    }

    pub(super) fn up_stats(&mut self, now: Instant) -> Vec<TrackStatsView> {
        self.ups
            .iter_mut()
            .map(|u| {
                let expected = u.stats.expected();
                let lost = u.stats.lost();
                TrackStatsView {
                    track_id: u.info.id.0,
                    direction: "inbound".into(),
                    kind: u.info.kind.as_str().into(),
                    codec: u.codec.name().into(),
                    packets: u.stats.packets,
                    bytes: u.stats.bytes,
                    bitrate_bps: u.rate.update(now, u.stats.bytes) as u64,
                    packets_lost: lost,
                    fraction_lost: if expected == 0 {
                        0.0
                    } else {
                        lost as f64 / expected as f64
                    },
                    jitter_ms: u.stats.jitter_ms(u.clock_rate),
                    nacks: 0,
                    retransmitted: None,
                    plis: u.plis,
                    source: None,
                    available_bps: None,
                    round_trip_ms: None,
                    subscriber_cap_bps: u.caps.lowest(now).map(|b| b as u64),
                }
            })
            .collect()
    }
}

/// The transport-wide sequence number a packet carries in extension `id`.
fn transport_sequence(h: &rtc::rtp::header::Header, id: u8) -> Option<u16> {
    if !h.extension {
        return None;
    }
    let e = h.extensions.iter().find(|e| e.id == id)?;
    Some(u16::from_be_bytes([
        *e.payload.first()?,
        *e.payload.get(1)?,
    ]))
}

/// Keeps only the extensions we forward, renumbered to internal ids.
fn normalize_extensions(h: &mut rtc::rtp::header::Header, map: &[(u8, u8)]) {
    if !h.extension {
        return;
    }
    h.extensions
        .retain_mut(|e| match map.iter().find(|(leg, _)| *leg == e.id) {
            Some((_, internal)) => {
                e.id = *internal;
                true
            }
            None => false,
        });
}
