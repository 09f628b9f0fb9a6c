//! Offer/answer for one peer.
//!
//! The client may offer (its first offer, a renegotiation, an ICE restart); we answer at once.
//! We offer when our side changed (a track to send, or to stop sending) — only in the stable
//! state and never while an offer of ours waits for its answer. A client offer that arrives
//! while ours is outstanding is refused (`negotiation_in_progress`): the client answers ours
//! first. A description the stack cannot apply is rolled back, leaving the peer as it was.
//!
//! Before the stack sees a client's description relais reads it itself ([`sdp::plan`]): an
//! offer publishing more than `media.max_tracks` tracks is refused (`too_many_tracks`), our
//! answer's BUNDLE tag is chosen so that every m-line keeps a live transport, and an answer
//! whose m-lines do not match our offer, or that rejects all of them, is refused (`bad_sdp`).

use std::time::{Duration, Instant};

use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use super::dtls_srtp::{DtlsSrtp, Role};
use super::{Peer, Signaling};
use crate::error::ErrorCode;
use crate::sfu::sdp::plan::{self, BundlePlan};
use crate::sfu::sdp::sections::Sections;
use crate::sfu::sdp::{self, Setup};
use crate::sfu::types::{LocalAnswer, MediaKind, PeerEvent, SignalError, SignalResult};

/// How long our next offer waits after a completed negotiation (see `Peer::offer_not_before`).
const OFFER_SETTLE: Duration = Duration::from_millis(150);

/// Candidates kept while no remote description exists.
const MAX_PENDING_CANDIDATES: usize = 64;

impl Peer {
    pub(super) fn remote_offer(&mut self, offer: &str) -> SignalResult<LocalAnswer> {
        sdp::check(offer).map_err(|p| SignalError::bad_sdp(p.message()))?;
        if self.signaling == Signaling::HaveLocalOffer {
            return Err(SignalError::new(
                ErrorCode::NegotiationInProgress,
                "the server's offer is waiting for your answer; answer it before offering",
            ));
        }
        sdp::check_fingerprint(offer).map_err(|p| SignalError::bad_sdp(p.message()))?;
        let sections = Sections::parse(offer);
        let published = plan::published_tracks(&sections);
        if published > self.ctx.max_tracks {
            return Err(SignalError::new(
                ErrorCode::TooManyTracks,
                format!(
                    "this offer publishes {published} tracks; relais takes at most {} per \
                     participant (setting media.max_tracks)",
                    self.ctx.max_tracks
                ),
            ));
        }
        let bundle = plan::bundle_plan(&sections);
        if let BundlePlan::Unservable(why) = &bundle {
            return Err(SignalError::new(
                ErrorCode::UnbundledTransports,
                why.clone(),
            ));
        }
        let now = Instant::now();
        let desc = RTCSessionDescription::offer(offer.to_string())
            .map_err(|e| SignalError::bad_sdp(format!("unreadable offer: {e}")))?;
        if let Err(e) = self.pc.set_remote_description(now, desc) {
            self.rollback_remote(now);
            return Err(SignalError::bad_sdp(format!("offer refused: {e}")));
        }
        self.apply_codec_wishes();
        let answer = match self.pc.create_answer(None) {
            Ok(a) => a,
            Err(e) => {
                self.rollback_remote(now);
                return Err(SignalError::bad_sdp(format!("no answer possible: {e}")));
            }
        };
        if let Err(e) = self.pc.set_local_description(now, answer) {
            self.rollback_remote(now);
            return Err(SignalError::bad_sdp(format!("no answer possible: {e}")));
        }
        let local = self.local_sdp()?;
        self.remote_set = true;
        self.can_offer = true;
        self.signaling = Signaling::Stable;
        self.client_offered = sections
            .media
            .iter()
            .filter_map(|s| Some((s.mid.clone()?, !s.rejected() && s.direction().receives())))
            .collect();
        self.after_negotiation(&local, sections)?;
        if let BundlePlan::Tag(mid) = bundle {
            self.bundle_tag = Some(mid);
        }
        let sent = self.as_sent(local);
        Ok(LocalAnswer {
            candidates: self.local_candidates(&sent),
            sdp: sent,
        })
    }

    pub(super) fn remote_answer(&mut self, answer: &str) -> SignalResult<()> {
        if self.signaling != Signaling::HaveLocalOffer {
            return Err(SignalError::new(
                ErrorCode::NoOfferOutstanding,
                "there is no offer of the server to answer",
            ));
        }
        sdp::check(answer).map_err(|p| SignalError::bad_sdp(p.message()))?;
        sdp::check_fingerprint(answer).map_err(|p| SignalError::bad_sdp(p.message()))?;
        let sections = Sections::parse(answer);
        let ours = Sections::parse(&self.local_sdp()?);
        plan::check_answer(&ours, &sections).map_err(SignalError::bad_sdp)?;
        let desc = RTCSessionDescription::answer(answer.to_string())
            .map_err(|e| SignalError::bad_sdp(format!("unreadable answer: {e}")))?;
        // On failure the offer stays outstanding: the client may send a corrected answer.
        self.pc
            .set_remote_description(Instant::now(), desc)
            .map_err(|e| SignalError::bad_sdp(format!("answer refused: {e}")))?;
        self.remote_set = true;
        self.signaling = Signaling::Stable;
        let local = self.local_sdp()?;
        self.after_negotiation(&local, sections)
    }

    pub(super) fn remote_candidates(
        &mut self,
        candidates: Vec<RTCIceCandidateInit>,
    ) -> SignalResult<usize> {
        if !self.remote_set {
            let room = MAX_PENDING_CANDIDATES.saturating_sub(self.pending_candidates.len());
            let n = candidates.len().min(room);
            self.pending_candidates
                .extend(candidates.into_iter().take(n));
            return Ok(n);
        }
        let total = candidates.len();
        let mut accepted = 0;
        for c in candidates {
            // End-of-candidates (empty) is accepted and means nothing more will come.
            match self.pc.add_remote_candidate(c) {
                Ok(()) => accepted += 1,
                Err(e) => {
                    tracing::debug!(peer = %self.ctx.id, error = %e, "remote candidate refused")
                }
            }
        }
        if accepted == 0 && total > 0 {
            return Err(SignalError::new(
                ErrorCode::BadCandidate,
                "no usable ICE candidate",
            ));
        }
        Ok(accepted)
    }

    /// The first offer comes from us: receive slots for the client's own media, on which the
    /// first track of each kind it receives rides too ([`super::subscribe`]).
    pub(super) fn start_offer(&mut self, audio: bool, video: bool) {
        let recvonly = || {
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                streams: vec![],
                send_encodings: vec![],
            })
        };
        for (wanted, kind, ours) in [
            (audio, RtpCodecKind::Audio, MediaKind::Audio),
            (video, RtpCodecKind::Video, MediaKind::Video),
        ] {
            if !wanted {
                continue;
            }
            match self.pc.add_transceiver_from_kind(kind, recvonly()) {
                // The stack tells a transceiver's kind only once a description named it.
                Ok(id) => self.slots.push((id, ours)),
                Err(e) => {
                    tracing::warn!(peer = %self.ctx.id, error = %e, "cannot add a receive slot")
                }
            }
        }
        self.can_offer = true;
        self.negotiation_needed = true;
    }

    /// Sends an offer when something changed, the peer is stable and may offer. True when the
    /// connection was touched (its output must be drained).
    pub(super) fn maybe_offer(&mut self) -> bool {
        let now = Instant::now();
        if !self.negotiation_needed
            || !self.can_offer
            || self.signaling != Signaling::Stable
            || self.closed
            || self.offer_not_before.is_some_and(|t| now < t)
        {
            return false;
        }
        self.negotiation_needed = false;
        self.pc_touched = true;
        self.apply_codec_wishes();
        let offer = match self.pc.create_offer(None) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(peer = %self.ctx.id, error = %e, "cannot create an offer");
                return true;
            }
        };
        if let Err(e) = self.pc.set_local_description(now, offer) {
            tracing::warn!(peer = %self.ctx.id, error = %e, "cannot apply our offer");
            return true;
        }
        let Ok(sdp) = self.local_sdp() else {
            return true;
        };
        let sdp = self.as_sent(sdp);
        self.register_ufrag(&sdp);
        self.signaling = Signaling::HaveLocalOffer;
        self.ctx.metrics.media.renegotiations.inc();
        let candidates = self.local_candidates(&sdp);
        let _ = self.ctx.events.send(PeerEvent::Offer {
            peer: self.ctx.id,
            sdp,
        });
        let _ = self.ctx.events.send(PeerEvent::LocalCandidates {
            peer: self.ctx.id,
            candidates,
        });
        true
    }

    /// A description of ours as the client gets it: without simulcast (one encoding per track is
    /// forwarded), with `a=msid-semantic` (see [`plan::with_msid_semantic`]), and with the
    /// BUNDLE tag chosen for it, in every description after the first
    /// (RFC 8843 §7.2: the tagged m-line stays the same).
    fn as_sent(&self, sdp: String) -> String {
        let sdp = plan::with_msid_semantic(&plan::without_simulcast(&sdp));
        match &self.bundle_tag {
            Some(tag) => plan::retag_bundle(&sdp, tag),
            None => sdp,
        }
    }

    fn local_sdp(&self) -> SignalResult<String> {
        self.pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(SignalError::internal)
    }

    fn rollback_remote(&mut self, now: Instant) {
        if let Ok(rollback) = RTCSessionDescription::rollback(None) {
            let _ = self.pc.set_remote_description(now, rollback);
        }
    }

    fn register_ufrag(&self, local_sdp: &str) {
        if let Some(ufrag) = sdp::ice_ufrag(local_sdp) {
            self.ctx
                .plane
                .register(self.ctx.id, ufrag, self.inbox_tx.clone());
        }
    }

    /// Our candidates are in every SDP we produce; clients that listen for trickled ones get
    /// them too (after the description), attached to the first m-line.
    fn local_candidates(&self, local_sdp: &str) -> Vec<RTCIceCandidateInit> {
        let mid = plan::bundle_tag(local_sdp).map(str::to_string);
        let index = mid.as_deref().and_then(|m| {
            Sections::parse(local_sdp)
                .media
                .iter()
                .position(|s| s.mid.as_deref() == Some(m))
        });
        self.ctx
            .factory
            .candidates()
            .iter()
            .filter_map(|addr| super::setup::host_candidate(*addr).ok())
            .map(|mut c| {
                c.sdp_mid = mid.clone();
                c.sdp_mline_index = index.and_then(|i| u16::try_from(i).ok()).or(Some(0));
                c
            })
            .collect()
    }

    /// After a completed offer/answer: routes, early candidates, the DTLS association (after
    /// the first one), what the client now sends us and how our outgoing tracks were
    /// negotiated.
    fn after_negotiation(&mut self, local_sdp: &str, remote: Sections) -> SignalResult<()> {
        self.offer_not_before = Some(Instant::now() + OFFER_SETTLE);
        self.register_ufrag(local_sdp);
        for c in std::mem::take(&mut self.pending_candidates) {
            let _ = self.pc.add_remote_candidate(c);
        }
        let remote_sdp = self
            .pc
            .remote_description()
            .map(|d| d.sdp.clone())
            .unwrap_or_default();
        self.declared_ssrcs = sdp::ssrc_mids(&remote_sdp);
        self.remote_sections = remote;
        if self.secure.is_none() {
            self.create_secure(local_sdp, &remote_sdp)?;
        }
        self.refresh_published();
        let remote = self.remote_sections.clone();
        self.check_legs(&remote);
        for track in std::mem::take(&mut self.deferred) {
            self.subscribe(track);
        }
        Ok(())
    }

    /// The DTLS association the two descriptions agreed on: our role from `a=setup` (RFC 5763
    /// §5), the client's certificate from its fingerprints. DTLS records that came early are
    /// read now.
    fn create_secure(&mut self, local_sdp: &str, remote_sdp: &str) -> SignalResult<()> {
        let role = match (sdp::setup(local_sdp), sdp::setup(remote_sdp)) {
            (Some(Setup::Active), _) => Role::Client,
            (Some(Setup::ActPass), Some(Setup::Passive)) => Role::Client,
            _ => Role::Server,
        };
        let secure = DtlsSrtp::new(
            self.ctx.factory.dtls_identity(),
            role,
            &sdp::fingerprints(remote_sdp),
        )
        .map_err(|e| SignalError::bad_sdp(e.to_string()))?;
        self.secure = Some(secure);
        for dg in std::mem::take(&mut self.early_dtls) {
            self.on_dtls(dg);
        }
        self.start_secure();
        Ok(())
    }
}
