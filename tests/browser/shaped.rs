//! Issue 17's measurement: a call on a patient's poor link, seen by the receiving browser.
//!
//! ```text
//!   srv namespace (relais, node, the doctor's    net namespace (the way)        pat namespace
//!   chromium on loopback: unconstrained)                                         (the patient's
//!                                                                                 chromium)
//!   s1: SRV_IP ──────── veth ──────── r1: NET_SRV_IP   r2: NET_PAT_IP ── veth ── p1: PAT_IP
//!   tc tbf on s1's egress             routes PAT_IP through `dly0`, a TUN device whose
//!   (the patient's downlink)          reader holds each packet DELAY (the delay shim); nftables
//!                                     drops LOSS_PERCENT % of what leaves on r2 at random
//! ```
//!
//! Only the downlink (server → patient) is shaped, delayed and lossy; the uplink is the plain
//! veths. The unshaped reference has the same three namespaces, without tbf, delay or loss.
//! The shaping is in place before the patient loads the page; the measure starts when the
//! patient's call is connected.
//!
//! The doctor's camera is a y4m clip (1280x720, 30 fps: testsrc2 with moving noise, hard enough
//! to encode that Chromium sends ~2 Mbit/s unshaped), made with ffmpeg once and cached under
//! the target directory.
//!
//! Environment: `RELAIS_SHAPED_TARGETS=1` asserts issue 17's targets (`ISSUE_17_TARGETS`);
//! otherwise `USABLE`: a usable call, well short of the targets.
//! `RELAIS_SHAPED_RATES=unshaped,1000,400` (kbit/s) runs
//! `shaped_calls_table_in_chromium` over those rates and prints the table
//! (`RELAIS_SHAPED_RUNS=2`: each rate twice). `RELAIS_SHAPED_SERVER=/path/to/relais` measures
//! another build of the server than the one cargo built (before/after figures).

use super::*;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const SRV_IP: &str = "198.51.100.1";
const NET_SRV_IP: &str = "198.51.100.254";
const NET_PAT_IP: &str = "203.0.113.1";
const PAT_IP: &str = "203.0.113.2";
const SHAPED_HTTPS_PORT: u16 = 3443;
const SHAPED_MEDIA_PORT: u16 = 3479;

/// One call: measured from `WINDOW_FROM` to `CALL` after the patient's call is connected.
const CALL: Duration = Duration::from_secs(45);
const WINDOW_FROM: Duration = Duration::from_secs(15);

/// The downlink's one-way delay and random loss, on the shaped rows (not the unshaped one).
const DELAY: Duration = Duration::from_millis(40);
const LOSS_PERCENT: u32 = 1;
/// The tbf bucket: a few full-size packets, as a radio link serves a few per scheduling
/// interval rather than a long burst at line rate.
const TBF_BURST_BYTES: u32 = 6_000;
/// The tbf queue, in time at the rate: a mobile link's buffer is deep (bufferbloat), so what
/// the link cannot carry waits up to this long before the queue drops it.
const TBF_QUEUE_MS: u32 = 300;

/// Issue 17's targets, one row per patient downlink (kbit/s; `None`: unshaped), measured on
/// the patient over the window. Asserted with `RELAIS_SHAPED_TARGETS=1`.
const ISSUE_17_TARGETS: [(Option<u32>, Targets); 3] = [
    (
        None,
        Targets {
            min_fps: 28.0,
            min_height: 720.0,
            max_freeze_s: 0.5,
            max_video_loss: 0.005,
            max_audio_concealed: 0.005,
            // "unchanged": 2 ms measured; a loaded two-core machine may add some.
            max_rtt_ms: 20.0,
        },
    ),
    (
        Some(1000),
        Targets {
            min_fps: 24.0,
            min_height: 360.0,
            max_freeze_s: 1.0,
            max_video_loss: 0.03,
            max_audio_concealed: 0.015,
            max_rtt_ms: 150.0,
        },
    ),
    (
        Some(400),
        Targets {
            min_fps: 15.0,
            min_height: 0.0,
            max_freeze_s: 2.0,
            max_video_loss: 0.05,
            max_audio_concealed: 0.02,
            max_rtt_ms: 200.0,
        },
    ),
];

/// What every run asserts, whatever `RELAIS_SHAPED_TARGETS` says: a call that is usable, well
/// short of the issue's targets (a loaded CI machine is noisy) and far from what relais did
/// before it estimated its subscribers' links (at 1 Mbit/s: 0 fps, a 30 s freeze, 55 % of the
/// video lost, 375 ms of round trip).
const USABLE: Targets = Targets {
    min_fps: 15.0,
    min_height: 0.0,
    // Calls on this link still show one freeze of about 3 s now and then (not explained yet;
    // seen with no queue drop at all), hence 6 s here rather than the issue's 1 s.
    max_freeze_s: 6.0,
    max_video_loss: 0.10,
    max_audio_concealed: 0.04,
    max_rtt_ms: 250.0,
};

#[derive(Debug, Clone, Copy)]
struct Targets {
    min_fps: f64,
    min_height: f64,
    max_freeze_s: f64,
    max_video_loss: f64,
    max_audio_concealed: f64,
    max_rtt_ms: f64,
}

/// What the patient's browser saw over the window, and what the doctor's sent.
#[derive(Debug, Clone)]
pub struct CallFigures {
    pub rate_kbit: Option<u32>,
    /// Frames decoded per second (framesDecoded over the window).
    pub fps: f64,
    /// The received video's height: median and lowest over the seconds in which frames were
    /// decoded (NaN, shown `–`, when none was).
    pub height: f64,
    pub height_min: f64,
    /// The longest gap between two decoded frames (the page watches every 20 ms).
    pub longest_freeze_s: f64,
    /// The same from the per-second framesDecoded: the longest run of seconds with none.
    pub longest_stall_1s: f64,
    /// Chromium's freezeCount and totalFreezesDuration over the window.
    pub freezes: f64,
    pub freezes_s: f64,
    /// Video packets lost / expected; audio concealed samples / samples received.
    pub video_loss: f64,
    pub audio_concealed: f64,
    /// The patient's selected candidate pair's currentRoundTripTime: mean and highest.
    pub rtt_ms: f64,
    pub rtt_ms_max: f64,
    /// The doctor's outbound video (bytesSent over the window), its height, and its
    /// availableOutgoingBitrate (mean).
    pub doctor_kbps: f64,
    pub doctor_height: f64,
    pub doctor_estimate_kbps: f64,
    pub doctor_limitation: String,
    /// Over the whole call: frames the patient decoded, audio samples it received.
    pub frames_decoded: f64,
    pub audio_samples: f64,
    /// What the link dropped: tbf's queue, and the random loss.
    pub queue_drops: u64,
    pub loss_drops: u64,
    /// The whole run, lab to teardown (seconds).
    pub wall_s: f64,
}

impl CallFigures {
    pub fn label(&self) -> String {
        match self.rate_kbit {
            None => "unshaped".into(),
            Some(r) => format!("{r} kbit/s + {} ms + {LOSS_PERCENT} %", DELAY.as_millis()),
        }
    }

    pub const HEADER: &'static str = "| patient downlink | video fps | height (min) | longest freeze (1-s stall; chromium freezes) | video loss | audio concealed | RTT mean (max) | doctor sends (its height; estimate; limited by) | link drops: queue / random | wall |\n|---|---|---|---|---|---|---|---|---|---|";

    pub fn row(&self) -> String {
        format!(
            "| {} | {:.1} | {} ({}) | {:.2} s ({:.0} s; {:.0} for {:.1} s) | {:.1} % | {:.2} % | {:.0} ms ({:.0}) | {:.0} kbit/s ({:.0}p; {:.0} kbit/s; {}) | {} / {} | {:.0} s |",
            self.label(),
            self.fps,
            px(self.height),
            px(self.height_min),
            self.longest_freeze_s,
            self.longest_stall_1s,
            self.freezes,
            self.freezes_s,
            self.video_loss * 100.0,
            self.audio_concealed * 100.0,
            self.rtt_ms,
            self.rtt_ms_max,
            self.doctor_kbps,
            self.doctor_height,
            self.doctor_estimate_kbps,
            self.doctor_limitation,
            self.queue_drops,
            self.loss_drops,
            self.wall_s,
        )
    }

    /// The issue's targets for this row, if it has any.
    fn targets(&self) -> Option<Targets> {
        ISSUE_17_TARGETS
            .iter()
            .find(|(r, _)| *r == self.rate_kbit)
            .map(|(_, t)| *t)
    }

    /// With `RELAIS_SHAPED_TARGETS=1`, the issue's targets for this row; otherwise that the
    /// call is up: the patient decoded video and audio flowed.
    pub fn check(&self) {
        let row = self.row();
        assert!(
            self.frames_decoded >= 1.0,
            "the patient decoded no video frame: {row}"
        );
        assert!(
            self.audio_samples > 0.0 && self.audio_concealed < 1.0,
            "no audio reached the patient: {row}"
        );
        let t = if std::env::var("RELAIS_SHAPED_TARGETS").as_deref() == Ok("1") {
            let Some(t) = self.targets() else {
                println!("no target in ISSUE_17_TARGETS for {}", self.label());
                return;
            };
            t
        } else {
            USABLE
        };
        let mut missed = Vec::new();
        let mut want = |ok: bool, what: String| {
            if !ok {
                missed.push(what);
            }
        };
        want(self.fps >= t.min_fps, format!("fps ≥ {}", t.min_fps));
        want(
            t.min_height <= 0.0 || self.height >= t.min_height,
            format!("height ≥ {}", t.min_height),
        );
        want(
            self.longest_freeze_s < t.max_freeze_s,
            format!("longest freeze < {} s", t.max_freeze_s),
        );
        want(
            self.video_loss < t.max_video_loss,
            format!("video loss < {} %", t.max_video_loss * 100.0),
        );
        want(
            self.audio_concealed < t.max_audio_concealed,
            format!("audio concealed < {} %", t.max_audio_concealed * 100.0),
        );
        want(
            self.rtt_ms < t.max_rtt_ms,
            format!("RTT < {} ms", t.max_rtt_ms),
        );
        assert!(
            missed.is_empty(),
            "targets missed ({}):\n{}\n{row}",
            missed.join(", "),
            CallFigures::HEADER
        );
    }
}

/// A height as `540p`, or `–` when there is none.
fn px(h: f64) -> String {
    if h.is_finite() {
        format!("{h:.0}p")
    } else {
        "–".into()
    }
}

// ---- the lab --------------------------------------------------------------------------------

/// The three namespaces; the delay shim (stopped first: fields drop in order) when shaped.
struct ShapedLab {
    shim: Option<DelayShim>,
    srv: Netns,
    net: Netns,
    pat: Netns,
}

impl ShapedLab {
    fn build(rate_kbit: Option<u32>) -> Result<Self, String> {
        let pid = std::process::id();
        let srv = Netns::create(format!("relais-shs-{pid}"))?;
        let net = Netns::create(format!("relais-shn-{pid}"))?;
        let pat = Netns::create(format!("relais-shp-{pid}"))?;
        srv.ip(&[
            "link", "add", "s1", "type", "veth", "peer", "name", "r1", "netns", &net.name,
        ])?;
        net.ip(&[
            "link", "add", "r2", "type", "veth", "peer", "name", "p1", "netns", &pat.name,
        ])?;
        srv.ip(&["addr", "add", &format!("{SRV_IP}/24"), "dev", "s1"])?;
        srv.ip(&["link", "set", "s1", "up"])?;
        srv.ip(&["route", "add", &format!("{PAT_IP}/32"), "via", NET_SRV_IP])?;
        net.ip(&["addr", "add", &format!("{NET_SRV_IP}/24"), "dev", "r1"])?;
        net.ip(&["addr", "add", &format!("{NET_PAT_IP}/24"), "dev", "r2"])?;
        net.ip(&["link", "set", "r1", "up"])?;
        net.ip(&["link", "set", "r2", "up"])?;
        pat.ip(&["addr", "add", &format!("{PAT_IP}/24"), "dev", "p1"])?;
        pat.ip(&["link", "set", "p1", "up"])?;
        pat.ip(&["route", "add", &format!("{SRV_IP}/32"), "via", NET_PAT_IP])?;
        // The way forwards; no reverse-path filter (the delayed packets come back in on dly0).
        let sysctl = |net: &Netns, extra: &str| {
            netns_support::run(net.command("sh").args([
                "-c",
                &format!(
                    "echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter && \
                     echo 0 > /proc/sys/net/ipv4/conf/default/rp_filter && \
                     echo 1 > /proc/sys/net/ipv4/ip_forward{extra}"
                ),
            ]))
        };
        sysctl(&net, "")?;
        let mut lab = Self {
            shim: None,
            srv,
            net,
            pat,
        };
        let Some(rate) = rate_kbit else {
            return Ok(lab);
        };
        // The patient's downlink: tbf on the server's side of the first veth.
        let queue_bytes = u64::from(rate) * 1000 / 8 * u64::from(TBF_QUEUE_MS) / 1000;
        netns_support::run(lab.srv.command("tc").args([
            "qdisc",
            "add",
            "dev",
            "s1",
            "root",
            "tbf",
            "rate",
            &format!("{rate}kbit"),
            "burst",
            &TBF_BURST_BYTES.to_string(),
            "limit",
            &(queue_bytes + u64::from(TBF_BURST_BYTES)).to_string(),
        ]))?;
        // The delay: what goes to the patient is routed into dly0, held DELAY by the shim,
        // and written back; coming in on dly0, table 100 sends it on to the patient.
        lab.shim = Some(DelayShim::start(&lab.net.name, "dly0", DELAY)?);
        sysctl(
            &lab.net,
            " && echo 0 > /proc/sys/net/ipv4/conf/dly0/rp_filter",
        )?;
        lab.net.ip(&["link", "set", "dly0", "up"])?;
        lab.net
            .ip(&["route", "add", &format!("{PAT_IP}/32"), "dev", "dly0"])?;
        lab.net.ip(&[
            "route",
            "add",
            &format!("{PAT_IP}/32"),
            "dev",
            "r2",
            "table",
            "100",
        ])?;
        lab.net
            .ip(&["rule", "add", "iif", "dly0", "lookup", "100", "pref", "100"])?;
        // The random loss, after the queue and the delay, on the way into the patient's veth.
        lab.net.nft(&format!(
            "table ip shaped {{\n chain down {{\n  type filter hook forward priority 0; policy accept;\n  \
             oifname \"r2\" ip daddr {PAT_IP} numgen random mod 100 < {LOSS_PERCENT} counter drop\n }}\n}}\n"
        ))?;
        Ok(lab)
    }

    /// Packets tbf dropped (its queue full), and the random loss's count.
    fn drops(&self) -> (u64, u64) {
        let out = |c: &mut Command| {
            c.output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let after = |text: &str, word: &str| -> u64 {
            text.split(|c: char| c.is_whitespace() || ",()".contains(c))
                .skip_while(|w| *w != word)
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let tc = out(self
            .srv
            .command("tc")
            .args(["-s", "qdisc", "show", "dev", "s1"]));
        let nft = out(self
            .net
            .command("nft")
            .args(["list", "chain", "ip", "shaped", "down"]));
        (after(&tc, "dropped"), after(&nft, "packets"))
    }
}

// ---- the delay shim -------------------------------------------------------------------------

/// A TUN device in a namespace whose reader writes every packet back after `delay`: netem's
/// delay, which this kernel lacks. A thread of the test, moved into the namespace (setns moves
/// only the calling thread); stopped (and the device gone with its descriptor) on drop.
struct DelayShim {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags (40 bytes in all).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl DelayShim {
    fn start(netns: &str, dev: &'static str, delay: Duration) -> Result<Self, String> {
        let path = format!("/run/netns/{netns}");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("delay-shim".into())
            .spawn(move || match open_tun(&path, dev) {
                Ok(tun) => {
                    let _ = tx.send(Ok(()));
                    relay(&tun, delay, &stopping)
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    0
                }
            })
            .map_err(|e| e.to_string())?;
        let shim = Self {
            stop,
            thread: Some(thread),
        };
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(shim),
            Ok(Err(e)) => Err(format!("the delay shim: {e}")),
            Err(_) => Err("the delay shim did not start within 5 s".into()),
        }
    }
}

impl Drop for DelayShim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open_tun(netns_path: &str, dev: &str) -> Result<File, String> {
    let ns = File::open(netns_path).map_err(|e| format!("{netns_path}: {e}"))?;
    // SAFETY: a valid namespace descriptor; CLONE_NEWNET moves this thread only.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .map_err(|e| format!("/dev/net/tun: {e}"))?;
    let mut req = IfReq {
        name: [0; 16],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..dev.len()].copy_from_slice(dev.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is laid out as.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(format!("TUNSETIFF: {}", std::io::Error::last_os_error()));
    }
    Ok(tun)
}

/// Reads packets as they come, writes each back `delay` later, until `stop`; returns how many.
fn relay(tun: &File, delay: Duration, stop: &AtomicBool) -> u64 {
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65_536];
    let mut relayed = 0;
    let mut tun_r = tun;
    let mut tun_w = tun;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, p)) = queue.pop_front() {
                let _ = tun_w.write(&p);
                relayed += 1;
            }
        }
        let wait = queue
            .front()
            .map_or(Duration::from_millis(50), |(due, _)| {
                due.saturating_duration_since(now)
            })
            .min(Duration::from_millis(50));
        let mut pfd = libc::pollfd {
            fd: tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_micros().div_ceil(1000) as libc::c_int;
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, ms) };
        while let Ok(n) = tun_r.read(&mut buf) {
            if n == 0 {
                break;
            }
            queue.push_back((Instant::now() + delay, buf[..n].to_vec()));
        }
    }
    relayed
}

// ---- the call -------------------------------------------------------------------------------

/// The doctor's camera: 1280x720, 30 fps, 3 s (chromium loops it), testsrc2 with moving
/// noise; made once, cached in the target directory.
fn doctor_clip() -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("relais-doctor-720p30-v2.y4m");
    if path.exists() {
        return path;
    }
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-t",
            "3",
            "-vf",
            "noise=alls=6:allf=t",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "yuv4mpegpipe",
        ])
        .arg(&partial)
        .stdin(Stdio::null())
        .status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "ffmpeg could not make the doctor's clip ({status:?}): run scripts/prepare/40-ffmpeg.sh"
    );
    std::fs::rename(&partial, &path).expect("the doctor's clip");
    path
}

/// The value at `path` of each sample in `samples`, side `side` (`patient` or `doctor`).
fn series(samples: &[Value], side: &str, path: &[&str]) -> Vec<f64> {
    samples
        .iter()
        .map(|s| {
            let mut cur = &s[side];
            for p in path {
                cur = &cur[*p];
            }
            cur.as_f64().unwrap_or(f64::NAN)
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mean(v: &[f64]) -> f64 {
    let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The figures of one run's samples (`tests/e2e/shaped.mjs`), over the window.
fn figures(rate_kbit: Option<u32>, r: &Value) -> CallFigures {
    let all = r["samples"].as_array().cloned().unwrap_or_default();
    let from = WINDOW_FROM.as_millis() as f64;
    let window: Vec<Value> = all
        .iter()
        .filter(|s| s["atMs"].as_f64().unwrap_or(0.0) >= from)
        .cloned()
        .collect();
    assert!(
        window.len() >= 2,
        "too few samples in the window: {}",
        serde_json::to_string(r).unwrap_or_default()
    );
    let (a, b) = (&window[0], &window[window.len() - 1]);
    let d = |side: &str, path: &[&str]| {
        let s = series(&[a.clone(), b.clone()], side, path);
        let v = s[1] - s[0];
        if v.is_finite() { v } else { 0.0 }
    };
    let secs = |side: &str| d(side, &["t"]) / 1000.0;
    let frames = series(&window, "patient", &["video", "framesDecoded"]);
    let times = series(&window, "patient", &["t"]);
    let mut longest_stall: f64 = 0.0;
    let mut run = 0.0;
    for i in 1..frames.len() {
        if frames[i] - frames[i - 1] > 0.0 {
            run = 0.0;
        } else {
            run += (times[i] - times[i - 1]) / 1000.0;
            longest_stall = longest_stall.max(run);
        }
    }
    let (lost, received) = (
        d("patient", &["video", "packetsLost"]).max(0.0),
        d("patient", &["video", "packetsReceived"]),
    );
    // The height of what was shown: only the seconds in which frames were decoded (frameHeight
    // keeps the last frame's through a freeze).
    let heights: Vec<f64> = series(&window, "patient", &["video", "frameHeight"])
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            if i > 0 && frames[i] - frames[i - 1] > 0.0 {
                h
            } else {
                f64::NAN
            }
        })
        .collect();
    let rtts = series(&window, "patient", &["rttMs"]);
    let last = |side: &str, path: &[&str]| -> f64 {
        series(&all, side, path)
            .into_iter()
            .rev()
            .find(|x| x.is_finite())
            .unwrap_or(0.0)
    };
    CallFigures {
        rate_kbit,
        fps: d("patient", &["video", "framesDecoded"]) / secs("patient"),
        height: median(heights.clone()),
        height_min: heights
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .fold(f64::NAN, f64::min),
        longest_freeze_s: num(r, &["frameGaps", "longestMs"]) / 1000.0,
        longest_stall_1s: longest_stall,
        freezes: d("patient", &["video", "freezeCount"]),
        freezes_s: d("patient", &["video", "totalFreezesDuration"]),
        video_loss: if lost + received > 0.0 {
            lost / (lost + received)
        } else {
            f64::NAN
        },
        audio_concealed: {
            let total = d("patient", &["audio", "totalSamplesReceived"]);
            if total > 0.0 {
                d("patient", &["audio", "concealedSamples"]) / total
            } else {
                f64::NAN
            }
        },
        rtt_ms: mean(&rtts),
        rtt_ms_max: rtts
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .fold(f64::NAN, f64::max),
        doctor_kbps: d("doctor", &["sentVideo", "bytesSent"]) * 8.0 / secs("doctor") / 1000.0,
        doctor_height: median(series(&window, "doctor", &["sentVideo", "frameHeight"])),
        doctor_estimate_kbps: mean(&series(&window, "doctor", &["availableOutgoingBitrate"]))
            / 1000.0,
        doctor_limitation: b["doctor"]["sentVideo"]["qualityLimitationReason"]
            .as_str()
            .unwrap_or("?")
            .to_string(),
        frames_decoded: last("patient", &["video", "framesDecoded"]),
        audio_samples: d("patient", &["audio", "totalSamplesReceived"]),
        queue_drops: 0,
        loss_drops: 0,
        wall_s: 0.0,
    }
}

/// One call between the doctor's chromium (unconstrained, the 720p clip as camera) and the
/// patient's, whose downlink is `rate_kbit` (with DELAY and LOSS_PERCENT; `None`: unshaped).
/// `None` when the browser tests cannot run here (not root: said why).
pub fn shaped_call(rate_kbit: Option<u32>) -> Option<CallFigures> {
    let web_dir = prerequisites()?;
    let clip = doctor_clip();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let scratch = tempfile::tempdir().expect("temp dir");
    let tag = rate_kbit.map_or("unshaped".to_string(), |r| format!("{r}k"));
    let artifacts = root().join(format!("tests/artifacts/browser-shaped-{tag}"));
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");

    let lab = ShapedLab::build(rate_kbit).unwrap_or_else(|e| panic!("cannot build the lab: {e}"));
    let wrapper = scratch.path().join("patient-chromium");
    let home = scratch.path().join("patient-home");
    std::fs::create_dir_all(&home).expect("patient home");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport HOME={}\nexec ip netns exec {} {CHROMIUM} \"$@\"\n",
            home.display(),
            lab.pat.name
        ),
    )
    .expect("wrapper");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let settings = [
        // The doctor's page, over loopback in the server's namespace.
        "http.addr=127.0.0.1:3000".to_string(),
        format!("https.addr=0.0.0.0:{SHAPED_HTTPS_PORT}"),
        format!("public_base_url=https://{SRV_IP}:{SHAPED_HTTPS_PORT}"),
        format!("media.udp_addr=0.0.0.0:{SHAPED_MEDIA_PORT}"),
        format!("media.public_ips={SRV_IP}"),
        // The patient signs in on the page from another machine: a lab set-up.
        "auth.dev_sign_in=network".into(),
        // About the media, not admission: no waiting room.
        "sessions.waiting_room=false".into(),
    ];
    let bin = std::env::var_os("RELAIS_SHAPED_SERVER").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_relais")),
        PathBuf::from,
    );
    let mut server = start_server_bin(&bin, &lab.srv, scratch.path(), &web_dir, &settings)
        .unwrap_or_else(|e| panic!("{e}"));
    let env = [
        ("DOCTOR_BASE", "http://127.0.0.1:3000".to_string()),
        ("PATIENT_CHROMIUM", wrapper.display().to_string()),
        ("DOCTOR_VIDEO_FILE", clip.display().to_string()),
        ("CALL_MS", CALL.as_millis().to_string()),
        ("WINDOW_FROM_MS", WINDOW_FROM.as_millis().to_string()),
        ("ARTIFACTS", artifacts.display().to_string()),
        ("E2E_TIMEOUT_MS", "200000".to_string()),
    ];
    let outcome = run_script(&lab.srv, "shaped.mjs", &env, scratch.path(), &mut || Ok(()));
    let (queue_drops, loss_drops) = lab.drops();
    server.drain();
    let _ = std::fs::write(artifacts.join("server.log"), server.lines.join("\n"));
    drop(server);
    drop(lab);

    let (r, stderr) = outcome.unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::write(
        artifacts.join("result.json"),
        serde_json::to_string_pretty(&r).unwrap_or_default(),
    );
    assert_eq!(
        r["ok"],
        true,
        "the browser script failed at step {}: {}\n{stderr}\n(screenshots, browser console, \
         server log and the samples in {})",
        r["step"],
        r["error"],
        artifacts.display()
    );
    let mut f = figures(rate_kbit, &r);
    f.queue_drops = queue_drops;
    f.loss_drops = loss_drops;
    f.wall_s = started.elapsed().as_secs_f64();
    Some(f)
}

/// Issue 17's row "1 Mbit/s + 40 ms + 1 %": one call, its figures printed; the issue's
/// targets asserted with `RELAIS_SHAPED_TARGETS=1`, otherwise that the call is up.
#[test]
fn a_call_on_a_1mbit_downlink_in_chromium() {
    let Some(f) = shaped_call(Some(1000)) else {
        return;
    };
    println!("{}\n{}", CallFigures::HEADER, f.row());
    f.check();
}

/// The reference: the same call, the patient's downlink unshaped.
#[test]
fn a_call_on_an_unshaped_downlink_in_chromium() {
    let Some(f) = shaped_call(None) else {
        return;
    };
    println!("{}\n{}", CallFigures::HEADER, f.row());
    f.check();
}

/// The whole table, for the issue's note: `RELAIS_SHAPED_RATES=unshaped,1000,400` (kbit/s),
/// each rate `RELAIS_SHAPED_RUNS` times (1). Skipped when the variable is not set.
#[test]
fn shaped_calls_table_in_chromium() {
    let Ok(rates) = std::env::var("RELAIS_SHAPED_RATES") else {
        println!("skipped: set RELAIS_SHAPED_RATES=unshaped,1000,400 (kbit/s) to run the table");
        return;
    };
    let rates: Vec<Option<u32>> = rates
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| match r {
            "unshaped" | "none" => None,
            n => Some(
                n.parse()
                    .unwrap_or_else(|_| panic!("RELAIS_SHAPED_RATES: {n} is not kbit/s")),
            ),
        })
        .collect();
    let runs: usize = std::env::var("RELAIS_SHAPED_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let mut rows = Vec::new();
    for rate in rates {
        for _ in 0..runs {
            let Some(f) = shaped_call(rate) else {
                return;
            };
            println!("{}", f.row());
            rows.push(f);
        }
    }
    println!("\n{}", CallFigures::HEADER);
    for f in &rows {
        println!("{}", f.row());
    }
    for f in &rows {
        f.check();
    }
}
