//! The Janus target: the same consultations through Janus's VideoRoom plugin, so relais's
//! CPU per forwarded packet can be compared with a well-known SFU measured side by side.
//!
//! Janus (Debian's `janus` package; `scripts/prepare/60-janus.sh` installs it) is started here
//! with a minimal generated configuration in a temporary directory: HTTP transport on a free
//! port, only the VideoRoom plugin, no session timeout. Janus never offers loopback ICE
//! candidates (it skips `lo` when gathering), so it runs in a network namespace of its own
//! joined to ours by a veth pair (`10.213.N.2` in the namespace, `10.213.N.1` here, N from
//! our pid): every packet stays on this machine, between addresses this run created. That
//! needs root; the namespace is deleted when the run ends.
//! Each participant does what a browser using `janus.js` does: a Janus session (long-polled
//! for events), a publisher handle that joins the room and publishes (our offer, Janus's
//! answer), then a subscriber handle for the other participants' feeds (Janus's offer, our
//! answer). Janus therefore holds two PeerConnections per participant where relais holds one;
//! the report counts PeerConnections as Janus sees them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::engine::io::{Io, TransportKind};
use super::engine::rtc_leg::{RtcFactory, RtcLeg};
use super::engine::{self, LegId, ShardHandle};
use super::failures::Failures;
use super::measure::measure;
use super::media::{MediaLoad, report_of};
use super::probe::Probe;
use super::progress::ProgressBar;
use super::report::MediaReport;

const PLUGIN_DIR: &str = "/usr/lib/x86_64-linux-gnu/janus";
const EVENT_WAIT: Duration = Duration::from_secs(10);

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("ip {}: {e} (iproute2 missing?)", args.join(" ")))?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Janus's network namespace and the veth pair to it; deleted when dropped.
pub struct Netns {
    pub name: String,
    /// Our end (the peers bind here).
    pub host_ip: IpAddr,
    /// Janus's end.
    pub janus_ip: IpAddr,
}

impl Netns {
    pub fn create() -> anyhow::Result<Self> {
        let pid = std::process::id();
        let n = (pid % 250 + 1) as u8;
        let name = format!("rljanus{pid}");
        let (ours, theirs) = (format!("rlj{n}a"), format!("rlj{n}b"));
        let host_ip = IpAddr::from([10, 213, n, 1]);
        let janus_ip = IpAddr::from([10, 213, n, 2]);
        ip(&["netns", "add", &name]).map_err(|e| {
            anyhow::anyhow!("{e}: the Janus target needs root for a network namespace")
        })?;
        let ns = Self {
            name,
            host_ip,
            janus_ip,
        };
        ip(&[
            "link", "add", &ours, "type", "veth", "peer", "name", &theirs, "netns", &ns.name,
        ])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &ours])?;
        ip(&["link", "set", &ours, "up"])?;
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{janus_ip}/30"),
            "dev",
            &theirs,
        ])?;
        ip(&["-n", &ns.name, "link", "set", &theirs, "up"])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair, our end included.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A Janus process in its namespace with its generated configuration; stopped when dropped.
pub struct JanusProcess {
    child: Child,
    dir: PathBuf,
    pub base: String,
    pub netns: Netns,
}

impl JanusProcess {
    pub async fn start(bin: &Path) -> anyhow::Result<Self> {
        let netns = Netns::create()?;
        let port = 18_088;
        let dir = std::env::temp_dir().join(format!("relais-load-janus-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        write_config(&dir, netns.janus_ip, port)?;
        let log = std::fs::File::create(dir.join("janus.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &netns.name])
            .arg(bin)
            .arg("-F")
            .arg(&dir)
            .arg("-C")
            .arg(dir.join("janus.jcfg"))
            .args(["-o", "-d", "3", "-i", &netns.janus_ip.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start Janus ({}): {e}; install Debian's `janus` (scripts/prepare/60-janus.sh)",
                    bin.display()
                )
            })?;
        let mut me = Self {
            child,
            dir,
            base: format!("http://{}:{port}/janus", netns.janus_ip),
            netns,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = me.child.try_wait() {
                anyhow::bail!(
                    "Janus exited at start ({status}); see {}",
                    me.dir.join("janus.log").display()
                );
            }
            let ok = http
                .get(format!("{}/info", me.base))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(me);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "Janus did not answer on {} within 10 s",
                me.base
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for JanusProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_config(dir: &Path, ip: IpAddr, port: u16) -> std::io::Result<()> {
    let plugins_off = [
        "audiobridge",
        "echotest",
        "nosip",
        "recordplay",
        "sip",
        "streaming",
        "textroom",
        "videocall",
        "voicemail",
        "duktape",
        "lua",
    ]
    .map(|p| format!("libjanus_{p}.so"))
    .join(",");
    let transports_off = ["websockets", "mqtt", "nanomsg", "pfunix", "rabbitmq"]
        .map(|p| format!("libjanus_{p}.so"))
        .join(",");
    std::fs::write(
        dir.join("janus.jcfg"),
        format!(
            r#"general: {{
    configs_folder = "{dir}"
    plugins_folder = "{PLUGIN_DIR}/plugins"
    transports_folder = "{PLUGIN_DIR}/transports"
    events_folder = "{PLUGIN_DIR}/events"
    loggers_folder = "{dir}/no-loggers"
    debug_level = 3
    session_timeout = 0
    protected_folders = []
}}
media: {{
    rtp_port_range = "40000-60000"
}}
nat: {{
    nice_debug = false
    ice_enforce_list = "{ip}"
    ignore_mdns = true
}}
plugins: {{
    disable = "{plugins_off}"
}}
transports: {{
    disable = "{transports_off}"
}}
events: {{
    broadcast = false
}}
"#,
            dir = dir.display(),
        ),
    )?;
    std::fs::write(
        dir.join("janus.transport.http.jcfg"),
        format!(
            "general: {{\n    json = \"compact\"\n    base_path = \"/janus\"\n    http = true\n    port = {port}\n    ip = \"{ip}\"\n    https = false\n}}\nadmin: {{\n    admin_http = false\n}}\n"
        ),
    )?;
    std::fs::write(dir.join("janus.plugin.videoroom.jcfg"), "general: {\n}\n")
}

/// One Janus session (a browser tab): requests, and its events from a long-poll task.
struct JanusClient {
    http: reqwest::Client,
    base: String,
    session: u64,
    events: mpsc::UnboundedReceiver<Value>,
    stash: Vec<Value>,
    poll: tokio::task::JoinHandle<()>,
}

impl Drop for JanusClient {
    fn drop(&mut self) {
        self.poll.abort();
    }
}

async fn post(http: &reqwest::Client, url: &str, mut body: Value) -> anyhow::Result<Value> {
    body["transaction"] = json!(format!("{:x}", rand::random::<u64>()));
    let v: Value = http
        .post(url)
        .timeout(Duration::from_secs(10))
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    match v["janus"].as_str() {
        Some("success" | "ack") => Ok(v),
        _ => anyhow::bail!(
            "Janus: {}",
            v["error"]["reason"].as_str().unwrap_or(&v.to_string())
        ),
    }
}

impl JanusClient {
    async fn new(http: reqwest::Client, base: &str) -> anyhow::Result<Self> {
        let v = post(&http, base, json!({"janus": "create"})).await?;
        let session = v["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no session id"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let url = format!("{base}/{session}?maxev=10");
        let h = http.clone();
        let poll = tokio::spawn(async move {
            loop {
                let r = h.get(&url).timeout(Duration::from_secs(40)).send().await;
                let Ok(r) = r else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let Ok(v) = r.json::<Value>().await else {
                    continue;
                };
                let list = match v {
                    Value::Array(a) => a,
                    v => vec![v],
                };
                for ev in list {
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Self {
            http,
            base: base.to_string(),
            session,
            events: rx,
            stash: Vec::new(),
            poll,
        })
    }

    async fn attach(&self) -> anyhow::Result<u64> {
        let v = post(
            &self.http,
            &format!("{}/{}", self.base, self.session),
            json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
        )
        .await?;
        v["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no handle id"))
    }

    async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut m = json!({"janus": "message", "body": body});
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        post(
            &self.http,
            &format!("{}/{}/{handle}", self.base, self.session),
            m,
        )
        .await
    }

    async fn trickle_done(&self, handle: u64) -> anyhow::Result<()> {
        post(
            &self.http,
            &format!("{}/{}/{handle}", self.base, self.session),
            json!({"janus": "trickle", "candidate": {"completed": true}}),
        )
        .await
        .map(|_| ())
    }

    /// The next event of `handle` that `pred` accepts (others are kept for later calls).
    async fn wait(&mut self, handle: u64, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        if let Some(i) = self
            .stash
            .iter()
            .position(|e| e["sender"].as_u64() == Some(handle) && pred(e))
        {
            return Ok(self.stash.remove(i));
        }
        let deadline = tokio::time::Instant::now() + EVENT_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => {
                    if let Some(err) = e["plugindata"]["data"]["error"].as_str()
                        && e["sender"].as_u64() == Some(handle)
                    {
                        return Err(VideoRoomError {
                            code: e["plugindata"]["data"]["error_code"].as_i64().unwrap_or(0),
                            message: err.to_string(),
                        }
                        .into());
                    }
                    if e["sender"].as_u64() == Some(handle) && pred(&e) {
                        return Ok(e);
                    }
                    if self.stash.len() < 256 {
                        self.stash.push(e);
                    }
                }
                Ok(None) => anyhow::bail!("Janus event stream closed"),
                Err(_) => anyhow::bail!("no Janus event within {EVENT_WAIT:?}"),
            }
        }
    }
}

/// An error the VideoRoom plugin answered with.
#[derive(Debug, thiserror::Error)]
#[error("VideoRoom: {message}")]
struct VideoRoomError {
    code: i64,
    message: String,
}

/// JANUS_VIDEOROOM_ERROR_NO_SUCH_FEED: also what a subscriber gets while the publisher's
/// PeerConnection is up on our side but Janus has not yet marked it started.
const NO_SUCH_FEED: i64 = 428;

struct JanusPeer {
    client: JanusClient,
    publisher_id: u64,
    legs: Vec<(ShardHandle<RtcLeg>, LegId)>,
}

struct Ctx<'a> {
    cfg: &'a MediaLoad,
    base: String,
    http: reqwest::Client,
    factory: Arc<RtcFactory>,
    shards: &'a [ShardHandle<RtcLeg>],
    bind: IpAddr,
    next_shard: std::sync::atomic::AtomicUsize,
}

impl Ctx<'_> {
    async fn new_leg(
        &self,
        tag_base: u32,
        send: bool,
    ) -> anyhow::Result<(ShardHandle<RtcLeg>, LegId)> {
        let io = Io::udp(self.bind).await?;
        let leg = self
            .factory
            .leg(io, TransportKind::Udp, Instant::now(), tag_base, send)?;
        let i = self
            .next_shard
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let shard = self.shards[i % self.shards.len()].clone();
        let id = shard.add(leg).await?;
        Ok((shard, id))
    }
}

async fn wait_connected(
    shard: &ShardHandle<RtcLeg>,
    id: LegId,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let (ok, failed) = shard
            .call(id, |l, _, _| {
                (l.connected(), l.failure().map(str::to_string))
            })
            .await?;
        if ok {
            return Ok(());
        }
        if let Some(f) = failed {
            anyhow::bail!("{f}");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not connected within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_video_room(e: &Value, what: &str) -> bool {
    e["plugindata"]["data"]["videoroom"].as_str() == Some(what)
}

/// A participant joins `room` and publishes.
async fn publish(
    ctx: &Ctx<'_>,
    room: u64,
    create: bool,
    tag_base: u32,
) -> anyhow::Result<JanusPeer> {
    let mut client = JanusClient::new(ctx.http.clone(), &ctx.base).await?;
    let handle = client.attach().await?;
    if create {
        let codec = format!("{:?}", ctx.cfg.pattern.codec).to_ascii_lowercase();
        let v = client
            .message(
                handle,
                json!({"request": "create", "room": room, "publishers": ctx.cfg.participants + 1,
                       "videocodec": codec, "audiocodec": "opus", "bitrate": 0}),
                None,
            )
            .await?;
        if let Some(e) = v["plugindata"]["data"]["error"].as_str() {
            anyhow::bail!("create room: {e}");
        }
    }
    client
        .message(
            handle,
            json!({"request": "join", "ptype": "publisher", "room": room}),
            None,
        )
        .await?;
    let joined = client.wait(handle, |e| is_video_room(e, "joined")).await?;
    let publisher_id = joined["plugindata"]["data"]["id"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("joined without an id"))?;
    let (shard, id) = ctx.new_leg(tag_base, true).await?;
    let offer = shard.call(id, |l, now, _| l.publish_offer(now)).await??;
    client
        .message(
            handle,
            json!({"request": "publish", "audio": true, "video": ctx.cfg.pattern.video}),
            Some(json!({"type": "offer", "sdp": offer})),
        )
        .await?;
    client.trickle_done(handle).await?;
    let answer = client
        .wait(handle, |e| e["jsep"]["sdp"].is_string())
        .await?;
    let sdp = answer["jsep"]["sdp"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    tracing::debug!(%offer, answer = %sdp, "Janus publisher negotiation");
    shard
        .call(id, move |l, now, _| l.apply_answer(now, &sdp))
        .await??;
    wait_connected(&shard, id, ctx.cfg.join_timeout).await?;
    Ok(JanusPeer {
        client,
        publisher_id,
        legs: vec![(shard, id)],
    })
}

/// A participant subscribes to `feeds` on a second handle.
async fn subscribe(
    ctx: &Ctx<'_>,
    p: &mut JanusPeer,
    room: u64,
    feeds: &[u64],
    tag_base: u32,
) -> anyhow::Result<()> {
    let handle = p.client.attach().await?;
    let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
    let deadline = Instant::now() + ctx.cfg.join_timeout;
    let attached = loop {
        p.client
            .message(
                handle,
                json!({"request": "join", "ptype": "subscriber", "room": room, "streams": streams}),
                None,
            )
            .await?;
        match p
            .client
            .wait(handle, |e| e["jsep"]["sdp"].is_string())
            .await
        {
            Err(e)
                if Instant::now() < deadline
                    && e.downcast_ref::<VideoRoomError>()
                        .is_some_and(|v| v.code == NO_SUCH_FEED) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => break other?,
        }
    };
    let offer = attached["jsep"]["sdp"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (shard, id) = ctx.new_leg(tag_base, false).await?;
    let answer = shard
        .call(id, move |l, now, _| l.answer_offer(now, &offer))
        .await??;
    p.client
        .message(
            handle,
            json!({"request": "start", "room": room}),
            Some(json!({"type": "answer", "sdp": answer})),
        )
        .await?;
    p.client.trickle_done(handle).await?;
    wait_connected(&shard, id, ctx.cfg.join_timeout).await?;
    p.legs.push((shard, id));
    Ok(())
}

/// One consultation through Janus: everyone publishes, then everyone subscribes to the others.
async fn session(ctx: &Ctx<'_>, s: usize, failures: &Failures) -> (Vec<JanusPeer>, bool) {
    let room = 1000 + s as u64;
    let mut peers = Vec::new();
    for k in 0..ctx.cfg.participants {
        let tag = ((s * ctx.cfg.participants + k) as u32) << 4;
        match publish(ctx, room, k == 0, tag).await {
            Ok(p) => peers.push(p),
            Err(e) => {
                failures.add(&format!("janus publish: {e:#}"));
                return (peers, false);
            }
        }
    }
    let ids: Vec<u64> = peers.iter().map(|p| p.publisher_id).collect();
    let mut ok = true;
    for (k, p) in peers.iter_mut().enumerate() {
        let feeds: Vec<u64> = ids.iter().copied().filter(|i| *i != ids[k]).collect();
        let tag = ((s * ctx.cfg.participants + k) as u32) << 4 | 8;
        if let Err(e) = subscribe(ctx, p, room, &feeds, tag).await {
            failures.add(&format!("janus subscribe: {e:#}"));
            ok = false;
        }
    }
    (peers, ok)
}

pub async fn run(cfg: &MediaLoad, bin: &Path) -> anyhow::Result<MediaReport> {
    anyhow::ensure!(
        cfg.transport == TransportKind::Udp,
        "the Janus target runs over UDP only"
    );
    let janus = JanusProcess::start(bin).await?;
    let probe = Probe::Process {
        pid: Some(janus.pid()),
    };
    let first = probe.sample().await;
    let bar = ProgressBar::new(cfg.progress);
    let shards: Vec<ShardHandle<RtcLeg>> =
        (0..cfg.shards.max(1)).map(|_| engine::spawn()).collect();
    let ctx = Ctx {
        cfg,
        base: janus.base.clone(),
        http: reqwest::Client::builder().build()?,
        factory: Arc::new(RtcFactory::new(Arc::new(cfg.pattern.clone()))?),
        shards: &shards,
        bind: janus.netns.host_ip,
        next_shard: Default::default(),
    };
    let failures = Failures::default();
    let gap = Duration::from_secs_f64(1.0 / cfg.ramp_per_s.max(0.1));
    let t0 = Instant::now();
    let mut all = Vec::new();
    let mut sessions_failed = 0;
    // Sessions start at the ramp rate; each one's set-up runs concurrently with the next.
    let mut pending = futures_util::stream::FuturesUnordered::new();
    for s in 0..cfg.sessions {
        let start = t0 + gap * s as u32;
        let ctx = &ctx;
        let failures = &failures;
        pending.push(async move {
            tokio::time::sleep_until(start.into()).await;
            session(ctx, s, failures).await
        });
    }
    let mut done = 0;
    while let Some((peers, ok)) = futures_util::StreamExt::next(&mut pending).await {
        done += 1;
        sessions_failed += usize::from(!ok);
        all.extend(peers);
        bar.update(
            "ramp",
            done as f64,
            cfg.sessions as f64,
            &format!("Janus sessions set up {done}/{}", cfg.sessions),
        );
    }
    drop(pending);
    bar.finish();
    // Janus holds a publisher and a subscriber PeerConnection per participant.
    let pcs = cfg.peers() * 2;
    let mut measured = measure(&shards, &probe, cfg.warmup, cfg.duration, &bar, pcs).await;
    measured.initial = Some(first);
    for p in &all {
        for (shard, id) in &p.legs {
            shard.remove(*id).await;
        }
    }
    drop(all);
    let mut r = report_of(cfg, "janus", measured, sessions_failed, &failures);
    r.peers = pcs;
    drop(janus);
    Ok(r)
}
