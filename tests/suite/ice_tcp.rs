//! ICE-TCP (RFC 6544 passive on the server, RFC 4571 framing) with webrtc-rs peers that have
//! no UDP at all.

use std::time::Duration;

use relais::ids::Role;
use relais_load::client::peer::{ClientPeer, Entry};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_over_ice_tcp_only() {
    let app = spawn_app(Backend::Sqlite).await;
    let (session, conv, code) = create_session(&app, 79, &[11], "audio_video").await;
    let tcp_only = |cfg: &mut relais_load::client::peer::PeerConfig| {
        cfg.udp_bind = Vec::new();
        cfg.tcp_bind = vec!["127.0.0.1:0".into()];
    };
    let mut cfg = peer_config(&app, Role::Medecin, 79, session, Entry::Publish);
    cfg.conversation_id = conv;
    tcp_only(&mut cfg);
    let mut doctor = ClientPeer::start(cfg).await.unwrap();
    doctor
        .wait_connected(Duration::from_secs(15))
        .await
        .expect("doctor connects over ICE-TCP");
    let mut cfg = peer_config(&app, Role::Patient, 11, session, Entry::Code(code));
    tcp_only(&mut cfg);
    let mut patient = ClientPeer::start(cfg).await.unwrap();
    patient
        .wait_connected(Duration::from_secs(15))
        .await
        .expect("patient connects over ICE-TCP");
    let ok = eventually(Duration::from_secs(15), || {
        doctor.received.streams_with(50) == (1, 1) && patient.received.streams_with(50) == (1, 1)
    })
    .await;
    assert!(ok, "media flows both ways over TCP");
    for peer in [&doctor, &patient] {
        let pair = peer.selected_pair().await.expect("a selected pair");
        assert_eq!(pair.protocol, "tcp", "{pair:?}");
        assert_eq!(pair.local_type, "host", "{pair:?}");
    }
    assert_eq!(server_transports(&app, 79, session).await, ["tcp", "tcp"]);
    doctor.close().await;
    patient.close().await;
}
