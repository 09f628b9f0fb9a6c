//! Real encoded media for the recording tests: ffmpeg encodes a test pattern and a tone
//! once per test run (cached under the target dir), and small readers take the frames out
//! of IVF, Annex B and Ogg.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::probe::require_ffmpeg;

/// A video frame as the encoder produced it.
#[derive(Clone)]
pub struct VideoFrame {
    pub keyframe: bool,
    /// VP8/VP9: the frame. H264: the access unit's NAL units (no start codes, no AUD).
    pub nals: Vec<Vec<u8>>,
}

fn cache_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("recording-media");
    std::fs::create_dir_all(&dir).expect("create media cache dir");
    dir
}

/// Runs ffmpeg into `name` in the cache unless it is there already. One encoding at a time
/// in a process (many agents of a test ask for the same file at once on a cold cache), and
/// a temporary file per process, renamed into place: other test processes see a whole file
/// or none.
fn encode(name: &str, args: &[&str]) -> PathBuf {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    require_ffmpeg();
    let out = cache_dir().join(name);
    let _guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if out.exists() {
        return out;
    }
    let tmp = cache_dir().join(format!("{name}.{}.tmp", std::process::id()));
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(&tmp)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg failed encoding {name}");
    std::fs::rename(&tmp, &out).expect("rename encoded media");
    out
}

pub const FPS: u32 = 30;

/// The camera's size; [`sized`] makes others (a shared screen, to tell tracks apart).
pub const SIZE: (u32, u32) = (320, 240);

fn video_source(seconds: u32, (w, h): (u32, u32)) -> String {
    format!("testsrc=size={w}x{h}:rate={FPS}:duration={seconds}")
}

fn size_tag((w, h): (u32, u32)) -> String {
    if (w, h) == SIZE {
        String::new()
    } else {
        format!("-{w}x{h}")
    }
}

/// Video of `codec` (VP8, VP9 or H264) at `size`.
pub fn sized(
    codec: relais::codec::Codec,
    seconds: u32,
    gop: u32,
    size: (u32, u32),
) -> Vec<VideoFrame> {
    use relais::codec::Codec;
    match codec {
        Codec::Vp9 => vp9_at(seconds, gop, size),
        Codec::H264 => h264_at(seconds, gop, size),
        _ => vp8_at(seconds, gop, size),
    }
}

/// VP8 as a browser sends it: realtime, no alt-ref (no hidden frames), one keyframe per
/// `gop` frames.
pub fn vp8(seconds: u32, gop: u32) -> Vec<VideoFrame> {
    vp8_at(seconds, gop, SIZE)
}

fn vp8_at(seconds: u32, gop: u32, size: (u32, u32)) -> Vec<VideoFrame> {
    let g = gop.to_string();
    let p = encode(
        &format!("vp8-{seconds}s-g{gop}{}.ivf", size_tag(size)),
        &[
            "-f",
            "lavfi",
            "-i",
            &video_source(seconds, size),
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            "400k",
            "-g",
            &g,
            "-keyint_min",
            &g,
            "-auto-alt-ref",
            "0",
            "-lag-in-frames",
            "0",
            "-f",
            "ivf",
        ],
    );
    read_ivf(&p, |f| f.first().is_some_and(|b| b & 1 == 0))
}

pub fn vp9(seconds: u32, gop: u32) -> Vec<VideoFrame> {
    vp9_at(seconds, gop, SIZE)
}

fn vp9_at(seconds: u32, gop: u32, size: (u32, u32)) -> Vec<VideoFrame> {
    let g = gop.to_string();
    let p = encode(
        &format!("vp9-{seconds}s-g{gop}{}.ivf", size_tag(size)),
        &[
            "-f",
            "lavfi",
            "-i",
            &video_source(seconds, size),
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            "400k",
            "-g",
            &g,
            "-keyint_min",
            &g,
            "-auto-alt-ref",
            "0",
            "-lag-in-frames",
            "0",
            "-row-mt",
            "1",
            "-f",
            "ivf",
        ],
    );
    // Uncompressed header: frame_marker(2) profile(2) show_existing(1) frame_type(1).
    read_ivf(&p, |f| {
        f.first().is_some_and(|b| b & 0x0C == 0 && b & 0x04 == 0)
    })
}

/// H264 constrained baseline, no B-frames, SPS/PPS before every IDR, AUDs to split access
/// units (dropped afterwards, like browsers which send none).
pub fn h264(seconds: u32, gop: u32) -> Vec<VideoFrame> {
    h264_at(seconds, gop, SIZE)
}

fn h264_at(seconds: u32, gop: u32, size: (u32, u32)) -> Vec<VideoFrame> {
    let g = gop.to_string();
    let p = encode(
        &format!("h264-{seconds}s-g{gop}{}.h264", size_tag(size)),
        &[
            "-f",
            "lavfi",
            "-i",
            &video_source(seconds, size),
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-profile:v",
            "baseline",
            "-b:v",
            "400k",
            "-g",
            &g,
            "-keyint_min",
            &g,
            "-bf",
            "0",
            "-x264-params",
            "aud=1:repeat-headers=1",
            "-f",
            "h264",
        ],
    );
    let data = std::fs::read(p).expect("read h264");
    let mut frames: Vec<VideoFrame> = Vec::new();
    for nal in split_annex_b(&data) {
        let kind = nal[0] & 0x1F;
        if kind == 9 {
            frames.push(VideoFrame {
                keyframe: false,
                nals: Vec::new(),
            });
            continue;
        }
        let Some(f) = frames.last_mut() else { continue };
        f.keyframe |= kind == 5;
        f.nals.push(nal.to_vec());
    }
    frames.retain(|f| !f.nals.is_empty());
    frames
}

/// Opus packets of 20 ms (mono, as browsers encode by default).
pub fn opus(seconds: u32) -> Vec<Vec<u8>> {
    let p = encode(
        &format!("opus-{seconds}s.ogg"),
        &[
            "-f",
            "lavfi",
            "-i",
            &format!("sine=frequency=440:sample_rate=48000:duration={seconds}"),
            "-c:a",
            "libopus",
            "-b:a",
            "32k",
            "-frame_duration",
            "20",
            "-application",
            "voip",
            "-ac",
            "1",
            "-f",
            "ogg",
        ],
    );
    let data = std::fs::read(p).expect("read ogg");
    // Skip OpusHead and OpusTags.
    read_ogg(&data).into_iter().skip(2).collect()
}

fn read_ivf(path: &Path, keyframe: impl Fn(&[u8]) -> bool) -> Vec<VideoFrame> {
    let data = std::fs::read(path).expect("read ivf");
    assert_eq!(&data[..4], b"DKIF", "not an IVF file");
    let header_len = u16::from_le_bytes([data[6], data[7]]) as usize;
    let mut at = header_len;
    let mut frames = Vec::new();
    while at + 12 <= data.len() {
        let size = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        let frame = &data[at + 12..at + 12 + size];
        frames.push(VideoFrame {
            keyframe: keyframe(frame),
            nals: vec![frame.to_vec()],
        });
        at += 12 + size;
    }
    frames
}

fn split_annex_b(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
        // A 4-byte start code leaves a zero behind the previous unit.
        while end > s && data[end - 1] == 0 && k + 1 < starts.len() {
            end -= 1;
        }
        if end > s {
            out.push(&data[s..end]);
        }
    }
    out
}

fn read_ogg(data: &[u8]) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut current = Vec::new();
    let mut at = 0;
    while at + 27 <= data.len() {
        assert_eq!(&data[at..at + 4], b"OggS", "bad Ogg page");
        let nsegs = data[at + 26] as usize;
        let table = &data[at + 27..at + 27 + nsegs];
        let mut body = at + 27 + nsegs;
        for &len in table {
            current.extend_from_slice(&data[body..body + len as usize]);
            body += len as usize;
            if len < 255 {
                packets.push(std::mem::take(&mut current));
            }
        }
        at = body;
    }
    packets
}
