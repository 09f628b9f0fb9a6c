//! DTLS-SRTP (RFC 5763, RFC 5764) for one PeerConnection, run by relais next to the `rtc`
//! PeerConnection rather than inside it.
//!
//! Why: the `rtc` PeerConnection carries every media packet through nine layers and a chain of
//! interceptors, each way; measured with callgrind, that was about 26,000 of the 37,000
//! instructions one forwarded packet cost, of which SRTP itself was 7,000. The PeerConnection
//! keeps what it does well (SDP, transceivers, ICE); the handshake and the packet protection
//! run here on the same webrtc-rs crates (`rtc::dtls`, `rtc::srtp`), and a packet costs one
//! decryption, the forwarding decision and one encryption.
//!
//! Invariants:
//! - the remote certificate is accepted only when its SHA-256 fingerprint is one that the
//!   remote description declared (RFC 8122 §5, RFC 8827 §6.5); otherwise the handshake fails;
//! - SRTP contexts exist only once the handshake completed: before, no media is read or
//!   written;
//! - the association is keyed by one placeholder address, not by a 5-tuple: DTLS rides on the
//!   ICE transport, whose selected path may change under it (an ICE restart keeps the keys).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use rtc::crypto::RTCCryptoProvider;
use rtc::dtls::config::{
    ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig,
    VerifyPeerCertificateFn,
};
use rtc::dtls::crypto::Certificate;
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::rtp;
use rtc::shared::TransportProtocol;
use rtc::shared::marshal::Unmarshal;
use rtc::srtp::config::{Config as SrtpConfig, LABEL_EXTRACTOR_DTLS_SRTP};
use rtc::srtp::context::Context;
use rtc::srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc::srtp::protection_profile::ProtectionProfile;
use sha2::{Digest, Sha256};

use crate::sfu::types::FastSet;

/// The one association's key in the endpoint (see the module invariants).
const ASSOCIATION: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9));
/// SRTP packets a repair may lag behind the newest one and still be accepted (RFC 3711 §3.3.2):
/// half a second of 2 Mbit/s video, for retransmissions that answer NACKs (the window is
/// shifted for every packet, so its size is paid per packet).
const SRTP_REPLAY_WINDOW: usize = 128;
const SRTCP_REPLAY_WINDOW: usize = 128;
/// Distinct SSRCs the remote SRTP (and, separately, SRTCP) context will keep state for. The
/// context creates that state before it authenticates a packet and never drops it, so without
/// a bound anyone able to put datagrams on the path could grow it forever; a real client uses
/// a handful (audio, video, RTX, simulcast layers, a few renegotiations).
const MAX_REMOTE_SSRCS: usize = 64;

/// Which side starts the handshake (from `a=setup`, RFC 5763 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// What every association of the process shares: the certificate whose fingerprint the SDPs
/// carry, and the crypto provider.
#[derive(Clone)]
pub struct DtlsIdentity {
    pub certificate: Certificate,
    pub provider: Arc<dyn RTCCryptoProvider>,
}

#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    #[error("the remote description has no sha-256 certificate fingerprint")]
    NoFingerprint,
    #[error("DTLS: {0}")]
    Dtls(String),
    #[error("SRTP: {0}")]
    Srtp(String),
    #[error("no SRTP keys yet")]
    NotConnected,
    #[error("too many distinct SSRCs from the remote side")]
    TooManySsrcs,
}

fn dtls(e: impl std::fmt::Display) -> SecureError {
    SecureError::Dtls(e.to_string())
}

fn srtp(e: impl std::fmt::Display) -> SecureError {
    SecureError::Srtp(e.to_string())
}

/// What a DTLS datagram changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsOutcome {
    /// Nothing the peer needs to act on (a handshake step, a retransmission, data).
    Progress,
    /// The handshake completed: media may flow.
    Connected,
    /// The remote closed the association (`close_notify`).
    Closed,
}

struct Srtp {
    /// Until [`DtlsSrtp::take_local`] hands it to whatever sends.
    local: Option<Context>,
    remote: Context,
    rtp_ssrcs: SsrcAdmission,
    rtcp_ssrcs: SsrcAdmission,
}

/// The SSRCs a remote context holds state for, at most [`MAX_REMOTE_SSRCS`].
#[derive(Default)]
struct SsrcAdmission {
    known: FastSet<u32>,
}

impl SsrcAdmission {
    /// Whether a packet of `ssrc` may reach the context (which then remembers `ssrc`).
    fn admit(&mut self, ssrc: u32) -> Result<(), SecureError> {
        if self.known.len() >= MAX_REMOTE_SSRCS && !self.known.contains(&ssrc) {
            return Err(SecureError::TooManySsrcs);
        }
        self.known.insert(ssrc);
        Ok(())
    }
}

/// One PeerConnection's DTLS association and, once it is up, its SRTP contexts.
pub struct DtlsSrtp {
    role: Role,
    config: Arc<HandshakeConfig>,
    endpoint: Endpoint,
    provider: Arc<dyn RTCCryptoProvider>,
    started: bool,
    srtp: Option<Srtp>,
}

impl DtlsSrtp {
    /// An association that will accept only a certificate matching one of
    /// `remote_fingerprints` ((hash function, value) pairs as in SDP, lower-case).
    pub fn new(
        identity: &DtlsIdentity,
        role: Role,
        remote_fingerprints: &[(String, String)],
    ) -> Result<Self, SecureError> {
        let accepted: Vec<String> = remote_fingerprints
            .iter()
            .filter(|(alg, _)| alg == "sha-256")
            .map(|(_, value)| value.clone())
            .collect();
        if accepted.is_empty() {
            return Err(SecureError::NoFingerprint);
        }
        let verify: VerifyPeerCertificateFn = Arc::new(move |certs, _| {
            let leaf = certs
                .first()
                .ok_or_else(|| rtc::shared::error::Error::Other("no certificate".into()))?;
            if accepted.contains(&fingerprint(leaf)) {
                Ok(())
            } else {
                Err(rtc::shared::error::Error::Other(
                    "the certificate does not match the fingerprint of the SDP".into(),
                ))
            }
        });
        let config = ConfigBuilder::default()
            .with_crypto_provider(identity.provider.clone())
            .with_certificates(vec![identity.certificate.clone()])
            .with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ])
            // WebRTC authenticates both ends by the fingerprints (no CA chain to verify).
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            .with_insecure_skip_verify(true)
            .with_verify_peer_certificate(Some(verify))
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .build(role == Role::Client, None)
            .map_err(dtls)?;
        let config = Arc::new(config);
        let server_config = (role == Role::Server).then(|| config.clone());
        Ok(Self {
            role,
            config,
            endpoint: Endpoint::new(ASSOCIATION, TransportProtocol::UDP, server_config),
            provider: identity.provider.clone(),
            started: false,
            srtp: None,
        })
    }

    pub fn is_connected(&self) -> bool {
        self.srtp.is_some()
    }

    /// As the client, sends the first flight (once; the server waits for the client's).
    pub fn start(&mut self, now: Instant) -> Result<(), SecureError> {
        if self.role == Role::Client && !self.started {
            self.started = true;
            self.endpoint
                .connect(now, ASSOCIATION, self.config.clone(), None)
                .map_err(dtls)?;
        }
        Ok(())
    }

    /// A DTLS record from the remote.
    pub fn read(&mut self, now: Instant, data: BytesMut) -> Result<DtlsOutcome, SecureError> {
        self.started = true;
        let events = self
            .endpoint
            .read(now, ASSOCIATION, None, data)
            .map_err(dtls)?;
        let mut outcome = DtlsOutcome::Progress;
        for event in events {
            match event {
                EndpointEvent::HandshakeComplete if self.srtp.is_none() => {
                    self.srtp = Some(self.derive_srtp()?);
                    outcome = DtlsOutcome::Connected;
                }
                EndpointEvent::PeerClosed => outcome = DtlsOutcome::Closed,
                // Data-channel traffic (SCTP) is not served; media does not use it.
                _ => {}
            }
        }
        Ok(outcome)
    }

    /// RFC 5764 §4.2: both directions' master keys from the handshake's exporter.
    fn derive_srtp(&self) -> Result<Srtp, SecureError> {
        let state = self
            .endpoint
            .get_connection_state(ASSOCIATION)
            .ok_or_else(|| dtls("the association vanished"))?;
        let profile = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm => ProtectionProfile::AeadAes256Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
                ProtectionProfile::Aes128CmHmacSha1_80
            }
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32 => {
                ProtectionProfile::Aes128CmHmacSha1_32
            }
            _ => return Err(dtls("no SRTP protection profile was agreed")),
        };
        let mut keys = SrtpConfig {
            profile,
            ..Default::default()
        };
        let material = state
            .export_keying_material(LABEL_EXTRACTOR_DTLS_SRTP, &[], keys.keying_material_len())
            .map_err(dtls)?
            .into_bytes();
        keys.set_session_keys_from_keying_material(&material, state.is_client())
            .map_err(srtp)?;
        let crypto = self.provider.crypto();
        let k = &keys.keys;
        let local = Context::new(
            &k.local_master_key,
            &k.local_master_salt,
            profile,
            None,
            None,
            crypto,
        )
        .map_err(srtp)?;
        let remote = Context::new(
            &k.remote_master_key,
            &k.remote_master_salt,
            profile,
            Some(srtp_replay_protection(SRTP_REPLAY_WINDOW)),
            Some(srtcp_replay_protection(SRTCP_REPLAY_WINDOW)),
            crypto,
        )
        .map_err(srtp)?;
        Ok(Srtp {
            local: Some(local),
            remote,
            rtp_ssrcs: SsrcAdmission::default(),
            rtcp_ssrcs: SsrcAdmission::default(),
        })
    }

    /// The sending direction's SRTP context, once connected: whoever sends media owns it.
    pub fn take_local(&mut self) -> Option<Context> {
        self.srtp.as_mut()?.local.take()
    }

    /// The next DTLS datagram to send (handshake flights, alerts).
    pub fn poll_transmit(&mut self) -> Option<BytesMut> {
        self.endpoint.poll_transmit().map(|t| t.message)
    }

    /// When the handshake next wants [`Self::handle_timeout`] (a retransmission).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.endpoint.poll_timeout(&ASSOCIATION)
    }

    /// Retransmits a flight that went unanswered; fails once the handshake gave up.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SecureError> {
        if self.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint
                .handle_timeout(ASSOCIATION, now)
                .map_err(dtls)?;
        }
        Ok(())
    }

    /// Ends the association with a `close_notify` (to be sent with [`Self::poll_transmit`]).
    pub fn close(&mut self, now: Instant) {
        let _ = self.endpoint.stop(now, ASSOCIATION);
        self.srtp = None;
    }

    /// The RTP packet an SRTP datagram carries (its header is parsed once, in clear).
    pub fn decrypt_rtp(&mut self, datagram: &[u8]) -> Result<rtp::Packet, SecureError> {
        let s = self.srtp.as_mut().ok_or(SecureError::NotConnected)?;
        let mut rest = datagram;
        let header = rtp::header::Header::unmarshal(&mut rest).map_err(srtp)?;
        let header_len = datagram.len() - rest.len();
        s.rtp_ssrcs.admit(header.ssrc)?;
        let plain = s
            .remote
            .decrypt_rtp_with_header(datagram, &header)
            .map_err(srtp)?
            .freeze();
        let mut end = plain.len();
        if header.padding {
            // RFC 3550 §5.1: the last octet counts the padding, itself included.
            let padding = usize::from(*plain.last().ok_or_else(|| srtp("empty packet"))?);
            end = end
                .checked_sub(padding)
                .filter(|e| *e >= header_len)
                .ok_or_else(|| srtp("padding longer than the packet"))?;
        }
        if header_len > end {
            return Err(srtp("header longer than the packet"));
        }
        Ok(rtp::Packet {
            header,
            payload: plain.slice(header_len..end),
        })
    }

    pub fn decrypt_rtcp(&mut self, datagram: &[u8]) -> Result<BytesMut, SecureError> {
        let s = self.srtp.as_mut().ok_or(SecureError::NotConnected)?;
        // The sender SSRC of the first packet (RFC 3550 §6.4.1) keys the SRTCP state.
        let ssrc = datagram
            .get(4..8)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| srtp("SRTCP packet too short"))?;
        s.rtcp_ssrcs.admit(ssrc)?;
        s.remote.decrypt_rtcp(datagram).map_err(srtp)
    }
}

/// The SDP form of a certificate's SHA-256 fingerprint: lower-case hex pairs joined by colons.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut out = String::with_capacity(digest.len() * 3);
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
    use rtc::shared::marshal::Marshal;

    fn identity() -> DtlsIdentity {
        let provider = rtc::crypto::default_provider().unwrap();
        let certificate = RTCCertificate::generate(
            provider.crypto(),
            rtc::crypto::SignatureScheme::EcdsaP256Sha256,
            CertificateParams::new(vec!["test".into()]).unwrap(),
        )
        .unwrap();
        DtlsIdentity {
            certificate: certificate.dtls_certificate.clone(),
            provider,
        }
    }

    fn sdp_fingerprint(id: &DtlsIdentity) -> Vec<(String, String)> {
        vec![(
            "sha-256".into(),
            fingerprint(id.certificate.certificate[0].as_ref()),
        )]
    }

    /// Carries each side's datagrams to the other until neither sends; the outcomes seen, or
    /// the first error.
    fn shuttle(
        client: &mut DtlsSrtp,
        server: &mut DtlsSrtp,
    ) -> Result<Vec<DtlsOutcome>, SecureError> {
        let now = Instant::now();
        let mut outcomes = Vec::new();
        for _ in 0..50 {
            let mut moved = false;
            while let Some(d) = client.poll_transmit() {
                moved = true;
                outcomes.push(server.read(now, d)?);
            }
            while let Some(d) = server.poll_transmit() {
                moved = true;
                outcomes.push(client.read(now, d)?);
            }
            if !moved {
                break;
            }
        }
        Ok(outcomes)
    }

    fn rtp(seq: u16) -> rtp::Packet {
        rtp_of(0x1234, seq)
    }

    fn rtp_of(ssrc: u32, seq: u16) -> rtp::Packet {
        rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: 96,
                sequence_number: seq,
                timestamp: 3000,
                ssrc,
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[7; 200]),
        }
    }

    /// `p` protected by the sending context `ctx`.
    fn seal(ctx: &mut Context, p: &rtp::Packet) -> BytesMut {
        ctx.encrypt_rtp_with_header(&p.marshal().unwrap(), &p.header)
            .unwrap()
    }

    #[test]
    fn handshake_then_srtp_both_ways() {
        let (a, b) = (identity(), identity());
        let mut client = DtlsSrtp::new(&a, Role::Client, &sdp_fingerprint(&b)).unwrap();
        let mut server = DtlsSrtp::new(&b, Role::Server, &sdp_fingerprint(&a)).unwrap();
        assert!(server.poll_transmit().is_none(), "the server waits");
        assert!(
            client.take_local().is_none(),
            "no keys before the handshake"
        );
        assert!(matches!(
            server.decrypt_rtp(&rtp(1).marshal().unwrap()),
            Err(SecureError::NotConnected)
        ));
        client.start(Instant::now()).unwrap();
        let outcomes = shuttle(&mut client, &mut server).unwrap();
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == DtlsOutcome::Connected)
                .count(),
            2
        );
        assert!(client.is_connected() && server.is_connected());
        let mut client_out = client.take_local().unwrap();
        let mut server_out = server.take_local().unwrap();
        assert!(client.take_local().is_none(), "handed out once");
        let sent = seal(&mut client_out, &rtp(1));
        assert_ne!(&sent[12..212], &[7; 200][..], "the payload is encrypted");
        assert_eq!(server.decrypt_rtp(&sent).unwrap(), rtp(1));
        assert!(server.decrypt_rtp(&sent).is_err(), "a replay is refused");
        let back = seal(&mut server_out, &rtp(2));
        assert_eq!(client.decrypt_rtp(&back).unwrap(), rtp(2));
        // Padding (RFC 3550 §5.1) is taken off the payload.
        let mut padded = rtp(3);
        padded.header.padding = true;
        let sent = seal(&mut client_out, &padded);
        let got = server.decrypt_rtp(&sent).unwrap();
        assert_eq!(got.payload, rtp(3).payload);
        let mut tampered = seal(&mut client_out, &rtp(4));
        tampered[20] ^= 1;
        assert!(
            server.decrypt_rtp(&tampered).is_err(),
            "authentication fails"
        );
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 9];
        let srtcp = server_out.encrypt_rtcp(&rr).unwrap();
        assert_eq!(&client.decrypt_rtcp(&srtcp).unwrap()[..], &rr[..]);

        client.close(Instant::now());
        let closing = client.poll_transmit().expect("close_notify");
        assert_eq!(
            server.read(Instant::now(), closing).unwrap(),
            DtlsOutcome::Closed
        );
    }

    #[test]
    fn the_remote_side_cannot_grow_ssrc_state_without_bound() {
        let (a, b) = (identity(), identity());
        let mut client = DtlsSrtp::new(&a, Role::Client, &sdp_fingerprint(&b)).unwrap();
        let mut server = DtlsSrtp::new(&b, Role::Server, &sdp_fingerprint(&a)).unwrap();
        client.start(Instant::now()).unwrap();
        shuttle(&mut client, &mut server).unwrap();
        let mut client_out = client.take_local().unwrap();
        for ssrc in 0..MAX_REMOTE_SSRCS as u32 {
            let sealed = seal(&mut client_out, &rtp_of(ssrc, 1));
            assert!(server.decrypt_rtp(&sealed).is_ok());
        }
        let sealed = seal(&mut client_out, &rtp_of(9999, 1));
        assert!(matches!(
            server.decrypt_rtp(&sealed),
            Err(SecureError::TooManySsrcs)
        ));
        // The SSRCs already known still pass.
        let sealed = seal(&mut client_out, &rtp_of(3, 2));
        assert!(server.decrypt_rtp(&sealed).is_ok());
        let mut rr = |ssrc: u32| {
            let mut rr = vec![0x80, 201, 0, 1];
            rr.extend_from_slice(&ssrc.to_be_bytes());
            client_out.encrypt_rtcp(&rr).unwrap()
        };
        for ssrc in 0..MAX_REMOTE_SSRCS as u32 {
            assert!(server.decrypt_rtcp(&rr(ssrc)).is_ok());
        }
        assert!(matches!(
            server.decrypt_rtcp(&rr(9999)),
            Err(SecureError::TooManySsrcs)
        ));
        assert!(server.decrypt_rtcp(&[0x80, 201, 0]).is_err(), "too short");
    }

    #[test]
    fn a_certificate_the_sdp_did_not_announce_is_refused() {
        let (a, b, stranger) = (identity(), identity(), identity());
        let mut client = DtlsSrtp::new(&a, Role::Client, &sdp_fingerprint(&b)).unwrap();
        // The server expects someone else's certificate.
        let mut server = DtlsSrtp::new(&b, Role::Server, &sdp_fingerprint(&stranger)).unwrap();
        client.start(Instant::now()).unwrap();
        assert!(shuttle(&mut client, &mut server).is_err());
        assert!(!server.is_connected());
    }

    #[test]
    fn a_description_without_a_sha256_fingerprint_is_refused() {
        let a = identity();
        let only_sha1 = vec![("sha-1".to_string(), "00:11".to_string())];
        assert!(matches!(
            DtlsSrtp::new(&a, Role::Server, &only_sha1),
            Err(SecureError::NoFingerprint)
        ));
    }

    #[test]
    fn fingerprints_are_sdp_formatted() {
        let f = fingerprint(b"abc");
        assert_eq!(f.len(), 32 * 3 - 1);
        assert!(f.starts_with("ba:78:16:bf:"), "{f}");
    }
}
