//! How a synthetic participant's PeerConnection is configured, written once for both
//! runtimes: the test client's async webrtc-rs connection ([`PcConfig::async_builder`], in
//! [`crate::client::peer`]) and the load engine's sans-IO `rtc` connection
//! ([`PcConfig::sans_io`], in [`crate::load::engine`]). Both play a browser: mDNS off, the
//! network types they bind, the codecs and interceptors chosen below.

use std::time::Instant;

use relais::sfu::peer::rtcp_tap::RtcpTap;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_rtcp_reports, configure_twcc_receiver_only,
    register_default_interceptors,
};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MediaEngine};
use rtc::peer_connection::configuration::setting_engine::{SettingEngine, SettingEngineBuilder};
use rtc::peer_connection::configuration::{
    RTCConfiguration, RTCConfigurationBuilder, RTCIceServer, RTCIceTransportPolicy,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};

use crate::synthetic::VideoCodec;

/// Payload type of Opus when the codecs are [`Codecs::Only`].
pub const OPUS_PT: u8 = 111;

/// What the participant offers and runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codecs {
    /// webrtc-rs's default codecs and interceptors (NACK, TWCC feedback, RTCP reports, the
    /// simulcast header extensions), as a browser offers many; inbound RTCP (the server's
    /// PLIs) reaches the application.
    Browser,
    /// Opus and this video codec only, so the codec the server picks is the one the pattern
    /// sends; NACK and RTCP reports only (the load engine reads RTCP from its own loop).
    Only(VideoCodec),
}

impl VideoCodec {
    /// The payload type this codec has when it is the only video codec offered.
    pub fn payload_type(self) -> u8 {
        match self {
            Self::Vp8 => 96,
            Self::Vp9 => 98,
            Self::H264 => 102,
        }
    }

    /// This codec as [`Codecs::Only`] offers it (NACK and PLI feedback).
    pub fn parameters(self) -> RTCRtpCodecParameters {
        codec(
            self.mime(),
            90_000,
            0,
            self.fmtp(),
            self.payload_type(),
            true,
        )
    }
}

/// Opus as [`Codecs::Only`] offers it.
pub fn opus() -> RTCRtpCodecParameters {
    codec(
        MIME_TYPE_OPUS,
        48_000,
        2,
        "minptime=10;useinbandfec=1",
        OPUS_PT,
        false,
    )
}

/// One PeerConnection's configuration.
#[derive(Clone)]
pub struct PcConfig {
    pub codecs: Codecs,
    /// The network types ICE gathers and accepts (`Udp4`, `Tcp4`).
    pub network: Vec<NetworkType>,
    pub ice_servers: Vec<RTCIceServer>,
    /// Relayed candidates only (ICE transport policy `relay`).
    pub relay_only: bool,
    /// The DTLS certificate (one for many connections saves generating one each); a new one
    /// per connection when `None`.
    pub certificate: Option<RTCCertificate>,
}

impl PcConfig {
    pub fn new(codecs: Codecs, network: Vec<NetworkType>) -> Self {
        Self {
            codecs,
            network,
            ice_servers: Vec::new(),
            relay_only: false,
            certificate: None,
        }
    }

    fn parts(&self) -> anyhow::Result<(RTCConfiguration, MediaEngine, Registry, SettingEngine)> {
        let mut engine = MediaEngine::default();
        let registry = match self.codecs {
            Codecs::Browser => {
                engine.register_default_codecs()?;
                register_default_interceptors(Registry::new(), &mut engine)?
                    .with(Slot::from(11_500), RtcpTap::default())
            }
            Codecs::Only(video) => {
                engine.register_codec(opus(), RtpCodecKind::Audio)?;
                engine.register_codec(video.parameters(), RtpCodecKind::Video)?;
                // Transport-cc feedback on what the server sends, as browsers give it: the
                // server's per-subscriber estimate runs under load too.
                configure_twcc_receiver_only(
                    configure_rtcp_reports(configure_nack(Registry::new(), &mut engine)),
                    &mut engine,
                )?
            }
        };
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_network_types(self.network.clone())
            .build();
        let mut configuration =
            RTCConfigurationBuilder::new().with_ice_servers(self.ice_servers.clone());
        if self.relay_only {
            configuration = configuration.with_ice_transport_policy(RTCIceTransportPolicy::Relay);
        }
        if let Some(certificate) = &self.certificate {
            configuration = configuration.with_certificates(vec![certificate.clone()]);
        }
        Ok((configuration.build(), engine, registry, settings))
    }

    /// A sans-IO connection (the load engine drives its IO and time).
    pub fn sans_io(&self, now: Instant) -> anyhow::Result<RTCPeerConnection> {
        let (configuration, engine, registry, settings) = self.parts()?;
        Ok(RTCPeerConnectionBuilder::new()
            .with_configuration(configuration)
            .with_media_engine(engine)
            .with_setting_engine(settings)
            .with_interceptor_registry(registry)
            .build(now)?)
    }

    /// An async webrtc-rs builder, configured; the caller adds its handler and the addresses
    /// to bind, then builds.
    pub fn async_builder(
        &self,
    ) -> anyhow::Result<webrtc::peer_connection::PeerConnectionBuilder<String>> {
        let (configuration, engine, registry, settings) = self.parts()?;
        Ok(webrtc::peer_connection::PeerConnectionBuilder::new()
            .with_configuration(configuration)
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings))
    }
}

fn codec(
    mime: &str,
    rate: u32,
    channels: u16,
    fmtp: &str,
    pt: u8,
    fb: bool,
) -> RTCRtpCodecParameters {
    let rtcp_feedback = if fb {
        vec![
            RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            },
            RTCPFeedback {
                typ: "nack".into(),
                parameter: "pli".into(),
            },
        ]
    } else {
        Vec::new()
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.into(),
            clock_rate: rate,
            channels,
            sdp_fmtp_line: fmtp.into(),
            rtcp_feedback,
        },
        payload_type: pt,
    }
}
