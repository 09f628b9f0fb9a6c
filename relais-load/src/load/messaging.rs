//! Messaging load: N private conversations, both participants connected by Socket.IO and
//! joined to their room; messages sent by REST at stepped rates. Each message carries its send
//! time in `metadata`, so the receiving socket measures send → `new_message` latency.
//!
//! Per step it reports the offered rate, messages stored per second (201 answers), messages
//! delivered per second to the *other* participant, and latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::Method;
use serde_json::json;
use tokio::sync::Semaphore;

use super::TokenMinter;
use super::stats::Samples;
use crate::client::api::ApiClient;
use crate::client::socketio::SioClient;
use relais::ids::{Identity, Role};

#[derive(Debug, Clone)]
pub struct MessagingLoad {
    /// Server origin, `http://127.0.0.1:3000`.
    pub base: String,
    /// Other nodes of the same cluster: a conversation's doctor uses one node (REST and
    /// socket) and its patient the next, so every message crosses nodes.
    pub nodes: Vec<String>,
    pub conversations: usize,
    /// Offered rates, messages per second, one step each.
    pub rates: Vec<u32>,
    pub step: Duration,
    /// Most requests in flight at once.
    pub concurrency: usize,
    /// First user id used (doctors and patients get `first_id + i`).
    pub first_id: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StepReport {
    pub offered_per_s: u32,
    pub sent: u64,
    pub stored: u64,
    pub failed: u64,
    pub delivered: u64,
    pub stored_per_s: f64,
    pub delivered_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
}

struct Shared {
    epoch: Instant,
    delivered: AtomicU64,
    latencies: Mutex<Samples>,
}

/// Runs the scenario and returns one report per rate step.
pub async fn run(cfg: &MessagingLoad, minter: &TokenMinter) -> anyhow::Result<Vec<StepReport>> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(cfg.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        delivered: AtomicU64::new(0),
        latencies: Mutex::new(Samples::default()),
    });

    let bases: Vec<&str> = std::iter::once(cfg.base.as_str())
        .chain(cfg.nodes.iter().map(String::as_str))
        .collect();
    // Conversations and both participants' sockets.
    let mut pairs: Vec<(i64, ApiClient, ApiClient)> = Vec::with_capacity(cfg.conversations);
    let mut readers = Vec::new();
    for i in 0..cfg.conversations {
        let uid = cfg.first_id + i as i64;
        let doctor_id = Identity::new(Role::Medecin, uid);
        let patient_id = Identity::new(Role::Patient, uid);
        let (doctor_base, patient_base) = (bases[i % bases.len()], bases[(i + 1) % bases.len()]);
        let doctor = ApiClient::new(http.clone(), doctor_base, &minter.token(doctor_id));
        let patient = ApiClient::new(http.clone(), patient_base, &minter.token(patient_id));
        let conv = doctor
            .create_conversation("private", &[("patient", uid)])
            .await
            .map_err(|e| anyhow::anyhow!("creating conversation {i}: {e}"))?;
        for (who, token, base) in [
            (doctor_id, doctor.token(), doctor_base),
            (patient_id, patient.token(), patient_base),
        ] {
            let auth = json!({"token": token, "userType": who.role, "userId": who.id.0});
            let mut sock = SioClient::connect(base, auth)
                .await
                .map_err(|e| anyhow::anyhow!("socket {i}: {e}"))?;
            let ack = sock
                .emit_with_ack(
                    "join_conversation",
                    &json!({"conversationId": conv}),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|e| anyhow::anyhow!("conversation {i}, {who}: {e}"))?;
            anyhow::ensure!(ack["success"] == true, "join failed: {ack}");
            let shared = shared.clone();
            readers.push(tokio::spawn(async move {
                while let Some(ev) = sock.next_event().await {
                    if ev.name != "new_message" || ev.data["expediteur_type"] == who.role.as_str() {
                        continue;
                    }
                    if let Some(sent) = ev.data["metadata"]["t_us"].as_u64() {
                        let now = shared.epoch.elapsed().as_micros() as u64;
                        shared.latencies.lock().push(now.saturating_sub(sent));
                        shared.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        pairs.push((conv, doctor, patient));
    }

    let mut reports = Vec::new();
    let limiter = Arc::new(Semaphore::new(cfg.concurrency));
    for &rate in &cfg.rates {
        let stored = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        shared.delivered.store(0, Ordering::Relaxed);
        *shared.latencies.lock() = Samples::default();
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let start = Instant::now();
        let mut sent: u64 = 0;
        let mut tasks = Vec::new();
        while start.elapsed() < cfg.step {
            let due = start + interval.mul_f64(sent as f64);
            tokio::time::sleep_until(due.into()).await;
            let (conv, doctor, patient) = &pairs[(sent as usize) % pairs.len()];
            let sender = if sent.is_multiple_of(2) {
                doctor
            } else {
                patient
            }
            .clone();
            let conv = *conv;
            let permit = limiter.clone().acquire_owned().await?;
            let (stored, failed, shared) = (stored.clone(), failed.clone(), shared.clone());
            tasks.push(tokio::spawn(async move {
                let t_us = shared.epoch.elapsed().as_micros() as u64;
                let body = json!({"contenu": "charge", "type_message": "texte", "metadata": {"t_us": t_us}});
                let r = sender
                    .call(
                        Method::POST,
                        &format!("/api/messaging/conversations/{conv}/messages"),
                        Some(&body),
                    )
                    .await;
                match r {
                    Ok((s, _)) if s.as_u16() == 201 => stored.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                drop(permit);
            }));
            sent += 1;
        }
        for t in tasks {
            let _ = t.await;
        }
        let send_elapsed = start.elapsed().as_secs_f64();
        // Let deliveries in flight land (bounded).
        let deadline = Instant::now() + Duration::from_secs(5);
        while shared.delivered.load(Ordering::Relaxed) < stored.load(Ordering::Relaxed)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut lat = shared.latencies.lock().clone();
        let stored = stored.load(Ordering::Relaxed);
        let delivered = shared.delivered.load(Ordering::Relaxed);
        reports.push(StepReport {
            offered_per_s: rate,
            sent,
            stored,
            failed: failed.load(Ordering::Relaxed),
            delivered,
            stored_per_s: stored as f64 / send_elapsed,
            delivered_per_s: delivered as f64 / send_elapsed,
            latency_p50_ms: lat.percentile(50.0) as f64 / 1000.0,
            latency_p99_ms: lat.percentile(99.0) as f64 / 1000.0,
            latency_max_ms: lat.max() as f64 / 1000.0,
        });
    }
    for r in readers {
        r.abort();
    }
    Ok(reports)
}
