//! Message store and fan-out, in-process against the real application on SQLite (temporary
//! directory): one insert through the store (its group-commit writer), 64 concurrent inserts
//! (what group commit is for), and a send through the messaging service until both
//! participants' Socket.IO connections received `new_message`.
//!
//! `cargo bench --bench messaging`
#![allow(clippy::unwrap_used)] // tests and benchmarks: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relais::app::App;
use relais::auth::Principal;
use relais::config::Config;
use relais::ids::{ConversationId, Identity, Role};
use relais::messaging::SendMessage;
use relais::store::{ConversationKind, MessageType, NewMessage};
use relais_load::client::socketio::SioClient;
use serde_json::json;

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config {
        data_dir: dir.join("data"),
        media_dir: dir.join("media"),
        ..Config::default()
    };
    c.https.enabled = false;
    c.https.certs_dir = dir.join("certs");
    c.http.addr = "127.0.0.1:0".parse().unwrap();
    c.media.udp_addr = "127.0.0.1:0".parse().unwrap();
    c.media.tcp_addr = "127.0.0.1:0".parse().unwrap();
    c.media.public_ips = vec!["127.0.0.1".parse().unwrap()];
    c.turn.enabled = false;
    c.auth.jwt_secret = Some("bench-secret-bench-secret-bench-secret-0123".into());
    c
}

fn new_message(conversation: ConversationId, sender: Identity, i: u64) -> NewMessage {
    NewMessage {
        conversation_id: conversation,
        sender,
        sender_name: Some("Dr. Bench".into()),
        contenu: format!("Bonjour, message {i}"),
        type_message: MessageType::Text,
        metadata: None,
        client_message_id: None,
        attachment_id: None,
        created_at: 1_700_000_000_000 + i as i64,
    }
}

async fn socket(
    base: &str,
    app: &relais::state::AppState,
    who: Identity,
    conv: ConversationId,
) -> SioClient {
    let token = app
        .verifier
        .mint(who, None, Duration::from_secs(3600))
        .unwrap();
    let auth = json!({"token": token, "userType": who.role, "userId": who.id.0, "role": who.role});
    let s = SioClient::connect(base, auth).await.unwrap();
    s.emit_with_ack(
        "join_conversation",
        &json!({"conversationId": conv.0, "user": {"userId": who.id.0, "userType": who.role}}),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    s
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = rt.block_on(async { App::build(config(dir.path())).await.unwrap().spawn() });
    let state = running.state.clone();
    let base = format!("http://{}", running.http_addr);
    let doctor = Identity::new(Role::Medecin, 79);
    let patient = Identity::new(Role::Patient, 11);
    let (conv, _) = rt
        .block_on(state.messaging.create_conversation(
            doctor,
            ConversationKind::Private,
            &[patient],
        ))
        .unwrap();
    let conv = conv.id;
    let mut counter = 0u64;

    let mut g = c.benchmark_group("messaging");
    g.throughput(Throughput::Elements(1));
    g.bench_function("store_insert", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    counter += 1;
                    state
                        .store
                        .insert_message(&new_message(conv, doctor, counter))
                        .await
                        .unwrap();
                }
                t.elapsed()
            })
        })
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("store_insert_64_concurrent", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    let mut tasks = Vec::with_capacity(64);
                    for _ in 0..64 {
                        counter += 1;
                        let store = state.store.clone();
                        let m = new_message(conv, doctor, counter);
                        tasks.push(tokio::spawn(async move { store.insert_message(&m).await }));
                    }
                    for t in tasks {
                        t.await.unwrap().unwrap();
                    }
                }
                t.elapsed()
            })
        })
    });
    let (mut a, mut b2) = rt.block_on(async {
        (
            socket(&base, &state, doctor, conv).await,
            socket(&base, &state, patient, conv).await,
        )
    });
    let principal = Principal {
        identity: doctor,
        name: Some("Dr. Bench".into()),
    };
    g.throughput(Throughput::Elements(1));
    g.bench_function("send_fanout_2_sockets", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for i in 0..iters {
                    let msg = SendMessage {
                        contenu: format!("fan-out {i}"),
                        type_message: MessageType::Text,
                        metadata: None,
                        client_message_id: None,
                        attachment_id: None,
                    };
                    state.messaging.send(&principal, conv, msg).await.unwrap();
                    a.wait_for("new_message", Duration::from_secs(5))
                        .await
                        .unwrap();
                    b2.wait_for("new_message", Duration::from_secs(5))
                        .await
                        .unwrap();
                }
                t.elapsed()
            })
        })
    });
    g.finish();
    rt.block_on(async {
        a.close().await;
        b2.close().await;
        let _ = running.stop().await;
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
