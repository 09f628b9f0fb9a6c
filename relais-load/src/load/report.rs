//! The media run's report: the figures (JSON), the summary table, the comparison of targets
//! measured in the same run, and an SVG plot of throughput and latency over time.

use std::fmt::Write as _;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    pub t_s: f64,
    /// Packets the server forwarded per second (its counter; else what peers received).
    pub forwarded_pps: f64,
    pub received_pps: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MediaReport {
    /// `relais`, `bare-relay` or `janus`.
    pub target: String,
    pub transport: String,
    pub sessions: usize,
    pub sessions_failed: usize,
    pub participants: usize,
    pub peers: usize,
    pub peers_connected: usize,
    pub join_ms_p50: f64,
    pub join_ms_p99: f64,
    pub first_packet_ms_p50: f64,
    pub first_packet_ms_p99: f64,
    pub window_s: f64,
    pub sent_pps: f64,
    pub forwarded_pps: f64,
    pub received_pps: f64,
    pub loss_pct: f64,
    pub duplicates: u64,
    pub reordered: u64,
    pub corrupt: u64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    pub jitter_ms: f64,
    pub nacks: f64,
    pub plis: f64,
    pub plis_received_by_peers: u64,
    pub server_dropped: f64,
    pub server_cpu_us_per_forwarded_packet: Option<f64>,
    pub server_cpu_cores: Option<f64>,
    pub server_rss_kib: Option<u64>,
    pub server_rss_kib_per_peer: Option<f64>,
    /// What the server wrote to storage during the window (recordings above all), MB/s.
    pub server_disk_write_mb_s: Option<f64>,
    /// The load tool's own CPU during the window (same-machine measurements).
    pub tool_cpu_cores: Option<f64>,
    pub tool_send_drops: u64,
    /// Everything that went wrong, by message, with counts.
    pub failures: Vec<(String, u64)>,
    pub server_unreachable_samples: u64,
    /// Rejoins after a loss (the server restarted): see [`RejoinFigures`].
    pub rejoin: RejoinFigures,
    pub timeline: Vec<TimelinePoint>,
}

/// What participants lost and got back during the run (all zero in a run without a loss).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RejoinFigures {
    /// Outages that ended with media back.
    pub rejoins: u64,
    /// Participants that came back at least once.
    pub participants_rejoined: u64,
    /// Connections rebuilt (a rejoin may take several).
    pub attempts: u64,
    /// Participants whose media was lost and not back at the end of the run.
    pub unrecovered: u64,
    /// Time to media back (loss → first media packet received after the rejoin), ms:
    /// median and max over outages (one per participant and restart).
    pub media_back_ms_p50: Option<f64>,
    pub media_back_ms_max: Option<f64>,
}

impl RejoinFigures {
    /// From per-outage times to media back, ms.
    pub fn new(
        rejoins: u64,
        participants_rejoined: u64,
        attempts: u64,
        unrecovered: u64,
        media_back_ms: &[f64],
    ) -> Self {
        let mut sorted = media_back_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        // The lower median (a time that was measured, not a mean of two).
        let p50 = (!sorted.is_empty()).then(|| sorted[(sorted.len() - 1) / 2]);
        Self {
            rejoins,
            participants_rejoined,
            attempts,
            unrecovered,
            media_back_ms_p50: p50,
            media_back_ms_max: sorted.last().copied(),
        }
    }

    /// Whether anything was lost (the report then shows these figures).
    pub fn any(&self) -> bool {
        self.attempts > 0 || self.unrecovered > 0 || self.rejoins > 0
    }
}

/// Several targets measured in one invocation, and how relais compares.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub date: String,
    pub command: String,
    pub runs: Vec<MediaReport>,
    /// relais's CPU per forwarded packet divided by the bare relay's.
    pub relais_vs_bare_relay: Option<f64>,
    /// relais's CPU per forwarded packet divided by Janus's.
    pub relais_vs_janus: Option<f64>,
}

impl Comparison {
    pub fn new(command: String, runs: Vec<MediaReport>) -> Self {
        let cpu = |t: &str| {
            runs.iter()
                .find(|r| r.target == t)
                .and_then(|r| r.server_cpu_us_per_forwarded_packet)
        };
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Self {
            date,
            command,
            relais_vs_bare_relay: ratio(cpu("relais"), cpu("bare-relay")),
            relais_vs_janus: ratio(cpu("relais"), cpu("janus")),
            runs,
        }
    }
}

fn opt(v: Option<f64>, unit: &str, digits: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.digits$}{unit}"))
}

/// The summary table, one column per target.
pub fn table(runs: &[MediaReport]) -> String {
    type Row = (&'static str, Box<dyn Fn(&MediaReport) -> String>);
    let rows: Vec<Row> = vec![
        ("transport", Box::new(|r| r.transport.clone())),
        (
            "sessions (failed)",
            Box::new(|r| format!("{} ({})", r.sessions, r.sessions_failed)),
        ),
        (
            "peers connected",
            Box::new(|r| format!("{} / {}", r.peers_connected, r.peers)),
        ),
        (
            "join p50 / p99 ms",
            Box::new(|r| format!("{:.0} / {:.0}", r.join_ms_p50, r.join_ms_p99)),
        ),
        (
            "first packet p50 / p99 ms",
            Box::new(|r| {
                format!(
                    "{:.0} / {:.0}",
                    r.first_packet_ms_p50, r.first_packet_ms_p99
                )
            }),
        ),
        ("packets/s sent", Box::new(|r| format!("{:.0}", r.sent_pps))),
        (
            "packets/s forwarded",
            Box::new(|r| format!("{:.0}", r.forwarded_pps)),
        ),
        (
            "packets/s received",
            Box::new(|r| format!("{:.0}", r.received_pps)),
        ),
        ("loss", Box::new(|r| format!("{:.3} %", r.loss_pct))),
        (
            "dup / reordered / corrupt",
            Box::new(|r| format!("{} / {} / {}", r.duplicates, r.reordered, r.corrupt)),
        ),
        (
            "latency p50 / p99 / max ms",
            Box::new(|r| {
                format!(
                    "{:.2} / {:.2} / {:.1}",
                    r.latency_ms_p50, r.latency_ms_p99, r.latency_ms_max
                )
            }),
        ),
        ("jitter ms", Box::new(|r| format!("{:.2}", r.jitter_ms))),
        (
            "NACKs / PLIs (server)",
            Box::new(|r| format!("{:.0} / {:.0}", r.nacks, r.plis)),
        ),
        (
            "server drops",
            Box::new(|r| format!("{:.0}", r.server_dropped)),
        ),
        (
            "server CPU µs / fwd packet",
            Box::new(|r| opt(r.server_cpu_us_per_forwarded_packet, "", 2)),
        ),
        (
            "server CPU (cores)",
            Box::new(|r| opt(r.server_cpu_cores, "", 2)),
        ),
        (
            "server RSS KiB / PC",
            Box::new(|r| opt(r.server_rss_kib_per_peer, "", 0)),
        ),
        (
            "server disk writes MB/s",
            Box::new(|r| opt(r.server_disk_write_mb_s, "", 2)),
        ),
        (
            "load tool CPU (cores)",
            Box::new(|r| opt(r.tool_cpu_cores, "", 2)),
        ),
    ];
    let mut rows = rows;
    if runs.iter().any(|r| r.rejoin.any()) {
        rows.push((
            "rejoined (attempts / lost)",
            Box::new(|r| {
                format!(
                    "{} ({} / {})",
                    r.rejoin.participants_rejoined, r.rejoin.attempts, r.rejoin.unrecovered
                )
            }),
        ));
        rows.push((
            "media back p50 / max ms",
            Box::new(|r| {
                format!(
                    "{} / {}",
                    opt(r.rejoin.media_back_ms_p50, "", 0),
                    opt(r.rejoin.media_back_ms_max, "", 0)
                )
            }),
        ));
    }
    let mut out = String::new();
    let _ = write!(out, "{:<28}", "measure");
    for r in runs {
        let _ = write!(out, " {:>22}", r.target);
    }
    out.push('\n');
    for (name, f) in &rows {
        let _ = write!(out, "{name:<28}");
        for r in runs {
            let _ = write!(out, " {:>22}", f(r));
        }
        out.push('\n');
    }
    out
}

/// Ratios and failures below the table.
pub fn notes(c: &Comparison) -> String {
    let mut out = String::new();
    if let Some(r) = c.relais_vs_bare_relay {
        let _ = writeln!(
            out,
            "relais CPU per forwarded packet = {r:.2} x the bare relay's"
        );
    }
    if let Some(r) = c.relais_vs_janus {
        let _ = writeln!(out, "relais CPU per forwarded packet = {r:.2} x Janus's");
    }
    for run in &c.runs {
        for (what, n) in &run.failures {
            let _ = writeln!(out, "[{}] {n} x {what}", run.target);
        }
        if run.server_unreachable_samples > 0 {
            let _ = writeln!(
                out,
                "[{}] the server could not be read {} times",
                run.target, run.server_unreachable_samples
            );
        }
    }
    out
}

const COLORS: [&str; 3] = ["#1f77b4", "#d62728", "#2ca02c"];

/// Throughput (top) and latency p50/p99 (bottom) over time, one line per target.
pub fn svg(runs: &[MediaReport]) -> String {
    let (w, h, margin) = (900.0, 560.0, 60.0);
    let panel_h = (h - 3.0 * margin) / 2.0;
    let t_max = runs
        .iter()
        .flat_map(|r| r.timeline.iter().map(|p| p.t_s))
        .fold(1.0f64, f64::max);
    let pps_max = runs
        .iter()
        .flat_map(|r| r.timeline.iter().map(|p| p.forwarded_pps))
        .fold(1.0f64, f64::max)
        * 1.1;
    let lat_max = runs
        .iter()
        .flat_map(|r| r.timeline.iter().map(|p| p.latency_ms_p99))
        .fold(1.0f64, f64::max)
        * 1.1;
    let x = |t: f64| margin + t / t_max * (w - 2.0 * margin);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let panels = [
        ("packets/s forwarded", margin, pps_max),
        (
            "latency ms (solid p50, dashed p99)",
            2.0 * margin + panel_h,
            lat_max,
        ),
    ];
    for (title, top, max) in panels {
        let bottom = top + panel_h;
        let _ = writeln!(
            s,
            r##"<rect x="{margin}" y="{top}" width="{}" height="{panel_h}" fill="none" stroke="#999"/>"##,
            w - 2.0 * margin
        );
        let _ = writeln!(s, r#"<text x="{margin}" y="{}">{title}</text>"#, top - 8.0);
        for i in 0..=4 {
            let v = max * f64::from(i) / 4.0;
            let y = bottom - f64::from(i) / 4.0 * panel_h;
            let _ = writeln!(
                s,
                r##"<line x1="{margin}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                w - margin,
                margin - 4.0,
                y + 4.0,
                if max > 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{t_max:.0} s</text>"#,
            w - margin,
            bottom + 16.0
        );
    }
    let y_in = |v: f64, top: f64, max: f64| top + panel_h - (v / max).min(1.0) * panel_h;
    for (i, r) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let line = |f: &dyn Fn(&TimelinePoint) -> f64, top: f64, max: f64| {
            r.timeline
                .iter()
                .map(|p| format!("{:.1},{:.1}", x(p.t_s), y_in(f(p), top, max)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let top2 = 2.0 * margin + panel_h;
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            line(&|p| p.forwarded_pps, margin, pps_max)
        );
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            line(&|p| p.latency_ms_p50, top2, lat_max)
        );
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" stroke-dasharray="5,4" points="{}"/>"#,
            line(&|p| p.latency_ms_p99, top2, lat_max)
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" fill="{color}" text-anchor="end">{} ({})</text>"#,
            w - margin - 4.0,
            margin + 16.0 * (i as f64 + 1.0),
            r.target,
            r.transport
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample(target: &str, cpu: f64) -> MediaReport {
        MediaReport {
            target: target.into(),
            transport: "udp".into(),
            sessions: 2,
            sessions_failed: 0,
            participants: 2,
            peers: 4,
            peers_connected: 4,
            join_ms_p50: 10.0,
            join_ms_p99: 20.0,
            first_packet_ms_p50: 1.0,
            first_packet_ms_p99: 2.0,
            window_s: 2.0,
            sent_pps: 100.0,
            forwarded_pps: 100.0,
            received_pps: 100.0,
            loss_pct: 0.0,
            duplicates: 0,
            reordered: 0,
            corrupt: 0,
            latency_ms_p50: 0.5,
            latency_ms_p99: 1.5,
            latency_ms_max: 3.0,
            jitter_ms: 0.1,
            nacks: 0.0,
            plis: 0.0,
            plis_received_by_peers: 0,
            server_dropped: 0.0,
            server_cpu_us_per_forwarded_packet: Some(cpu),
            server_cpu_cores: Some(0.1),
            server_rss_kib: Some(10_000),
            server_rss_kib_per_peer: Some(100.0),
            server_disk_write_mb_s: Some(0.0),
            tool_cpu_cores: Some(0.1),
            tool_send_drops: 0,
            failures: vec![("x".into(), 2)],
            server_unreachable_samples: 0,
            rejoin: RejoinFigures::default(),
            timeline: vec![
                TimelinePoint {
                    t_s: 1.0,
                    forwarded_pps: 90.0,
                    received_pps: 90.0,
                    latency_ms_p50: 0.4,
                    latency_ms_p99: 1.2,
                },
                TimelinePoint {
                    t_s: 2.0,
                    forwarded_pps: 110.0,
                    received_pps: 110.0,
                    latency_ms_p50: 0.6,
                    latency_ms_p99: 1.8,
                },
            ],
        }
    }

    #[test]
    fn comparison_ratios_table_and_plot() {
        let c = Comparison::new(
            "relais-load media".into(),
            vec![
                sample("relais", 6.0),
                sample("bare-relay", 2.0),
                sample("janus", 12.0),
            ],
        );
        assert_eq!(c.relais_vs_bare_relay, Some(3.0));
        assert_eq!(c.relais_vs_janus, Some(0.5));
        let t = table(&c.runs);
        assert!(t.contains("bare-relay") && t.contains("6.00"));
        assert!(notes(&c).contains("[relais] 2 x x"));
        let svg = svg(&c.runs);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 9);
        // No loss, no rejoin rows.
        assert!(!t.contains("media back"));
    }

    #[test]
    fn rejoins_are_shown_when_any_happened() {
        let f = RejoinFigures::new(4, 4, 5, 0, &[2100.0, 1800.0, 2500.0, 1900.0]);
        assert_eq!(f.media_back_ms_p50, Some(1900.0));
        assert_eq!(f.media_back_ms_max, Some(2500.0));
        assert!(f.any());
        let mut r = sample("relais", 6.0);
        r.rejoin = f;
        let t = table(&[r.clone()]);
        assert!(
            t.contains("rejoined (attempts / lost)") && t.contains("4 (5 / 0)"),
            "{t}"
        );
        assert!(t.contains("1900 / 2500"), "{t}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["rejoin"]["rejoins"], 4);
        assert_eq!(json["rejoin"]["media_back_ms_max"], 2500.0);
        // Lost and never back: shown, with no time to media back.
        let lost = RejoinFigures::new(0, 0, 3, 2, &[]);
        assert!(lost.any());
        assert_eq!(lost.media_back_ms_p50, None);
        assert!(!RejoinFigures::default().any());
    }
}
