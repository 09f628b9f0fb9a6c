//! The recording core end to end: real VP8/VP9/H264 and Opus from ffmpeg, packetized into
//! RTP as browsers do, through a simulated network, into a `Recorder`; ffprobe and ffmpeg
//! judge the file. Needs Debian's ffmpeg (scripts/prepare/40-ffmpeg.sh).
#![allow(clippy::unwrap_used)] // tests and benchmarks: a failed unwrap is a failed test

#[path = "recording_support/media.rs"]
#[allow(dead_code)]
mod media;
#[path = "recording_support/probe.rs"]
mod probe;
#[path = "recording_support/rtp.rs"]
mod rtp;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use relais::codec::Codec;
use rtp::{Call, Network, VideoPlan};

const SECONDS: u32 = 6;

fn video(codec: Codec, gop: u32) -> VideoPlan {
    let frames = match codec {
        Codec::Vp8 => media::vp8(SECONDS, gop),
        Codec::Vp9 => media::vp9(SECONDS, gop),
        Codec::H264 => media::h264(SECONDS, gop),
        _ => unreachable!(),
    };
    VideoPlan {
        codec,
        frames,
        start_s: 0.0,
        ssrc_change_at_s: None,
        extra_delay_ms: 0.0,
        vp9_flexible: false,
    }
}

fn call(v: Option<VideoPlan>, network: Network) -> Call {
    Call {
        seconds: SECONDS as f64,
        video: v,
        audio: Some(media::opus(SECONDS)),
        network,
        sender_reports: false,
    }
}

/// 5 % loss and up to 40 ms of jitter (reordering), repaired by retransmission as the SFU's
/// NACKs get it from a browser.
fn lossy(seed: u64) -> Network {
    Network {
        loss: 0.05,
        jitter_ms: 40.0,
        retransmit: true,
        seed,
    }
}

/// The same loss with nothing repaired: frames are lost for good.
fn lossy_unrepaired(seed: u64) -> Network {
    Network {
        retransmit: false,
        ..lossy(seed)
    }
}

fn out_path(dir: &tempfile::TempDir, name: &str, codec: Codec) -> PathBuf {
    let (ext, _) = relais::recording::container_for([codec, Codec::Opus]);
    dir.path().join(format!("{name}.{ext}"))
}

/// The checks every recording must pass; returns the probe for more.
fn check(path: &Path, codec: &str, seconds: f64) -> probe::Probe {
    let p = probe::probe(path);
    let errors = probe::decode_errors(path);
    assert!(errors.trim().is_empty(), "ffmpeg decode errors: {errors}");
    assert!(p.format_name.contains("matroska"), "{p:#?}");
    let v = p.stream("video");
    let a = p.stream("audio");
    assert_eq!(v.codec_name, codec);
    assert_eq!(a.codec_name, "opus");
    assert!(
        (p.duration - seconds).abs() <= seconds * 0.05,
        "duration {} not within 5% of {seconds}: {p:#?}",
        p.duration
    );
    assert!(v.packets > 0 && a.packets > 0, "{p:#?}");
    p
}

fn assert_start_together(p: &probe::Probe) {
    let (v, a) = (p.stream("video"), p.stream("audio"));
    assert!(
        (v.start_time - a.start_time).abs() <= 0.1,
        "video starts at {} and audio at {}",
        v.start_time,
        a.start_time
    );
}

fn clean(codec: Codec, name: &str, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = out_path(&dir, name, codec);
    let c = call(Some(video(codec, 90)), Network::default());
    let (summary, _) = rtp::record(&c, &path);
    let p = check(&path, expect, SECONDS as f64);
    assert_start_together(&p);
    // Nothing lost on a clean network: every frame is in the file.
    assert!(
        p.stream("video").packets >= (SECONDS * media::FPS) as u64 - 2,
        "{p:#?}"
    );
    assert!(
        p.stream("audio").packets >= (SECONDS * 50) as u64 - 2,
        "{p:#?}"
    );
    assert_eq!(summary.size_bytes, std::fs::metadata(&path).unwrap().len());
    assert!((summary.duration_ms as f64 / 1000.0 - p.duration).abs() < 0.01);
    let (_, content_type) = relais::recording::container_for([codec, Codec::Opus]);
    assert_eq!(summary.content_type, content_type);
}

fn with_loss(codec: Codec, name: &str, expect: &str, flexible: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = out_path(&dir, name, codec);
    let mut v = video(codec, 30);
    v.vp9_flexible = flexible;
    let mut c = call(Some(v), lossy(7));
    c.sender_reports = true;
    let fed = rtp::feed(&c, &path, None);
    let stats = fed.recorder.stats();
    fed.recorder.finish().unwrap();
    let p = check(&path, expect, SECONDS as f64);
    assert_start_together(&p);
    assert!(
        stats.late + stats.lost > 0,
        "the network reordered or lost: {stats:?}"
    );
    // Most frames made it (retransmissions repair most of the loss).
    assert!(
        p.stream("video").packets > (SECONDS * media::FPS) as u64 * 2 / 3,
        "{p:#?}"
    );

    // Without repair whole frames are lost: the recorder drops what depends on them, asks
    // for keyframes, and resumes at each one; nothing undecodable reaches the file.
    let path = out_path(&dir, &format!("{name}-unrepaired"), codec);
    let mut v = video(codec, 30);
    v.vp9_flexible = flexible;
    let c = call(Some(v), lossy_unrepaired(11));
    let (_, keyframe_requests) = rtp::record(&c, &path);
    let p = check(&path, expect, SECONDS as f64);
    assert!(
        keyframe_requests > 1,
        "losses should have asked for keyframes"
    );
    assert!(p.stream("video").last_pts > SECONDS as f64 - 1.5, "{p:#?}");
}

#[test]
fn vp8_opus() {
    clean(Codec::Vp8, "vp8", "vp8");
}

#[test]
fn vp9_opus() {
    clean(Codec::Vp9, "vp9", "vp9");
}

#[test]
fn h264_opus_in_matroska() {
    clean(Codec::H264, "h264", "h264");
}

#[test]
fn vp8_opus_with_loss_and_reordering() {
    with_loss(Codec::Vp8, "vp8-loss", "vp8", false);
}

#[test]
fn vp9_opus_with_loss_and_reordering() {
    with_loss(Codec::Vp9, "vp9-loss", "vp9", false);
}

#[test]
fn vp9_flexible_mode_with_loss_and_reordering() {
    with_loss(Codec::Vp9, "vp9-flex-loss", "vp9", true);
}

#[test]
fn h264_opus_with_loss_and_reordering() {
    with_loss(Codec::H264, "h264-loss", "h264", false);
}

/// Video packets arrive 150 ms after the audio captured with them (encoder latency). The
/// Sender Reports say both were captured together: the file starts them together.
#[test]
fn sender_reports_line_up_audio_and_video() {
    let dir = tempfile::tempdir().unwrap();
    let path = out_path(&dir, "sr", Codec::Vp8);
    let mut v = video(Codec::Vp8, 30);
    v.extra_delay_ms = 150.0;
    let mut c = call(Some(v), Network::default());
    c.sender_reports = true;
    rtp::record(&c, &path);
    let p = check(&path, "vp8", SECONDS as f64);
    let (vs, a) = (p.stream("video"), p.stream("audio"));
    assert!(
        (vs.start_time - a.start_time).abs() <= 0.04,
        "with reports, video {} and audio {} should start together",
        vs.start_time,
        a.start_time
    );
}

/// The camera comes on 2 s into the call: the video track joins the file then.
#[test]
fn late_video_track() {
    let dir = tempfile::tempdir().unwrap();
    let path = out_path(&dir, "late", Codec::Vp8);
    let mut v = video(Codec::Vp8, 60);
    v.start_s = 2.0;
    let (_, _) = rtp::record(&call(Some(v), Network::default()), &path);
    let p = check(&path, "vp8", SECONDS as f64);
    let (vs, a) = (p.stream("video"), p.stream("audio"));
    assert!(a.start_time.abs() < 0.05, "{p:#?}");
    assert!((vs.start_time - 2.0).abs() < 0.1, "{p:#?}");
    assert!(vs.packets >= 4 * media::FPS as u64 - 2, "{p:#?}");
}

/// The video source changes SSRC, sequence and timestamp bases at 3.3 s without a
/// keyframe: the recorder asks for one, drops the delta frames, and continues the track.
#[test]
fn ssrc_change_mid_recording() {
    let dir = tempfile::tempdir().unwrap();
    let path = out_path(&dir, "ssrc", Codec::H264);
    let mut v = video(Codec::H264, 30);
    v.ssrc_change_at_s = Some(3.3);
    let fed = rtp::feed(&call(Some(v), Network::default()), &path, None);
    assert!(
        fed.keyframe_requests >= 2,
        "start and the source change ask for keyframes"
    );
    let stats = fed.recorder.stats();
    assert_eq!(stats.source_changes, 1);
    fed.recorder.finish().unwrap();
    let p = check(&path, "h264", SECONDS as f64);
    assert_start_together(&p);
    let vs = p.stream("video");
    assert!(vs.last_pts > SECONDS as f64 - 0.2, "{p:#?}");
    // Frames from 3.3 s to the keyframe at 4.0 s are not in the file.
    let expected = (SECONDS * media::FPS) as u64 - 21;
    assert!(
        vs.packets <= expected + 1 && vs.packets >= expected - 2,
        "{p:#?}"
    );
}

/// Audio only (no camera at all): an audio/webm file.
#[test]
fn audio_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audio.webm");
    let (summary, _) = rtp::record(&call(None, Network::default()), &path);
    assert_eq!(summary.content_type, "audio/webm");
    let p = probe::probe(&path);
    assert_eq!(p.streams.len(), 1);
    assert_eq!(p.stream("audio").codec_name, "opus");
    assert!((p.duration - SECONDS as f64).abs() <= SECONDS as f64 * 0.05);
    let errors = probe::decode_errors(&path);
    assert!(errors.trim().is_empty(), "{errors}");
}

const CHILD_ENV: &str = "RELAIS_RECORDING_CHILD_OUT";

/// A recorder process killed with SIGKILL mid-recording leaves a file that plays up to its
/// last complete cluster, with the duration of what was written.
#[test]
fn killed_mid_recording() {
    probe::require_ffmpeg();
    // Encode before the child runs, so it finds the media cached.
    let _ = video(Codec::Vp8, 30);
    let _ = media::opus(SECONDS);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.webm");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "recording_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let mut written = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(at) = line.find("READY ") {
            let rest = &line[at + 6..];
            let mut it = rest.split(' ').map(|n| n.parse::<u64>().unwrap());
            written = Some((it.next().unwrap(), it.next().unwrap()));
            break;
        }
    }
    let (duration_ms, bytes) = written.expect("child reported progress");
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();

    assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes);
    // Four seconds were fed; the last cluster was still in memory.
    assert!((2_500..=4_000).contains(&duration_ms), "{duration_ms}");
    let p = probe::probe(&path);
    let errors = probe::decode_errors(&path);
    assert!(errors.trim().is_empty(), "cut file: {errors}");
    let written_s = duration_ms as f64 / 1000.0;
    assert!(
        (p.duration - written_s).abs() <= 0.1,
        "cut file lasts {} but {written_s} s were written",
        p.duration
    );
    assert_eq!(p.stream("video").codec_name, "vp8");
    assert_eq!(p.stream("audio").codec_name, "opus");
    assert!(p.stream("video").last_pts > written_s - 1.2, "{p:#?}");
    assert_start_together(&p);
}

/// The child of `killed_mid_recording`: records four seconds, reports what is on disk, and
/// waits to be killed.
#[test]
#[ignore = "run by killed_mid_recording in a child process"]
fn recording_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let c = call(Some(video(Codec::Vp8, 30)), Network::default());
    let fed = rtp::feed(&c, Path::new(&path), Some(Duration::from_secs(4)));
    println!(
        "READY {} {}",
        fed.recorder.written_duration_ms(),
        fed.recorder.written_bytes()
    );
    // Never finish: the parent kills this process.
    let _keep = fed;
    std::thread::sleep(Duration::from_secs(120));
    std::process::exit(3);
}
