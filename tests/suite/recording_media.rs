//! Recording real media through the real server: aiortc (an independent WebRTC
//! implementation sending real VP8 and Opus) as doctor and patient, the doctor turns recording
//! on and off over REST, and ffprobe/ffmpeg judge each participant's file: codecs, duration
//! within 5 % of the time recorded, audio and video starting within 100 ms of each other, and
//! no decoding error. Also with 5 % loss and reordering between the clients and the server,
//! and with a server killed by SIGKILL mid-recording (the cut file plays; the row is repaired
//! at the next start).
//!
//! Needs the aiortc venv (scripts/prepare/30-python-aiortc.sh) and Debian's ffmpeg
//! (scripts/prepare/40-ffmpeg.sh); `.ci/run` prepares both.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use relais::ids::{Identity, Role};
use relais_load::load::TokenMinter;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::*;
use crate::impair::app_behind_lossy_proxy;
use crate::probe;

/// One aiortc consultation (doctor publishes, patient joins with the code), running in a
/// child process for `seconds` once both are connected.
struct AiortcCall {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    stderr: tokio::task::JoinHandle<String>,
}

struct CallSpec {
    base: String,
    doctor_token: String,
    patient_token: String,
    session: i64,
    conversation: i64,
    code: String,
    seconds: f64,
}

fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "aiortc is not installed: run scripts/prepare/30-python-aiortc.sh (.ci/run does)"
    );
    python
}

impl AiortcCall {
    fn start(spec: &CallSpec) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut child = tokio::process::Command::new(python())
            .arg(root.join("tests/py/aiortc_consultation.py"))
            .env("BASE", &spec.base)
            .env("DOCTOR_TOKEN", &spec.doctor_token)
            .env("PATIENT_TOKEN", &spec.patient_token)
            .env("DOCTOR_ID", "79")
            .env("PATIENT_ID", "11")
            .env("SESSION_ID", spec.session.to_string())
            .env("CONVERSATION_ID", spec.conversation.to_string())
            .env("CODE", &spec.code)
            .env("SECONDS", spec.seconds.to_string())
            .envs(std::env::var("AIORTC_LOG").map(|v| ("AIORTC_LOG", v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = r.next_line().await {
                let _ = tx.send(l);
            }
        });
        let stderr = tokio::spawn(async move {
            let mut out = String::new();
            let mut r = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = r.next_line().await {
                out.push_str(&l);
                out.push('\n');
            }
            out
        });
        Self {
            child,
            lines,
            stderr,
        }
    }

    /// Waits until both sides are connected (bounded).
    async fn connected(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) if l.contains("\"connected\"") => return,
                Ok(Some(l)) if l.contains("\"ok\": false") => panic!("aiortc failed: {l}"),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => {
                    let _ = self.child.start_kill();
                    let stderr = (&mut self.stderr).await.unwrap_or_default();
                    panic!("aiortc never connected:\n{}", tail(&stderr));
                }
            }
        }
    }

    /// The final report (after the call ran its course).
    async fn report(mut self) -> Value {
        let mut last = Value::Null;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while let Ok(Some(l)) = tokio::time::timeout_at(deadline, self.lines.recv()).await {
            if let Ok(v) = serde_json::from_str::<Value>(&l)
                && v.get("ok").is_some()
            {
                last = v;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        if last["ok"] != true {
            let stderr = self.stderr.await.unwrap_or_default();
            panic!("aiortc report: {last}\n{}", tail(&stderr));
        }
        last
    }
}

fn tail(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    chars[chars.len().saturating_sub(6000)..].iter().collect()
}

/// The checks every recording file must pass: codecs, duration within 5 % of `seconds`,
/// audio and video starting within 100 ms of each other, no decoding error.
fn check_file(path: &Path, seconds: f64) -> probe::Probe {
    // A failing file is kept for a look (tests/artifacts/recording/).
    struct KeepOnPanic<'a>(&'a Path);
    impl Drop for KeepOnPanic<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts/recording");
                let _ = std::fs::create_dir_all(&dir);
                if let Some(name) = self.0.file_name() {
                    let _ = std::fs::copy(self.0, dir.join(name));
                    eprintln!("kept {}", dir.join(name).display());
                }
            }
        }
    }
    let _keep = KeepOnPanic(path);
    let p = probe::probe(path);
    let errors = probe::decode_errors(path);
    assert!(
        errors.trim().is_empty(),
        "{}: ffmpeg decode errors: {errors}",
        path.display()
    );
    assert!(p.format_name.contains("matroska"), "{p:#?}");
    let v = p.stream("video");
    let a = p.stream("audio");
    assert_eq!(v.codec_name, "vp8", "{p:#?}");
    assert_eq!(a.codec_name, "opus", "{p:#?}");
    assert!(
        (p.duration - seconds).abs() <= seconds * 0.05,
        "{}: duration {} not within 5% of the {seconds} s recorded: {p:#?}",
        path.display(),
        p.duration
    );
    assert!(
        (v.start_time - a.start_time).abs() <= 0.1,
        "{}: video starts at {} and audio at {}",
        path.display(),
        v.start_time,
        a.start_time
    );
    // Most of the time recorded holds video frames (aiortc sends 30 fps).
    assert!(v.packets as f64 >= seconds * 15.0, "{p:#?}");
    assert!(a.packets as f64 >= seconds * 40.0, "{p:#?}");
    p
}

/// REST as a doctor (or anyone) against a server.
async fn call(
    base: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    relais_load::client::api::ApiClient::new(reqwest::Client::new(), base, token)
        .call(method, path, body.as_ref())
        .await
        .unwrap()
}

/// Records an aiortc call for `record_s` seconds and checks both files. `base` is where
/// clients reach the server (a proxy may sit in between for media only).
async fn record_aiortc_call(app: &TestApp, record_s: f64) -> Vec<(Value, PathBuf)> {
    probe::require_ffmpeg();
    let (session, conversation, code) = create_session(app, 79, &[11], "audio_video").await;
    let doctor = app.token(Role::Medecin, 79);
    let mut aiortc = AiortcCall::start(&CallSpec {
        base: app.base.clone(),
        doctor_token: doctor.clone(),
        patient_token: app.token(Role::Patient, 11),
        session,
        conversation,
        code,
        seconds: record_s + 4.0,
    });
    aiortc.connected().await;
    // Let both sides settle (bandwidth estimation, first keyframes) before recording.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let path = format!("/api/messaging/webrtc/sessions/{session}/recording");
    let (status, v) = call(
        &app.base,
        &doctor,
        Method::POST,
        &path,
        Some(json!({"consent": true})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let started = Instant::now();
    assert_eq!(
        v["data"]["recording"]["recordings"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "doctor and patient are recorded: {v}"
    );
    tokio::time::sleep(Duration::from_secs_f64(record_s)).await;
    let (status, v) = call(&app.base, &doctor, Method::DELETE, &path, None).await;
    let recorded = started.elapsed().as_secs_f64();
    assert_eq!(status, StatusCode::OK, "{v}");
    let report = aiortc.report().await;
    let rows = v["data"]["recordings"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2, "{v}");
    let mut out = Vec::new();
    for r in rows {
        assert_eq!(r["status"], "finished", "{r}");
        assert_eq!(r["content_type"], "video/webm", "{r}");
        let file = app
            .config
            .recordings_dir()
            .join(format!("{session}"))
            .read_dir()
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().contains(r["id"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("no file for {r}"));
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            r["size_bytes"].as_u64().unwrap(),
            "{r}"
        );
        let p = check_file(&file, recorded);
        assert!(
            (p.duration * 1000.0 - r["duration_ms"].as_f64().unwrap()).abs() < 50.0,
            "stored duration {r} vs file {p:#?}"
        );
        out.push((r, file));
    }
    eprintln!("aiortc report: {report}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aiortc_consultation_recorded_per_participant_plays() {
    let app = spawn_app(Backend::Sqlite).await;
    let files = record_aiortc_call(&app, 8.0).await;
    let mut who: Vec<String> = files
        .iter()
        .map(|(r, _)| format!("{}-{}", r["participant"]["role"], r["participant"]["id"]))
        .collect();
    who.sort();
    assert_eq!(who, vec!["\"medecin\"-79", "\"patient\"-11"]);
    let m = app.metrics().await;
    assert_eq!(metric_value(&m, "relais_recordings_active"), 0.0, "{m}");
    assert!(
        metric_value(&m, "relais_recording_bytes_written_total") > 10_000.0,
        "{m}"
    );
}

/// The same call with 5 % of the media datagrams lost in each direction and 15 % held back
/// (reordered) between the clients and the server: NACKs repair part of it, the recorder's
/// jitter buffer puts packets back in order, drops what it cannot rebuild and asks for
/// keyframes; the files still pass every check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recording_with_loss_and_reordering_plays() {
    let (app, proxy) = app_behind_lossy_proxy("127.0.0.2", 7).await;
    record_aiortc_call(&app, 8.0).await;
    let (forwarded, dropped, delayed) = (
        proxy
            .stats
            .forwarded
            .load(std::sync::atomic::Ordering::Relaxed) as f64,
        proxy
            .stats
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed) as f64,
        proxy
            .stats
            .delayed
            .load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    let loss = dropped / (forwarded + dropped);
    assert!(
        (0.03..0.07).contains(&loss) && forwarded > 1000.0,
        "the path lost {loss} of {forwarded} datagrams"
    );
    assert!(
        delayed / forwarded > 0.1,
        "{delayed} of {forwarded} reordered"
    );
    let m = app.metrics().await;
    eprintln!(
        "loss {:.3}, reordered {:.3}; PLIs {}, recorder keyframe requests {}, packets the \
         recorders gave up on {}, frames left out {}",
        loss,
        delayed / forwarded,
        metric_value(&m, "relais_plis_sent_total"),
        metric_value(&m, "relais_recording_keyframe_requests_total"),
        metric_value(&m, "relais_recording_packets_lost_total"),
        metric_value(&m, "relais_recording_frames_dropped_total"),
    );
    assert_eq!(
        metric_value(
            &m,
            "relais_recording_packets_dropped_total{reason=\"queue_full\"}"
        ),
        0.0,
        "{m}"
    );
}

/// `relais serve` killed with SIGKILL while recording: the files on disk play up to their
/// last complete cluster, close to the time recorded; at the next start the rows say
/// `interrupted` with the duration and size read from the files, and the doctor can download
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_server_leaves_playable_recordings_and_repairs_their_rows() {
    probe::require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), &[]);
    let minter = TokenMinter::from_data_dir(&dir.path().join("data")).unwrap();
    let doctor = minter.token(Identity::new(Role::Medecin, 79));
    let api =
        relais_load::client::api::ApiClient::new(reqwest::Client::new(), &server.base, &doctor);
    let conversation = api
        .create_conversation("private", &[("patient", 11)])
        .await
        .unwrap();
    let v = api
        .call_ok(
            Method::POST,
            "/api/messaging/webrtc/sessions",
            Some(&json!({"conversation_id": conversation, "waiting_room": false})),
        )
        .await
        .unwrap();
    let session = v["data"]["session"]["id"].as_i64().unwrap();
    let code = v["data"]["conferenceLink"]["joinCode"]
        .as_str()
        .unwrap()
        .to_string();
    let mut aiortc = AiortcCall::start(&CallSpec {
        base: server.base.clone(),
        doctor_token: doctor.clone(),
        patient_token: minter.token(Identity::new(Role::Patient, 11)),
        session,
        conversation,
        code,
        seconds: 30.0,
    });
    aiortc.connected().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let path = format!("/api/messaging/webrtc/sessions/{session}/recording");
    let (status, v) = call(
        &server.base,
        &doctor,
        Method::POST,
        &path,
        Some(json!({"consent": true})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(7)).await;
    server.child.kill().expect("SIGKILL the server");
    let recorded = started.elapsed().as_secs_f64();
    server.child.wait().unwrap();
    drop(aiortc);

    let session_dir = dir
        .path()
        .join("media/recordings")
        .join(session.to_string());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&session_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let mut durations = Vec::new();
    for f in &files {
        let p = probe::probe(f);
        let errors = probe::decode_errors(f);
        assert!(
            errors.trim().is_empty(),
            "cut file {}: {errors}",
            f.display()
        );
        assert_eq!(p.stream("video").codec_name, "vp8");
        assert_eq!(p.stream("audio").codec_name, "opus");
        // At most the cluster in memory (~1 s) and the mux delay are lost.
        assert!(
            p.duration <= recorded && p.duration >= recorded - 2.0,
            "{}: plays {} s of the {recorded} s recorded",
            f.display(),
            p.duration
        );
        let (v, a) = (p.stream("video"), p.stream("audio"));
        assert!((v.start_time - a.start_time).abs() <= 0.1, "{p:#?}");
        durations.push((f.clone(), p.duration));
    }

    eprintln!("killed after {recorded:.2} s of recording; the cut files play {durations:?}");
    // Restart: the rows left `recording` are repaired from the files.
    let server = serve(dir.path(), &[]);
    let (status, v) = call(
        &server.base,
        &doctor,
        Method::GET,
        &format!("/api/messaging/webrtc/sessions/{session}/recordings"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let rows = v["data"]["recordings"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    for r in rows {
        assert_eq!(r["status"], "interrupted", "{r}");
        assert_eq!(r["end_reason"], "server_stopped", "{r}");
        assert_eq!(r["content_type"], "video/webm", "{r}");
        let id = r["id"].as_str().unwrap();
        let (file, seconds) = durations
            .iter()
            .find(|(f, _)| f.to_string_lossy().contains(id))
            .unwrap_or_else(|| panic!("no file for {r}"));
        assert_eq!(
            r["size_bytes"].as_u64().unwrap(),
            std::fs::metadata(file).unwrap().len(),
            "{r}"
        );
        let stored = r["duration_ms"].as_f64().unwrap() / 1000.0;
        assert!(
            (stored - seconds).abs() <= 0.1,
            "row says {stored} s, the file plays {seconds} s"
        );
        let (status, _) = call(
            &server.base,
            &doctor,
            Method::GET,
            r["url"].as_str().unwrap(),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
}
