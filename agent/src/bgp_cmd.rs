//! `tortie bgp --config FILE [--run-dir DIR] [--state-dir DIR]
//! [--log-format text|json]`: the BGP speaker on its own.
//!
//! - Reads the YAML of /work/notes/speaker-config.md
//!   ([`crate::resources::SpeakerConfigSpec`]); errors name the file, the
//!   field and what is wrong.
//! - Serves the status document on `RUN_DIR/agent.sock` (protocol in
//!   [`crate::status_client`]).
//! - SIGHUP: re-reads the file and applies it; sessions whose settings did
//!   not change stay up. A file that does not load is logged and ignored.
//!   Listen addresses and port are read at start only.
//! - SIGTERM / SIGINT: every session gets Cease / Administrative Shutdown,
//!   then exit 0.
//! - Graceful restart: while running, `STATE_DIR/bgp-restart` holds the
//!   time of the last heartbeat (every 5 s). A start that finds it younger
//!   than the longest configured restart time is a graceful restart (R and
//!   F bits, advertisements wait for peers' End-of-RIB). A clean shutdown
//!   removes it.
//! - `fib.enabled: true`: best routes go into the kernel of this network
//!   namespace (protocol 52, see [`crate::fib`]) from a dedicated thread
//!   that owns the netlink socket ([`crate::fib::service`]). Routes already
//!   there at start stay until the speaker has synced
//!   ([`crate::fib::sync`]: the speaker's End-of-RIB wait when restarting;
//!   otherwise every peer's End-of-RIB, or Established for 2 s, at most
//!   10 s after start); SIGTERM and SIGKILL leave them in place. Every
//!   `fib.resyncSeconds` a dump repairs drift. `fib.pools` and
//!   `fib.underlay` ask for IP-in-IP or VXLAN per pool.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tortie_bgp::rib::{
    Action as RuleAction, Filter, Match, MaxPrefix, MaxPrefixAction, PathAttrs, PrefixMatch, Rule,
};
use tortie_bgp::runtime::{self, RuntimeConfig};
use tortie_bgp::speaker::{Originate, PeerSettings, SpeakerConfig, Transport};
use tortie_bgp::wire::{Asn, Community, Family, LargeCommunity, Prefix};
use tracing::{error, info, warn};

use crate::fib::encap::PoolEncap;
use crate::fib::service::FibHandle;
use crate::fib::sync::{watch_sync, SyncDecision, NOT_RESTARTING_SYNC_BOUND};
use crate::resources::{
    AddPaths, BGPPeerSpec, FamilyName, FilterAction, FilterRuleSpec, MatchOperator,
    MaxPrefixesAction, SpeakerConfigSpec,
};
use crate::routing::Routing;
use crate::status_client;

/// Arguments of `tortie bgp`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The speaker config (YAML).
    #[arg(long)]
    pub config: PathBuf,
    /// Where the status socket goes (`agent.sock`).
    #[arg(long, default_value = "/run/tortie")]
    pub run_dir: PathBuf,
    /// Where the graceful-restart marker goes.
    #[arg(long, default_value = "/var/lib/tortie")]
    pub state_dir: PathBuf,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The loaded config: what the runtime runs, plus what only the command
/// uses.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Speaker, peers, listen addresses.
    pub runtime: RuntimeConfig,
    /// Longest graceful-restart time of any peer (None: GR off everywhere).
    pub max_restart_time: Option<Duration>,
    /// `fib.enabled` (None: routes stay in the RIB).
    pub fib: Option<FibSettings>,
}

/// What `fib:` asks for (the FIB service's settings).
pub use crate::fib::service::FibSettings;

/// Name of the graceful-restart marker in the state dir.
pub use crate::routing::RESTART_MARKER;

/// Runs the speaker until SIGTERM.
pub fn run(args: Args) -> Result<()> {
    init_logging(args.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(args))
}

pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: logs redirected to a file stay greppable.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A subscriber already installed (by main) wins.
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
}

/// Loads and checks the config file.
pub fn load(path: &Path) -> Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let spec: SpeakerConfigSpec =
        serde_norway::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    convert(&spec).map_err(|e| anyhow!("{}: {e}", path.display()))
}

fn parse_ip(field: &str, s: &str) -> Result<IpAddr> {
    s.trim()
        .parse()
        .map_err(|_| anyhow!("{field}: {s} is not an IP address"))
}

fn parse_v4(field: &str, s: &str) -> Result<Ipv4Addr> {
    s.trim()
        .parse()
        .map_err(|_| anyhow!("{field}: {s} is not an IPv4 address"))
}

fn parse_prefix(field: &str, s: &str) -> Result<Prefix> {
    let p: Prefix = s
        .trim()
        .parse()
        .map_err(|_| anyhow!("{field}: {s} is not a prefix (ADDR/LEN)"))?;
    // Prefix parsing clears host bits; a config that sets them is most
    // likely a typo, so say so rather than announce something else.
    let given: Option<IpAddr> = s.trim().split_once('/').and_then(|(a, _)| a.parse().ok());
    let truncated = p.addr();
    if given.is_some_and(|g| g != truncated) {
        bail!(
            "{field}: {s} has host bits set (did you mean {truncated}/{}?)",
            p.prefix_len()
        );
    }
    Ok(p)
}

/// `"ASN:VALUE"` or a well-known community name.
pub fn parse_community(field: &str, s: &str) -> Result<Community> {
    let named = match s.trim().to_ascii_lowercase().as_str() {
        "no-export" | "no_export" => Some(Community::NO_EXPORT),
        "no-advertise" | "no_advertise" => Some(Community::NO_ADVERTISE),
        "no-export-subconfed" | "no_export_subconfed" => Some(Community::NO_EXPORT_SUBCONFED),
        "no-peer" | "nopeer" => Some(Community::NOPEER),
        "blackhole" => Some(Community::BLACKHOLE),
        "graceful-shutdown" => Some(Community::GRACEFUL_SHUTDOWN),
        _ => None,
    };
    if let Some(c) = named {
        return Ok(c);
    }
    let bad = || {
        anyhow!(
            "{field}: {s:?} is not a community (ASN:VALUE, both 0-65535, or a name like no-export)"
        )
    };
    let (a, v) = s.trim().split_once(':').ok_or_else(bad)?;
    let a: u16 = a.parse().map_err(|_| bad())?;
    let v: u16 = v.parse().map_err(|_| bad())?;
    Ok(Community::new(a, v))
}

/// `"GLOBAL:LOCAL1:LOCAL2"`.
pub fn parse_large_community(field: &str, s: &str) -> Result<LargeCommunity> {
    let bad = || anyhow!("{field}: {s:?} is not a large community (GLOBAL:LOCAL1:LOCAL2)");
    let parts: Vec<u32> = s
        .trim()
        .split(':')
        .map(|p| p.parse::<u32>().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    match parts.as_slice() {
        [g, l1, l2] => Ok(LargeCommunity {
            global_admin: *g,
            local1: *l1,
            local2: *l2,
        }),
        _ => Err(bad()),
    }
}

fn convert_filter(field: &str, rules: &[FilterRuleSpec]) -> Result<Filter> {
    let mut out = Filter::accept_all();
    for (i, r) in rules.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let mut m = Match::default();
        if let Some(c) = &r.cidr {
            let cidr = parse_prefix(&format!("{f}.cidr"), c)?;
            let max = if cidr.is_ipv6() { 128 } else { 32 };
            let op = r.match_operator.unwrap_or(MatchOperator::In);
            m.prefix = Some(match op {
                MatchOperator::Equal => PrefixMatch::Exact(cidr),
                MatchOperator::In => {
                    let (min, mx) = r
                        .prefix_length
                        .map_or((None, None), |l| (l.min, l.max));
                    for (name, v) in [("min", min), ("max", mx)] {
                        if let Some(v) = v {
                            if v > max || v < cidr.prefix_len() {
                                bail!("{f}.prefixLength.{name}: {v} is outside {}..={max} for {c}", cidr.prefix_len());
                            }
                        }
                    }
                    PrefixMatch::within(cidr, min, mx)
                }
                MatchOperator::NotIn | MatchOperator::NotEqual => bail!(
                    "{f}.matchOperator: {op:?} is not supported yet; use In or Equal with the opposite action before a catch-all rule"
                ),
            });
        } else if r.match_operator.is_some() || r.prefix_length.is_some() {
            bail!("{f}: matchOperator and prefixLength need a cidr");
        }
        if let Some(c) = &r.community {
            m.community = Some(parse_community(&format!("{f}.community"), c)?);
        }
        if let Some(c) = &r.large_community {
            m.large_community = Some(parse_large_community(&format!("{f}.largeCommunity"), c)?);
        }
        let add_communities = r
            .add_communities
            .iter()
            .enumerate()
            .map(|(j, c)| parse_community(&format!("{f}.addCommunities[{j}]"), c))
            .collect::<Result<Vec<_>>>()?;
        let add_large_communities = r
            .add_large_communities
            .iter()
            .enumerate()
            .map(|(j, c)| parse_large_community(&format!("{f}.addLargeCommunities[{j}]"), c))
            .collect::<Result<Vec<_>>>()?;
        out.rules.push(Rule {
            matches: m,
            action: match r.action {
                FilterAction::Accept => RuleAction::Accept,
                FilterAction::Reject => RuleAction::Reject,
            },
            add_communities,
            add_large_communities,
        });
    }
    Ok(out)
}

fn convert_peer(
    i: usize,
    p: &BGPPeerSpec,
    spec: &SpeakerConfigSpec,
    port: u16,
) -> Result<PeerSettings> {
    let f = format!("peers[{i}]");
    let addr = parse_ip(&format!("{f}.peerIP"), &p.peer_ip)?;
    if p.as_number == 0 {
        bail!("{f}.asNumber: 0 is not a valid AS number");
    }
    let mut s = PeerSettings::new(addr, Asn(p.as_number));
    s.name = p.name.clone().unwrap_or_default();
    let hold = p.hold_time.or(spec.hold_time).unwrap_or(90);
    if hold != 0 && hold < 3 {
        bail!("{f}.holdTime: {hold} is not allowed (0, or 3 and more seconds)");
    }
    s.hold_time = hold;
    s.keepalive = p.keepalive_time.or(spec.keepalive_time);
    if let Some(k) = s.keepalive {
        if hold != 0 && k >= hold {
            bail!("{f}.keepaliveTime: {k} must be smaller than the hold time {hold}");
        }
    }
    s.passive = p.passive.unwrap_or(false);
    if let Some(fams) = &p.families {
        if fams.is_empty() {
            bail!("{f}.families: empty; list IPv4, IPv6 or both");
        }
        s.families = fams
            .iter()
            .map(|f| match f {
                FamilyName::IPv4 => Family::IPV4_UNICAST,
                FamilyName::IPv6 => Family::IPV6_UNICAST,
            })
            .collect();
    }
    if let Some(gr) = &p.graceful_restart {
        if gr.enabled {
            let t = gr.restart_time.unwrap_or(120);
            if t > 4095 {
                bail!("{f}.gracefulRestart.restartTime: {t} is more than 4095 s");
            }
            s.graceful_restart = Some(t);
        }
    }
    let (rx, tx) = match p.add_paths.unwrap_or_default() {
        AddPaths::None => (false, false),
        AddPaths::Receive => (true, false),
        AddPaths::Send => (false, true),
        AddPaths::Both => (true, true),
    };
    s.add_path_receive = rx;
    s.add_path_send = tx;
    s.rr_client = p.route_reflector_client.unwrap_or(false);
    if s.rr_client && spec.cluster_id.is_none() {
        bail!("{f}.routeReflectorClient: needs clusterId at the top level");
    }
    s.next_hop_self = p.next_hop_self.unwrap_or(false);
    s.import = convert_filter(&format!("{f}.importFilters"), &p.import_filters)?;
    s.export = convert_filter(&format!("{f}.exportFilters"), &p.export_filters)?;
    s.max_prefix = p.max_prefixes.map(|limit| MaxPrefix {
        limit,
        action: match p.max_prefixes_action.unwrap_or_default() {
            MaxPrefixesAction::Reset => MaxPrefixAction::Cease,
            MaxPrefixesAction::Warn => MaxPrefixAction::Warn,
        },
    });
    let password = match &p.password {
        None => None,
        Some(pw) => match (&pw.value, &pw.secret_key_ref) {
            (Some(v), _) if v.len() > 80 => {
                bail!("{f}.password.value: longer than 80 octets (the TCP-MD5 limit)")
            }
            (Some(v), _) => Some(v.clone()),
            (None, Some(r)) => bail!(
                "{f}.password.secretKeyRef: Secret {}/{} cannot be read by the standalone speaker; put the password in password.value",
                r.namespace.as_deref().unwrap_or("default"),
                r.name
            ),
            (None, None) => bail!("{f}.password: needs value"),
        },
    };
    let source_address = p
        .source_address
        .as_deref()
        .map(|a| parse_ip(&format!("{f}.sourceAddress"), a))
        .transpose()?;
    if let Some(src) = source_address {
        if src.is_ipv4() != addr.is_ipv4() {
            bail!("{f}.sourceAddress: {src} is not of the same family as peerIP {addr}");
        }
    }
    if p.ttl_security == Some(0) {
        bail!("{f}.ttlSecurity: 0 hops is not allowed (1 = directly connected)");
    }
    s.transport = Transport {
        port,
        password,
        ttl_security: p.ttl_security,
        source_address,
    };
    // A lost session comes back quickly: standalone speakers are mostly
    // route reflectors and test fixtures.
    s.connect_retry = Duration::from_secs(u64::from(hold.clamp(3, 30)));
    Ok(s)
}

/// Checks the spec and builds the runtime configuration.
pub fn convert(spec: &SpeakerConfigSpec) -> Result<Loaded> {
    if spec.as_number == 0 {
        bail!("asNumber: 0 is not a valid AS number");
    }
    let router_id = parse_v4("routerId", &spec.router_id)?;
    if router_id.is_unspecified() {
        bail!("routerId: 0.0.0.0 is not a valid BGP identifier");
    }
    let cluster_id = spec
        .cluster_id
        .as_deref()
        .map(|c| parse_v4("clusterId", c))
        .transpose()?;
    let port = spec.listen_port.unwrap_or(179);
    let mut cfg = SpeakerConfig::new(Asn(spec.as_number), router_id);
    cfg.cluster_id = cluster_id;
    cfg.max_paths = spec.max_ecmp_paths.unwrap_or(8).max(1) as usize;
    let fib = match spec.fib.as_ref().filter(|f| f.enabled) {
        None => None,
        Some(f) => {
            let secs = f.resync_seconds.unwrap_or(30);
            if secs == 0 {
                bail!("fib.resyncSeconds: 0 is not allowed (at least 1 s)");
            }
            let pools = f
                .pools
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let cidr = parse_prefix(&format!("fib.pools[{i}].cidr"), &p.cidr)?;
                    Ok(PoolEncap {
                        cidr: ipnet::IpNet::from(cidr),
                        mode: p.encapsulation,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let underlay = f
                .underlay
                .as_deref()
                .map(|u| {
                    u.trim().parse::<ipnet::IpNet>().map_err(|_| {
                        anyhow!("fib.underlay: {u} is not ADDR/LEN (the node's address and subnet, like 192.0.2.11/24)")
                    })
                })
                .transpose()?;
            Some(FibSettings {
                resync: Duration::from_secs(secs),
                blackhole_originated: f.blackhole_originated.unwrap_or(true),
                pools,
                underlay,
            })
        }
    };
    cfg.track_fib = fib.is_some();
    for (i, o) in spec.originate.iter().enumerate() {
        let f = format!("originate[{i}]");
        let prefix = parse_prefix(&format!("{f}.prefix"), &o.prefix)?;
        let mut attrs = PathAttrs::local();
        attrs.med = o.med;
        attrs.communities = o
            .communities
            .iter()
            .enumerate()
            .map(|(j, c)| parse_community(&format!("{f}.communities[{j}]"), c))
            .collect::<Result<_>>()?;
        attrs.large_communities = o
            .large_communities
            .iter()
            .enumerate()
            .map(|(j, c)| parse_large_community(&format!("{f}.largeCommunities[{j}]"), c))
            .collect::<Result<_>>()?;
        if cfg.originate.iter().any(|x: &Originate| x.prefix == prefix) {
            bail!("{f}.prefix: {prefix} is listed twice");
        }
        cfg.originate.push(Originate { prefix, attrs });
    }
    let mut peers = Vec::new();
    for (i, p) in spec.peers.iter().enumerate() {
        let s = convert_peer(i, p, spec, port)?;
        if let Some(j) = peers
            .iter()
            .position(|q: &PeerSettings| q.address == s.address)
        {
            bail!("peers[{i}].peerIP: {} is already peers[{j}]", s.address);
        }
        peers.push(s);
    }
    let listen = match &spec.listen_addresses {
        None => vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            SocketAddr::new(
                "::".parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                port,
            ),
        ],
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, a)| {
                parse_ip(&format!("listenAddresses[{i}]"), a).map(|ip| SocketAddr::new(ip, port))
            })
            .collect::<Result<_>>()?,
    };
    let max_restart_time = peers
        .iter()
        .filter_map(|p| p.graceful_restart)
        .max()
        .map(|t| Duration::from_secs(u64::from(t)));
    if let Some(t) = max_restart_time {
        cfg.restart_defer = t;
    }
    Ok(Loaded {
        runtime: RuntimeConfig {
            speaker: cfg,
            peers,
            listen,
        },
        max_restart_time,
        fib,
    })
}

async fn run_async(args: Args) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let loaded = load(&args.config)?;
    std::fs::create_dir_all(&args.run_dir)
        .with_context(|| format!("cannot create the run dir {}", args.run_dir.display()))?;
    let state_ok = std::fs::create_dir_all(&args.state_dir).is_ok();
    if !state_ok {
        warn!(
            "cannot create the state dir {}: graceful restart will not be detected",
            args.state_dir.display()
        );
    }
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let fib = match &loaded.fib {
        None => None,
        Some(settings) => Some(crate::fib::service::spawn(settings.clone())?),
    };
    let mut routing = Routing::start(
        &loaded,
        state_ok.then_some(args.state_dir.as_path()),
        fib.as_ref().map(FibHandle::changes_sender),
    )
    .await?;
    let handle = routing.handle().clone();
    if let Some(fib) = &fib {
        let bound = if routing.restarting() {
            loaded.max_restart_time.unwrap_or(NOT_RESTARTING_SYNC_BOUND)
        } else {
            NOT_RESTARTING_SYNC_BOUND
        };
        tokio::spawn(watch_sync(
            handle.clone(),
            SyncDecision {
                restarting: routing.restarting(),
                bound,
            },
            fib.clone(),
        ));
    }
    info!(
        "tortie bgp: {} router id {}, {} peers, listening on {:?}",
        loaded.runtime.speaker.asn,
        loaded.runtime.speaker.router_id,
        loaded.runtime.peers.len(),
        handle.listen_addrs()
    );
    let sock = args.run_dir.join("agent.sock");
    let server = serve_status(&sock, handle.clone(), fib.clone())
        .with_context(|| format!("cannot serve status on {}", sock.display()))?;
    let result = loop {
        tokio::select! {
            _ = hup.recv() => {
                info!("SIGHUP: reloading {}", args.config.display());
                match load(&args.config) {
                    Ok(new) => {
                        if new.fib != loaded.fib {
                            warn!("fib changes need a restart; keeping the settings of the start");
                        }
                        match routing.reconfigure(&new).await {
                            Ok(ignored) => {
                                if ignored.listen.is_some() {
                                    warn!("listenAddresses/listenPort changes need a restart; keeping {:?}", handle.listen_addrs());
                                }
                                info!("configuration reloaded: {} peers", new.runtime.peers.len());
                            }
                            Err(e) => break Err(e),
                        }
                    }
                    Err(e) => error!("configuration not reloaded, keeping the running one: {e:#}"),
                }
            }
            _ = term.recv() => break Ok("SIGTERM"),
            _ = int.recv() => break Ok("SIGINT"),
            why = routing.stopped() => break Err(anyhow!("{why} unexpectedly")),
        }
    };
    server.abort();
    let _ = std::fs::remove_file(&sock);
    match result {
        Ok(sig) => {
            // Closing the sessions withdraws the peers' routes from the
            // RIB; the kernel must keep them (the next start is a graceful
            // restart for forwarding), so the FIB thread stops first.
            if let Some(fib) = &fib {
                if !fib.stop(Duration::from_secs(2)).await {
                    warn!("FIB: the FIB thread did not stop within 2 s; routes may be withdrawn from the kernel");
                }
            }
            info!("{sig}: closing every session (Cease / Administrative Shutdown)");
            routing.shutdown("tortie is shutting down", true).await;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn serve_status(
    path: &Path,
    handle: runtime::Handle,
    fib: Option<FibHandle>,
) -> Result<tokio::task::JoinHandle<()>> {
    status_client::serve_with(path, move |line| {
        let handle = handle.clone();
        let fib = fib.clone();
        async move { answer_status(&line, &handle, fib.as_ref()).await }
    })
}

async fn answer_status(line: &str, handle: &runtime::Handle, fib: Option<&FibHandle>) -> String {
    let err = |e: String| serde_json::json!({ "error": e }).to_string();
    let req: status_client::Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => return err(format!("bad request: {e}")),
    };
    if req.get != "status" {
        return err(format!(
            "unknown request {:?}; try {{\"get\":\"status\"}}",
            req.get
        ));
    }
    let report = match handle.status(req.routes).await {
        Ok(r) => r,
        Err(e) => return err(e.to_string()),
    };
    let mut status = status_client::status_document(&report);
    if let Some(fib) = fib {
        status.routes = fib.stats().route_status();
    }
    let mut doc = match serde_json::to_value(status) {
        Ok(v) => v,
        Err(e) => return err(e.to_string()),
    };
    if req.routes {
        if let (Some(obj), Ok(rib)) = (
            doc.as_object_mut(),
            serde_json::to_value(status_client::rib_document(&report)),
        ) {
            obj.insert("rib".into(), rib);
        }
    }
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(y: &str) -> Result<Loaded> {
        let s: SpeakerConfigSpec = serde_norway::from_str(y).map_err(|e| anyhow!("{e}"))?;
        convert(&s)
    }

    #[test]
    fn bad_peer_address_names_the_field() {
        let e = spec("asNumber: 64512\nrouterId: 192.0.2.11\npeers:\n  - {peerIP: 192.0.2.1, asNumber: 65001}\n  - {peerIP: 192.0.2.300, asNumber: 65002}\n")
            .expect_err("bad ip");
        assert_eq!(
            e.to_string(),
            "peers[1].peerIP: 192.0.2.300 is not an IP address"
        );
    }

    #[test]
    fn defaults_and_filters_convert() {
        let l = spec(
            "asNumber: 64512\nrouterId: 192.0.2.11\nholdTime: 9\npeers:\n  - peerIP: 192.0.2.1\n    asNumber: 65001\n    importFilters:\n      - {cidr: 10.244.0.0/16, matchOperator: In, prefixLength: {min: 16, max: 28}, action: Accept}\n      - {cidr: 0.0.0.0/0, matchOperator: Equal, action: Reject}\n",
        )
        .expect("valid");
        assert_eq!(l.runtime.listen.len(), 2);
        assert_eq!(l.runtime.listen[0].port(), 179);
        let p = &l.runtime.peers[0];
        assert_eq!(p.hold_time, 9);
        assert_eq!(p.import.rules.len(), 2);
        assert_eq!(p.families.len(), 2);
        assert_eq!(l.runtime.speaker.max_paths, 8);
    }

    #[test]
    fn bad_community_and_hold_time_are_explained() {
        let e = spec("asNumber: 1\nrouterId: 192.0.2.1\noriginate:\n  - {prefix: 10.0.0.0/8, communities: [\"70000:1\"]}\n")
            .expect_err("bad community");
        assert!(
            e.to_string().starts_with("originate[0].communities[0]:"),
            "{e}"
        );
        let e = spec("asNumber: 1\nrouterId: 192.0.2.1\npeers:\n  - {peerIP: 192.0.2.2, asNumber: 2, holdTime: 2}\n")
            .expect_err("bad hold");
        assert!(e.to_string().starts_with("peers[0].holdTime:"), "{e}");
        let e = spec("asNumber: 1\nrouterId: 192.0.2.1\noriginate:\n  - {prefix: 10.0.0.1/8}\n")
            .expect_err("host bits");
        assert!(e.to_string().contains("host bits"), "{e}");
    }

    #[test]
    fn fib_settings_convert() {
        let base = "asNumber: 1\nrouterId: 192.0.2.1\n";
        assert_eq!(spec(base).expect("valid").fib, None);
        assert!(!spec(base).expect("valid").runtime.speaker.track_fib);
        let l = spec(&format!("{base}fib: {{enabled: true}}\n")).expect("valid");
        assert_eq!(
            l.fib,
            Some(FibSettings {
                resync: Duration::from_secs(30),
                blackhole_originated: true,
                pools: vec![],
                underlay: None,
            })
        );
        assert!(l.runtime.speaker.track_fib);
        let e = spec(&format!("{base}fib: {{enabled: true, resyncSeconds: 0}}\n"))
            .expect_err("zero resync");
        assert!(e.to_string().starts_with("fib.resyncSeconds:"), "{e}");
    }
}
