//! How every server-side PeerConnection is built: codecs with fixed payload types, the header
//! extensions the SFU forwards (and transport-wide sequence numbers for congestion feedback),
//! no interceptors (media does not go through the PeerConnection, see [`super`]), ICE-lite
//! with host candidates for the shared media socket, one DTLS certificate for all.
//!
//! The PeerConnection answers offers as the DTLS server (`a=setup:passive`), so that its own
//! DTLS, which never runs, never sends a flight; the peer task's association takes the role
//! the SDPs agreed on.
//!
//! No RTX is negotiated: browsers then retransmit on the primary stream, where the peer's
//! NACK tracker sees the repair arrive (`crate::sfu::feedback::nack`), and relais answers
//! subscribers' NACKs itself from the datagrams it sent them ([`super::retransmit`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::interceptor::Registry;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sdp::extmap::{AUDIO_LEVEL_URI, SDES_MID_URI, TRANSPORT_CC_URI, VIDEO_ORIENTATION_URI};

use super::dtls_srtp::DtlsIdentity;
use crate::sfu::media_plane::Transport;

fn feedback(typ: &str, parameter: &str) -> RTCPFeedback {
    RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    }
}

fn codec(mime: &str, clock_rate: u32, channels: u16, fmtp: &str, pt: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.into(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.into(),
            rtcp_feedback: Vec::new(),
        },
        payload_type: pt,
    }
}

/// The codecs relais forwards, in order of preference.
pub fn codecs() -> Vec<(RTCRtpCodecParameters, RtpCodecKind)> {
    vec![
        (
            codec(MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1", 111),
            RtpCodecKind::Audio,
        ),
        (codec(MIME_TYPE_VP8, 90_000, 0, "", 96), RtpCodecKind::Video),
        (
            codec(MIME_TYPE_VP9, 90_000, 0, "profile-id=0", 98),
            RtpCodecKind::Video,
        ),
        (
            codec(
                MIME_TYPE_H264,
                90_000,
                0,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                102,
            ),
            RtpCodecKind::Video,
        ),
        (
            codec(
                MIME_TYPE_H264,
                90_000,
                0,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f",
                112,
            ),
            RtpCodecKind::Video,
        ),
    ]
}

fn media_engine() -> rtc::shared::error::Result<MediaEngine> {
    let mut m = MediaEngine::default();
    for (c, kind) in codecs() {
        m.register_codec(c, kind)?;
    }
    // Congestion feedback is transport-wide (transport-cc) both ways: relais reports what its
    // publishers send and reads what its subscribers receive. REMB goes to publishers, to cap
    // them to their weakest subscriber (`sfu::congestion`).
    for fb in [
        feedback("nack", ""),
        feedback("nack", "pli"),
        feedback("ccm", "fir"),
        feedback("goog-remb", ""),
        feedback("transport-cc", ""),
    ] {
        m.register_feedback(fb, RtpCodecKind::Video);
    }
    m.register_feedback(feedback("transport-cc", ""), RtpCodecKind::Audio);
    let both = &[RtpCodecKind::Audio, RtpCodecKind::Video][..];
    for (uri, kinds) in [
        (SDES_MID_URI, both),
        // Publishers number their packets transport-wide; relais reports their arrival
        // (super::super::feedback::twcc) so that browsers raise their bitrate.
        (TRANSPORT_CC_URI, both),
        (AUDIO_LEVEL_URI, &[RtpCodecKind::Audio][..]),
        (VIDEO_ORIENTATION_URI, &[RtpCodecKind::Video][..]),
    ] {
        for kind in kinds {
            m.register_header_extension(
                RTCRtpHeaderExtensionCapability { uri: uri.into() },
                *kind,
                None,
            )?;
        }
    }
    Ok(m)
}

/// Builds server PeerConnections; shared by every session.
pub struct PeerFactory {
    certificate: RTCCertificate,
    dtls: DtlsIdentity,
    /// Host candidates advertised for the shared UDP socket.
    candidates: Vec<SocketAddr>,
    /// Passive ICE-TCP host candidates for the shared TCP listener (lower priority than UDP).
    tcp_candidates: Vec<SocketAddr>,
}

impl PeerFactory {
    pub fn new(
        candidates: Vec<SocketAddr>,
        tcp_candidates: Vec<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let provider = rtc::crypto::default_provider()
            .map_err(|e| anyhow::anyhow!("DTLS crypto provider: {e}"))?;
        let certificate = RTCCertificate::generate(
            provider.crypto(),
            rtc::crypto::SignatureScheme::EcdsaP256Sha256,
            CertificateParams::new(vec!["relais".into()])
                .map_err(|e| anyhow::anyhow!("DTLS certificate parameters: {e}"))?,
        )
        .map_err(|e| anyhow::anyhow!("DTLS certificate: {e}"))?;
        let dtls = DtlsIdentity {
            certificate: certificate.dtls_certificate.clone(),
            provider,
        };
        Ok(Self {
            certificate,
            dtls,
            candidates,
            tcp_candidates,
        })
    }

    /// The certificate and crypto every peer's DTLS association uses.
    pub fn dtls_identity(&self) -> &DtlsIdentity {
        &self.dtls
    }

    pub fn tcp_candidates(&self) -> &[SocketAddr] {
        &self.tcp_candidates
    }

    pub fn candidates(&self) -> &[SocketAddr] {
        &self.candidates
    }

    /// The advertised address a datagram from `peer` arrived on (same transport and address
    /// family): the ICE agent only accepts traffic addressed to one of its own candidates.
    ///
    /// With several addresses of one family, it is the one this host routes `peer` from (the
    /// address replies leave with, which is what the client's checks verify); costs a route
    /// lookup, so callers cache the answer per peer address.
    ///
    /// ICE-TCP may listen on two ports (`media.tcp_addr` and the shared HTTPS port): `port`,
    /// the one the connection reached, narrows the choice to that port's candidates.
    pub fn local_addr_for(
        &self,
        peer: SocketAddr,
        transport: Transport,
        port: Option<u16>,
    ) -> Option<SocketAddr> {
        let all = match transport {
            Transport::Udp => &self.candidates,
            Transport::Tcp => &self.tcp_candidates,
        };
        let on_port: Vec<SocketAddr>;
        let list = match port {
            Some(p) if all.iter().any(|c| c.port() != p) => {
                on_port = all.iter().filter(|c| c.port() == p).copied().collect();
                &on_port
            }
            _ => all,
        };
        let mut same_family = list.iter().filter(|c| c.is_ipv4() == peer.is_ipv4());
        let first = same_family.next().copied()?;
        if list.len() == 1 {
            return Some(first);
        }
        let routed = route_source(peer).and_then(|ip| {
            list.iter()
                .find(|c| c.ip() == ip && c.is_ipv4() == peer.is_ipv4())
                .copied()
        });
        Some(routed.unwrap_or(first))
    }

    pub fn build(&self, now: Instant) -> rtc::shared::error::Result<RTCPeerConnection> {
        let engine = media_engine()?;
        let registry = Registry::new();
        let mut network_types = Vec::new();
        for (list, v4, v6) in [
            (&self.candidates, NetworkType::Udp4, NetworkType::Udp6),
            (&self.tcp_candidates, NetworkType::Tcp4, NetworkType::Tcp6),
        ] {
            if list.iter().any(|c| c.is_ipv4()) {
                network_types.push(v4);
            }
            if list.iter().any(|c| c.is_ipv6()) {
                network_types.push(v6);
            }
        }
        let settings = SettingEngineBuilder::new()
            .with_lite(true)
            .with_answering_dtls_role(RTCDtlsRole::Server)
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_network_types(network_types)
            // ICE-lite hears only the browser's consent checks (every ~5 s at most).
            .with_ice_timeouts(
                Some(Duration::from_secs(8)),
                Some(Duration::from_secs(12)),
                None,
            )
            .build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_certificates(vec![self.certificate.clone()])
                    .build(),
            )
            .with_media_engine(engine)
            .with_setting_engine(settings)
            .with_interceptor_registry(registry)
            .build(now)?;
        for addr in &self.candidates {
            pc.add_local_candidate(host_candidate(*addr)?)?;
        }
        for addr in &self.tcp_candidates {
            pc.add_local_candidate(tcp_host_candidate(*addr)?)?;
        }
        Ok(pc)
    }
}

/// The source address this host would use towards `peer` (a route lookup: connecting a UDP
/// socket sends nothing).
fn route_source(peer: SocketAddr) -> Option<std::net::IpAddr> {
    let any: SocketAddr = if peer.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(peer).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// A passive ICE-TCP host candidate (RFC 6544): clients connect to it.
pub fn tcp_host_candidate(addr: SocketAddr) -> rtc::shared::error::Result<RTCIceCandidateInit> {
    let c = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "tcp".into(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        tcp_type: rtc::ice::tcp_type::TcpType::Passive,
    }
    .new_candidate_host()?;
    RTCIceCandidate::from(&c).to_json()
}

pub fn host_candidate(addr: SocketAddr) -> rtc::shared::error::Result<RTCIceCandidateInit> {
    let c = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".into(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    RTCIceCandidate::from(&c).to_json()
}
