//! The m-lines of a description as relais needs to see them before (and besides) the WebRTC
//! stack: what each one is, whether it is rejected, which way media flows, which codecs it
//! lists, and which transport the writer put it on. Plain text parsing, no allocation per
//! attribute beyond what it returns, tolerant of attribute order and of what it does not know.

/// Which way media flows on an m-line, as its writer says it (`a=sendrecv` when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The writer sends media on this m-line.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// The writer accepts media on this m-line.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    fn parse(attr: &str) -> Option<Self> {
        match attr {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// One `a=rtpmap` (with its `a=fmtp`) of an m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub payload_type: u8,
    /// `kind/name`, lower case (`video/vp8`, `audio/opus`).
    pub mime: String,
    pub fmtp: String,
}

/// One m-line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// `audio`, `video`, `application`, …
    pub kind: String,
    pub port: u16,
    pub mid: Option<String>,
    pub direction: Option<Direction>,
    /// `a=bundle-only`: the writer wants this m-line only inside a BUNDLE group.
    pub bundle_only: bool,
    pub ice_ufrag: Option<String>,
    /// `ip port` of each `a=candidate`, in order: with the port of the m-line, what tells the
    /// writer's transports apart.
    pub candidates: Vec<String>,
    pub formats: Vec<Format>,
    /// `a=rid` lines (simulcast layers).
    pub rids: usize,
    /// The media stream the writer puts this m-line's track in (`a=msid:<stream> <track>`, or
    /// the `msid:` of an `a=ssrc` line); `None` for `-` or none.
    pub stream: Option<String>,
}

impl Section {
    /// Rejected (port 0, RFC 3264 §6) unless kept only for BUNDLE.
    pub fn rejected(&self) -> bool {
        self.port == 0 && !self.bundle_only
    }

    pub fn direction(&self) -> Direction {
        self.direction.unwrap_or(Direction::SendRecv)
    }

    pub fn is_media(&self) -> bool {
        self.kind == "audio" || self.kind == "video"
    }

    /// The writer's transport for this m-line, as far as the description shows it: its port
    /// and candidates (a writer that puts several m-lines on one transport repeats them).
    pub fn transport_key(&self) -> (u16, &[String]) {
        (self.port, &self.candidates)
    }

    pub fn lists(&self, mime: &str) -> bool {
        self.formats
            .iter()
            .any(|f| f.mime.eq_ignore_ascii_case(mime))
    }
}

/// A description's m-lines and its BUNDLE groups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sections {
    pub media: Vec<Section>,
    /// Each `a=group:BUNDLE`, its mids in order (the first is the tagged one).
    pub bundles: Vec<Vec<String>>,
}

impl Sections {
    pub fn parse(sdp: &str) -> Self {
        let mut out = Sections::default();
        let mut session_direction = None;
        let mut session_ufrag: Option<String> = None;
        for line in sdp.lines().map(str::trim) {
            if let Some(m) = line.strip_prefix("m=") {
                let mut parts = m.split_whitespace();
                let kind = parts.next().unwrap_or_default().to_ascii_lowercase();
                let port = parts
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                out.media.push(Section {
                    kind,
                    port,
                    ..Section::default()
                });
                continue;
            }
            let Some(attr) = line.strip_prefix("a=") else {
                continue;
            };
            let (name, value) = match attr.split_once(':') {
                Some((n, v)) => (n, v.trim()),
                None => (attr, ""),
            };
            let Some(section) = out.media.last_mut() else {
                match name {
                    "group" => {
                        let mut items = value.split_whitespace();
                        if items
                            .next()
                            .is_some_and(|s| s.eq_ignore_ascii_case("BUNDLE"))
                        {
                            out.bundles.push(items.map(str::to_string).collect());
                        }
                    }
                    "ice-ufrag" => session_ufrag = Some(value.to_string()),
                    _ => session_direction = session_direction.or(Direction::parse(name)),
                }
                continue;
            };
            match name {
                "mid" => section.mid = Some(value.to_string()),
                "bundle-only" => section.bundle_only = true,
                "ice-ufrag" => section.ice_ufrag = Some(value.to_string()),
                "rid" => section.rids += 1,
                "msid" => {
                    if let Some(id) = value.split_whitespace().next()
                        && id != "-"
                    {
                        section.stream = Some(id.to_string());
                    }
                }
                "ssrc" if section.stream.is_none() => {
                    // `a=ssrc:<n> msid:<stream> <track>` (writers that put msid on ssrc lines).
                    if let Some(id) = value
                        .split_once(' ')
                        .and_then(|(_, rest)| rest.strip_prefix("msid:"))
                        .and_then(|rest| rest.split_whitespace().next())
                        && id != "-"
                    {
                        section.stream = Some(id.to_string());
                    }
                }
                "candidate" => {
                    // foundation component transport priority ip port typ …
                    let f: Vec<&str> = value.split_whitespace().collect();
                    if let (Some(ip), Some(port)) = (f.get(4), f.get(5)) {
                        section.candidates.push(format!("{ip} {port}"));
                    }
                }
                "rtpmap" => {
                    let Some((pt, codec)) = value.split_once(' ') else {
                        continue;
                    };
                    let Ok(payload_type) = pt.parse() else {
                        continue;
                    };
                    let name = codec.split('/').next().unwrap_or_default();
                    section.formats.push(Format {
                        payload_type,
                        mime: format!("{}/{}", section.kind, name).to_ascii_lowercase(),
                        fmtp: String::new(),
                    });
                }
                "fmtp" => {
                    let Some((pt, params)) = value.split_once(' ') else {
                        continue;
                    };
                    let Ok(pt) = pt.parse::<u8>() else { continue };
                    if let Some(f) = section.formats.iter_mut().find(|f| f.payload_type == pt) {
                        f.fmtp = params.trim().to_string();
                    }
                }
                _ => {
                    if let Some(d) = Direction::parse(name) {
                        section.direction = Some(d);
                    }
                }
            }
        }
        for s in &mut out.media {
            if s.direction.is_none() {
                s.direction = session_direction;
            }
            if s.ice_ufrag.is_none() {
                s.ice_ufrag.clone_from(&session_ufrag);
            }
        }
        out
    }

    pub fn by_mid(&self, mid: &str) -> Option<&Section> {
        self.media.iter().find(|s| s.mid.as_deref() == Some(mid))
    }

    /// The first BUNDLE group (the one every client and relais use).
    pub fn bundle(&self) -> Option<&[String]> {
        self.bundles.first().map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_relais_needs() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE a v\r\n\
            a=ice-ufrag:sess\r\na=sendonly\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 109 0\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:109 opus/48000/2\r\n\
            a=fmtp:109 maxplaybackrate=48000;stereo=1\r\na=rtpmap:0 PCMU/8000\r\na=mid:a\r\n\
            a=msid:cam mic\r\n\
            a=candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 120\r\na=bundle-only\r\na=recvonly\r\na=mid:v\r\n\
            a=ssrc:5 msid:screen s1\r\n\
            a=rtpmap:120 VP8/90000\r\na=rid:h send\r\na=rid:l send\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 120\r\na=mid:x\r\na=ice-ufrag:own\r\n";
        let s = Sections::parse(sdp);
        assert_eq!(s.bundles, vec![vec!["a".to_string(), "v".to_string()]]);
        assert_eq!(s.media.len(), 3);
        let a = &s.media[0];
        assert_eq!(a.kind, "audio");
        assert_eq!(a.port, 9);
        assert_eq!(
            a.direction(),
            Direction::SendOnly,
            "session-level direction"
        );
        assert_eq!(a.ice_ufrag.as_deref(), Some("sess"));
        assert_eq!(a.candidates, vec!["192.0.2.1 5000".to_string()]);
        assert_eq!(a.formats[0].mime, "audio/opus");
        assert_eq!(a.formats[0].fmtp, "maxplaybackrate=48000;stereo=1");
        assert_eq!(a.formats[1].mime, "audio/pcmu");
        let v = &s.media[1];
        assert!(!v.rejected(), "bundle-only is not a rejection");
        assert_eq!(v.direction(), Direction::RecvOnly);
        assert_eq!(v.rids, 2);
        assert!(v.lists("video/VP8"));
        assert!(s.media[2].rejected());
        assert_eq!(s.media[2].ice_ufrag.as_deref(), Some("own"));
        assert_eq!(s.by_mid("x").map(|x| x.port), Some(0));
        assert_eq!(a.stream.as_deref(), Some("cam"));
        assert_eq!(v.stream.as_deref(), Some("screen"), "from the ssrc line");
        assert_eq!(s.media[2].stream, None);
    }

    #[test]
    fn survives_garbage() {
        for text in [
            "",
            "a=group:BUNDLE",
            "m=",
            "m=video notaport\r\na=rtpmap:x y\r\na=fmtp:1000 z\r\na=candidate:short",
            "a=mid:before-any-m-line\r\nm=audio 70000 x",
        ] {
            let s = Sections::parse(text);
            for m in &s.media {
                assert!(m.formats.is_empty());
            }
        }
    }
}
