//! Depacketizers: RTP payloads (in sequence order, with losses marked) back to whole
//! encoded frames, as a WebM/Matroska block holds them.
//!
//! Invariants:
//! - a frame is emitted only when every packet from its first to its last arrived (no loss
//!   was reported inside it), it began where the codec says a frame begins, and it ended
//!   (marker bit, or the next packet in sequence carries a new timestamp); anything else is
//!   dropped whole and reported as [`Output::Dropped`], never written half;
//! - malformed payloads (garbage RTP) break the frame they are in; nothing panics;
//! - buffers are reused from frame to frame (no allocation per packet once warmed up).

pub mod h264;
pub mod opus;
pub mod vp8;
pub mod vp9;

use super::jitter::BufferedPacket;
use crate::codec::Codec;

/// An assembled frame, borrowed from the depacketizer until the next call.
#[derive(Debug)]
pub struct Frame<'a> {
    pub timestamp: u32,
    pub keyframe: bool,
    pub data: &'a [u8],
}

#[derive(Debug)]
pub enum Output<'a> {
    Frame(Frame<'a>),
    /// A frame was lost or incomplete. `discardable`: nothing refers to it (a VP8 frame
    /// with N=1, an H264 access unit with nal_ref_idc 0), so later frames still decode.
    Dropped {
        discardable: bool,
    },
}

/// What a codec's payload parser tells about one packet.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PacketInfo {
    /// The packet carries the beginning of a frame (picture).
    pub starts_frame: bool,
    /// The frame is known not to be a reference (VP8 N bit, H264 nal_ref_idc = 0).
    pub discardable: bool,
}

/// Malformed payload or an unsupported packetization: breaks the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// Codec-specific half of a depacketizer.
pub(crate) trait PayloadFormat {
    /// Parses `payload`; when `append` is true, appends its media bytes to `frame`.
    fn parse(
        &mut self,
        payload: &[u8],
        frame: &mut Vec<u8>,
        first_of_frame: bool,
    ) -> Result<PacketInfo, Malformed>;

    /// The frame in `frame` ended: checks it is whole as far as the codec can tell, finishes
    /// it (e.g. a VP9 superframe index) and says whether it is a keyframe.
    fn finish(&mut self, frame: &mut Vec<u8>) -> Result<bool, Malformed>;

    /// Forgets the partial state of the current frame.
    fn abort(&mut self);
}

/// Codec-independent frame assembly: timestamps, sequence continuity, marker bits.
pub(crate) struct Assembler<F> {
    pub format: F,
    buf: Vec<u8>,
    active: bool,
    intact: bool,
    discardable: bool,
    ts: u32,
    last_seq: u64,
    /// The last packet seen ended a frame (marker), and nothing was lost since.
    clean_boundary: bool,
}

/// Frames larger than this are dropped (and their memory not kept): far above any WebRTC
/// frame, it bounds what garbage can make us hold.
pub const MAX_FRAME_BYTES: usize = 8 << 20;

impl<F: PayloadFormat> Assembler<F> {
    pub fn new(format: F) -> Self {
        Assembler {
            format,
            buf: Vec::with_capacity(4096),
            active: false,
            intact: false,
            discardable: false,
            ts: 0,
            last_seq: 0,
            clean_boundary: false,
        }
    }

    /// Feeds the next packet in sequence order; `emit` sees every frame finished or dropped.
    pub fn push(&mut self, p: &BufferedPacket, emit: &mut dyn FnMut(Output<'_>)) {
        if self.active && p.timestamp != self.ts {
            // The current frame's marker never came. It is whole only if this packet
            // follows it directly.
            let contiguous = p.seq == self.last_seq + 1;
            self.end_frame(contiguous, emit);
        }
        let first = !self.active;
        if first {
            self.active = true;
            self.intact = true;
            self.discardable = false;
            self.ts = p.timestamp;
            self.buf.clear();
        } else if p.seq != self.last_seq + 1 {
            self.intact = false;
        }
        let boundary = self.clean_boundary;
        self.last_seq = p.seq;
        match self.format.parse(&p.payload, &mut self.buf, first) {
            Ok(info) => {
                if first {
                    self.discardable = info.discardable;
                    if !info.starts_frame && !boundary {
                        self.intact = false;
                    }
                }
            }
            Err(Malformed) => self.intact = false,
        }
        if self.buf.len() > MAX_FRAME_BYTES {
            self.intact = false;
            self.buf = Vec::with_capacity(4096);
        }
        if p.marker {
            self.end_frame(true, emit);
            self.clean_boundary = true;
        } else {
            self.clean_boundary = false;
        }
    }

    /// Packets were given up on before the next one.
    pub fn lost(&mut self, emit: &mut dyn FnMut(Output<'_>)) {
        self.clean_boundary = false;
        if self.active {
            self.intact = false;
        } else {
            // A whole frame may have been lost between two others.
            emit(Output::Dropped { discardable: false });
        }
    }

    /// The end of the stream: an unfinished frame is dropped.
    pub fn flush(&mut self, emit: &mut dyn FnMut(Output<'_>)) {
        if self.active {
            self.end_frame(false, emit);
        }
    }

    /// Starts over (a new source): the partial frame is forgotten without a report.
    pub fn reset(&mut self) {
        self.active = false;
        self.clean_boundary = false;
        self.buf.clear();
        self.format.abort();
    }

    fn end_frame(&mut self, complete: bool, emit: &mut dyn FnMut(Output<'_>)) {
        self.active = false;
        let keyframe = if complete && self.intact && !self.buf.is_empty() {
            self.format.finish(&mut self.buf)
        } else {
            Err(Malformed)
        };
        match keyframe {
            Ok(keyframe) => emit(Output::Frame(Frame {
                timestamp: self.ts,
                keyframe,
                data: &self.buf,
            })),
            Err(Malformed) => {
                self.format.abort();
                emit(Output::Dropped {
                    discardable: self.discardable,
                })
            }
        }
    }
}

/// One depacketizer per source, dispatching on the codec.
pub struct Depacketizer(Inner);

enum Inner {
    Vp8(Assembler<vp8::Vp8>),
    Vp9(Assembler<vp9::Vp9>),
    H264(Assembler<h264::H264>),
    Opus(opus::Opus),
}

use Inner as D;

impl Depacketizer {
    /// None for codecs the recorder cannot write.
    pub fn new(codec: Codec) -> Option<Self> {
        Some(Depacketizer(match codec {
            Codec::Vp8 => D::Vp8(Assembler::new(vp8::Vp8::default())),
            Codec::Vp9 => D::Vp9(Assembler::new(vp9::Vp9::default())),
            Codec::H264 => D::H264(Assembler::new(h264::H264::default())),
            Codec::Opus => D::Opus(opus::Opus),
            Codec::Other => return None,
        }))
    }

    pub fn push(&mut self, p: &BufferedPacket, emit: &mut dyn FnMut(Output<'_>)) {
        match &mut self.0 {
            D::Vp8(a) => a.push(p, emit),
            D::Vp9(a) => a.push(p, emit),
            D::H264(a) => a.push(p, emit),
            D::Opus(o) => o.push(p, emit),
        }
    }

    pub fn lost(&mut self, emit: &mut dyn FnMut(Output<'_>)) {
        match &mut self.0 {
            D::Vp8(a) => a.lost(emit),
            D::Vp9(a) => a.lost(emit),
            D::H264(a) => a.lost(emit),
            D::Opus(_) => {}
        }
    }

    pub fn flush(&mut self, emit: &mut dyn FnMut(Output<'_>)) {
        match &mut self.0 {
            D::Vp8(a) => a.flush(emit),
            D::Vp9(a) => a.flush(emit),
            D::H264(a) => a.flush(emit),
            D::Opus(_) => {}
        }
    }

    pub fn reset(&mut self) {
        match &mut self.0 {
            D::Vp8(a) => a.reset(),
            D::Vp9(a) => a.reset(),
            D::H264(a) => a.reset(),
            D::Opus(_) => {}
        }
    }

    /// Coded size of the last keyframe, when the bitstream says.
    pub fn dimensions(&self) -> Option<(u16, u16)> {
        match &self.0 {
            D::Vp8(a) => a.format.dimensions,
            D::Vp9(a) => a.format.dimensions,
            D::H264(a) => a.format.dimensions,
            D::Opus(_) => None,
        }
    }

    /// H264 only: the avcC record built from the parameter sets seen, once both are known.
    pub fn avcc(&self) -> Option<Vec<u8>> {
        match &self.0 {
            D::H264(a) => a.format.avcc(),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use bytes::Bytes;
    use std::time::Instant;

    pub fn pkt(seq: u64, ts: u32, marker: bool, payload: &[u8]) -> BufferedPacket {
        BufferedPacket {
            seq,
            timestamp: ts,
            marker,
            payload: Bytes::copy_from_slice(payload),
            arrival: base(),
        }
    }

    pub fn base() -> Instant {
        static B: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *B.get_or_init(Instant::now)
    }

    /// A frame as tests compare it: (timestamp, keyframe, bytes).
    pub type TestFrame = (u32, bool, Vec<u8>);

    /// Runs packets (None = a loss) and collects the frames and the drops (discardable).
    pub fn run(
        d: &mut Depacketizer,
        packets: &[Option<BufferedPacket>],
    ) -> (Vec<TestFrame>, Vec<bool>) {
        let mut frames = Vec::new();
        let mut drops = Vec::new();
        let mut emit = |o: Output<'_>| match o {
            Output::Frame(f) => frames.push((f.timestamp, f.keyframe, f.data.to_vec())),
            Output::Dropped { discardable } => drops.push(discardable),
        };
        for p in packets {
            match p {
                Some(p) => d.push(p, &mut emit),
                None => d.lost(&mut emit),
            }
        }
        d.flush(&mut emit);
        (frames, drops)
    }
}
