//! Datagrams in and out of one peer. What arrives is told apart by its first byte (RFC 7983):
//! STUN goes to the PeerConnection (which answers binding requests and so validates paths),
//! DTLS to the association, SRTP and SRTCP are decrypted here; anything else is dropped.
//! What leaves: the PeerConnection's STUN, our DTLS records, and protected media and RTCP,
//! all on the selected path ([`super::path`]).

use std::net::SocketAddr;
use std::time::Instant;

use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::dtls_srtp::{DtlsOutcome, SecureError};
use super::{MAX_EARLY_DTLS, MAX_REMOTE_ADDRS, Peer};
use crate::sfu::media_plane::{Datagram, Transport};
use crate::sfu::types::PeerEvent;

impl Peer {
    /// One datagram from the client, told apart by its first byte (RFC 7983).
    pub(super) fn on_datagram(&mut self, dg: Datagram) {
        match dg.data.first() {
            Some(0..=3) => self.on_stun(dg),
            Some(20..=63) => self.on_dtls(dg),
            Some(128..=191) => self.on_srtp(dg),
            _ => self.count_drop("unknown_datagram"),
        }
    }

    /// ICE: the PeerConnection answers binding requests (and validates paths with them); its
    /// answer goes out at once, so that a DTLS record right behind the request in the same
    /// batch finds its path validated.
    pub(super) fn on_stun(&mut self, dg: Datagram) {
        let Some(local_addr) = self.local_addr_for(dg.from, dg.transport) else {
            return;
        };
        let tuple = (dg.from, dg.transport);
        let nominated = crate::sfu::stun::nominates(&dg.data);
        self.pc_touched = true;
        let transport_protocol = match dg.transport {
            Transport::Udp => TransportProtocol::UDP,
            Transport::Tcp => TransportProtocol::TCP,
        };
        let msg = TaggedBytesMut {
            now: dg.at,
            transport: TransportContext {
                local_addr,
                peer_addr: dg.from,
                transport_protocol,
                ecn: None,
            },
            message: dg.data,
        };
        if let Err(e) = self.pc.handle_read(msg) {
            tracing::debug!(peer = %self.ctx.id, error = %e, "datagram refused");
        }
        self.flush_writes();
        self.take_events();
        self.after_binding_request(tuple, nominated);
    }

    pub(super) fn on_dtls(&mut self, dg: Datagram) {
        let tuple = (dg.from, dg.transport);
        if !self.validated.contains(&tuple) {
            self.count_drop("dtls_before_ice");
            return;
        }
        let Some(secure) = self.secure.as_mut() else {
            if self.early_dtls.len() < MAX_EARLY_DTLS {
                self.early_dtls.push(dg);
            }
            return;
        };
        self.dtls_from = Some(tuple);
        let was_connected = secure.is_connected();
        match secure.read(dg.at, dg.data) {
            Ok(DtlsOutcome::Connected) => self.on_secure_connected(),
            Ok(DtlsOutcome::Closed) => {
                tracing::debug!(peer = %self.ctx.id, "the client closed its connection");
                self.closed = true;
            }
            Ok(DtlsOutcome::Progress) => {}
            // Once connected, a bad record is only dropped; a failed handshake is the end.
            Err(e) if was_connected => {
                tracing::debug!(peer = %self.ctx.id, error = %e, "DTLS record refused");
            }
            Err(e) => {
                tracing::debug!(peer = %self.ctx.id, error = %e, "DTLS handshake failed");
                self.fail(crate::error::ErrorCode::DtlsFailed);
            }
        }
        self.flush_dtls();
    }

    /// Media and RTCP are read only from a path ICE validated: SRTP authenticates packets, but
    /// the SRTP state of a new SSRC is made before that, so strangers are turned away first.
    pub(super) fn on_srtp(&mut self, dg: Datagram) {
        let tuple = (dg.from, dg.transport);
        if self.media_dest != Some(tuple) && !self.validated.contains(&tuple) {
            self.count_drop("srtp_unvalidated_path");
            return;
        }
        let Some(secure) = self.secure.as_mut().filter(|s| s.is_connected()) else {
            self.count_drop("srtp_before_dtls");
            return;
        };
        // RFC 5761: RTCP packet types 192..=223 in the second byte.
        if matches!(dg.data.get(1), Some(192..=223)) {
            let packets = secure.decrypt_rtcp(&dg.data).and_then(|mut plain| {
                rtc::rtcp::packet::unmarshal(&mut plain)
                    .map_err(|e| SecureError::Srtp(e.to_string()))
            });
            match packets {
                Ok(packets) => self.on_rtcp(&packets, dg.at),
                Err(e) => self.refused(&e, "srtcp_refused"),
            }
        } else {
            match secure.decrypt_rtp(&dg.data) {
                Ok(packet) => self.on_rtp(packet, dg.at),
                Err(e) => self.refused(&e, "srtp_refused"),
            }
        }
    }

    fn refused(&self, e: &SecureError, reason: &'static str) {
        tracing::trace!(peer = %self.ctx.id, error = %e, reason, "protected packet refused");
        self.count_drop(match e {
            SecureError::TooManySsrcs => "too_many_ssrcs",
            _ => reason,
        });
    }

    /// The DTLS handshake completed: keys exist, media may flow.
    pub(super) fn on_secure_connected(&mut self) {
        if self.connected {
            return;
        }
        self.connected = true;
        if self.media_dest.is_none() {
            self.media_dest = self.dtls_from;
            // Chromium's handshake may complete before ICE reports a nomination: the path is
            // the handshake's, and the statistics say so (they said nothing before).
            if let Some(tuple) = self.media_dest {
                self.note_path(tuple);
            }
        }
        let local = self.secure.as_mut().and_then(|s| s.take_local());
        let mut out = self.outbound.lock();
        if let Some(dest) = self.media_dest {
            out.set_path(dest);
        }
        if let Some(local) = local {
            out.connect(local);
        }
        drop(out);
        let _ = self
            .ctx
            .events
            .send(PeerEvent::Connected { peer: self.ctx.id });
    }

    /// Sends what the DTLS association wants sent, on the selected path (or back where the
    /// handshake came from, until ICE names a path).
    pub(super) fn flush_dtls(&mut self) {
        let Some(secure) = self.secure.as_mut() else {
            return;
        };
        let to = self.media_dest.or(self.dtls_from);
        while let Some(record) = secure.poll_transmit() {
            if let Some((addr, transport)) = to {
                self.ctx.plane.send(record.freeze(), addr, transport);
            }
        }
    }

    pub(super) fn close_secure(&mut self) {
        if let Some(secure) = self.secure.as_mut() {
            secure.close(Instant::now());
        }
        self.flush_dtls();
    }

    /// Our candidate address for datagrams from `from`, remembered per remote address.
    pub(super) fn local_addr_for(
        &mut self,
        from: SocketAddr,
        transport: Transport,
    ) -> Option<SocketAddr> {
        if let Some((_, _, local)) = self
            .local_addrs
            .iter()
            .find(|(f, t, _)| *f == from && *t == transport)
        {
            return Some(*local);
        }
        let port = match transport {
            Transport::Udp => None,
            Transport::Tcp => self.ctx.plane.tcp_local_port(from),
        };
        let local = self.ctx.factory.local_addr_for(from, transport, port)?;
        if self.local_addrs.len() >= MAX_REMOTE_ADDRS {
            self.local_addrs.remove(0);
        }
        self.local_addrs.push((from, transport, local));
        Some(local)
    }

    /// Sends what the PeerConnection wrote, when it is STUN (binding responses): its own DTLS
    /// is never used. A success response marks its destination as an ICE-validated path.
    pub(super) fn flush_writes(&mut self) {
        while let Some(out) = self.pc.poll_write() {
            if !matches!(out.message.first(), Some(0..=3)) {
                continue;
            }
            let transport = match out.transport.transport_protocol {
                TransportProtocol::TCP => Transport::Tcp,
                _ => Transport::Udp,
            };
            let tuple = (out.transport.peer_addr, transport);
            // 0x0101: Binding success response (RFC 8489 §5).
            if out.message.starts_with(&[0x01, 0x01]) && !self.validated.contains(&tuple) {
                if self.validated.len() >= MAX_REMOTE_ADDRS {
                    self.validated.remove(0);
                }
                self.validated.push(tuple);
            }
            self.ctx.plane.send(out.message.freeze(), tuple.0, tuple.1);
        }
    }
}
