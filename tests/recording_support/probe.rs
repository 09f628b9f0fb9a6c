//! ffprobe/ffmpeg as the judge of a recording (Debian's ffmpeg package).

use std::path::Path;
use std::process::Command;

/// Fails the test with what to do when ffmpeg is not installed.
pub fn require_ffmpeg() {
    for tool in ["ffprobe", "ffmpeg"] {
        let found = Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} not found: the recording tests need Debian's ffmpeg package; \
             run scripts/prepare/40-ffmpeg.sh as root (apt-get install ffmpeg)"
        );
    }
}

#[derive(Debug)]
pub struct Stream {
    pub codec_type: String,
    pub codec_name: String,
    pub start_time: f64,
    pub packets: u64,
    /// Timestamp of the last packet (s).
    pub last_pts: f64,
}

#[derive(Debug)]
pub struct Probe {
    pub format_name: String,
    pub duration: f64,
    pub streams: Vec<Stream>,
}

impl Probe {
    pub fn stream(&self, kind: &str) -> &Stream {
        self.streams
            .iter()
            .find(|s| s.codec_type == kind)
            .unwrap_or_else(|| panic!("no {kind} stream in {self:#?}"))
    }
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_f64())
        .unwrap_or(f64::NAN)
}

pub fn probe(path: &Path) -> Probe {
    require_ffmpeg();
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-show_entries"])
        .arg("format=format_name,duration:stream=index,codec_type,codec_name,start_time,nb_read_packets")
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let mut streams = Vec::new();
    for s in v["streams"].as_array().cloned().unwrap_or_default() {
        let index = s["index"].as_u64().unwrap_or(0);
        streams.push(Stream {
            codec_type: s["codec_type"].as_str().unwrap_or("").into(),
            codec_name: s["codec_name"].as_str().unwrap_or("").into(),
            start_time: num(&s["start_time"]),
            packets: num(&s["nb_read_packets"]) as u64,
            last_pts: last_pts(path, index),
        });
    }
    Probe {
        format_name: v["format"]["format_name"].as_str().unwrap_or("").into(),
        duration: num(&v["format"]["duration"]),
        streams,
    }
}

fn last_pts(path: &Path, index: u64) -> f64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams"])
        .arg(index.to_string())
        .args(["-show_entries", "packet=pts_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .fold(f64::NAN, f64::max)
}

/// What `ffmpeg -v error -i file -f null -` prints: empty when every packet decodes.
pub fn decode_errors(path: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let mut s = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        s.push_str(&format!("\n(ffmpeg exited {})", out.status));
    }
    s
}
