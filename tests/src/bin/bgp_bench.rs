//! `bgp_bench`: how fast tortie's speaker, BIRD 2 and GoBGP take in a full
//! table over a real TCP session, and what it costs them.
//!
//! A bench, not a test: run it by hand (as root), never from the suite.
//!
//! ```text
//!   ns "feed"                                 ns "spk"
//!   ┌──────────────────────────────┐   veth   ┌────────────────────────────┐
//!   │ feeder (this process, via    │──────────│ speaker under test:        │
//!   │ setns): 192.0.2.1, and       │          │ tortie bgp | bird | gobgpd │
//!   │ 192.0.2.100-199 for N peers  │          │ 192.0.2.2, AS 65000        │
//!   └──────────────────────────────┘          └────────────────────────────┘
//! ```
//!
//! For each speaker and workload the feeder opens the session(s), encodes
//! every UPDATE up front with tortie's wire codec, then starts the clock at
//! the first byte of the first UPDATE and stops it when the speaker reports
//! holding every route (tortie: `tortie status` prefix counters; BIRD:
//! `birdc show route count`; GoBGP: `gobgp global rib summary`). Peak RSS
//! is VmHWM and CPU is utime+stime of the speaker's PID, both from /proc.
//!
//! Usage: `bgp_bench [--quick] [--only tortie,bird,gobgp] [--skip-1m]
//! [--fanout 1,10,100] [--fanout-only]` (`--quick`: 10k/100k instead of
//! 100k/1M, 1k routes per fan-out peer instead of 10k).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tortie_bgp::wire::{
    pack_announcements, AsPath, Asn, Family, NextHop, NlriEntry, Origin, PathAttributes, Prefix,
    Update,
};
use tortie_integration::bgp_testpeer::{test_open, Feeder};
use tortie_integration::bird::Bird;
use tortie_integration::gobgp::Gobgp;
use tortie_integration::tortie_bgp::Tortie;
use tortie_integration::{require_netns, run_with_timeout, veth, Netns};

const SPEAKER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const SPEAKER_AS: u32 = 65000;
const FEEDER_AS: u32 = 65001;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Tortie,
    Bird,
    Gobgp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tortie => "tortie",
            Kind::Bird => "bird",
            Kind::Gobgp => "gobgp",
        }
    }
}

/// One workload: `peers` sessions each sending the same `routes` IPv4
/// /24s; `path_every`: a distinct AS path every that many prefixes (0 =
/// one AS path for all, densely packed UPDATEs).
#[derive(Debug, Clone, Copy)]
struct Workload {
    routes: u32,
    path_every: u32,
    peers: u32,
}

impl Workload {
    fn label(&self) -> String {
        let n = human(self.routes);
        let p = if self.path_every == 0 {
            "dense".to_string()
        } else {
            format!("path/{}", self.path_every)
        };
        if self.peers == 1 {
            format!("{n} {p}")
        } else {
            format!("{}x{n} {p}", self.peers)
        }
    }

    fn total_paths(&self) -> u64 {
        u64::from(self.routes) * u64::from(self.peers)
    }
}

fn human(n: u32) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

#[derive(Debug, Clone)]
struct Measure {
    secs: f64,
    rss_kib: u64,
    cpu_secs: f64,
}

fn feeder_addr(i: u32) -> Ipv4Addr {
    if i == 0 {
        Ipv4Addr::new(192, 0, 2, 1)
    } else {
        Ipv4Addr::new(192, 0, 2, u8::try_from(99 + i).unwrap_or(199))
    }
}

/// The UPDATE stream of one peer: prefixes 16.0.0.0/24 upwards.
fn encode_stream(w: &Workload, peer: u32) -> Result<Vec<u8>> {
    let ctx = tortie_bgp::wire::SessionContext::four_octet();
    let nh = feeder_addr(peer);
    let mut out = Vec::new();
    let group = if w.path_every == 0 {
        w.routes
    } else {
        w.path_every
    };
    let mut start = 0u32;
    while start < w.routes {
        let end = (start + group).min(w.routes);
        let mut asns = vec![Asn(FEEDER_AS)];
        if let Some(group_no) = start.checked_div(w.path_every) {
            asns.push(Asn(4_200_000_000 + group_no));
        }
        let attrs = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(asns)),
            ..Default::default()
        };
        let routes = (start..end)
            .map(|i| {
                let a = Ipv4Addr::from(0x1000_0000u32 + (i << 8));
                Ok(NlriEntry::new(Prefix::v4(a, 24)?))
            })
            .collect::<Result<Vec<_>>>()?;
        pack_announcements(
            &attrs,
            Family::IPV4_UNICAST,
            NextHop::V4(nh),
            routes,
            &ctx,
            &mut out,
        )?;
        start = end;
    }
    let eor = tortie_bgp::wire::Message::Update(Update::end_of_rib(Family::IPV4_UNICAST));
    out.extend_from_slice(&eor.encode(&ctx)?);
    Ok(out)
}

fn proc_stats(pid: u32) -> Result<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`, which may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let hz = run_with_timeout(
        std::process::Command::new("getconf").arg("CLK_TCK"),
        Duration::from_secs(5),
    )
    .ok()
    .and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<f64>()
            .ok()
    })
    .unwrap_or(100.0);
    Ok((rss, ticks as f64 / hz))
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

enum Speaker {
    Tortie(Tortie),
    Bird(Bird),
    Gobgp(Gobgp),
}

impl Speaker {
    fn start(kind: Kind, ns: &Netns, peers: u32) -> Result<Self> {
        Ok(match kind {
            Kind::Tortie => {
                let mut cfg = format!(
                    "asNumber: {SPEAKER_AS}\nrouterId: {SPEAKER}\nlistenAddresses: [\"{SPEAKER}\"]\nholdTime: 240\nmaxEcmpPaths: 1\nlogNeighborChanges: false\noriginate: []\npeers:\n"
                );
                for i in 0..peers {
                    let _ = writeln!(
                        cfg,
                        "  - {{name: feed{i}, peerIP: {}, asNumber: {FEEDER_AS}, passive: true, families: [IPv4], holdTime: 240, exportFilters: [{{cidr: 0.0.0.0/0, matchOperator: In, action: Reject}}]}}",
                        feeder_addr(i)
                    );
                }
                Speaker::Tortie(Tortie::start(ns, &cfg)?)
            }
            Kind::Bird => {
                let mut cfg = format!("router id {SPEAKER};\nprotocol device {{ }}\n");
                for i in 0..peers {
                    let _ = writeln!(
                        cfg,
                        "protocol bgp feed{i} {{ local {SPEAKER} as {SPEAKER_AS}; neighbor {} as {FEEDER_AS}; passive on; hold time 240; ipv4 {{ import all; export none; }}; }}",
                        feeder_addr(i)
                    );
                }
                Speaker::Bird(Bird::start(ns, &cfg)?)
            }
            Kind::Gobgp => {
                let mut cfg = format!(
                    "[global.config]\n  as = {SPEAKER_AS}\n  router-id = \"{SPEAKER}\"\n  local-address-list = [\"{SPEAKER}\"]\n"
                );
                for i in 0..peers {
                    let _ = write!(
                        cfg,
                        "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {FEEDER_AS}\n  [neighbors.transport.config]\n    passive-mode = true\n  [neighbors.timers.config]\n    hold-time = 240\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n",
                        feeder_addr(i)
                    );
                }
                Speaker::Gobgp(Gobgp::start(ns, &cfg)?)
            }
        })
    }

    fn pid(&self) -> u32 {
        match self {
            Speaker::Tortie(t) => t.pid(),
            Speaker::Bird(b) => b.pid(),
            Speaker::Gobgp(g) => g.pid(),
        }
    }

    /// Paths the speaker holds (all peers).
    fn paths(&self) -> Result<u64> {
        match self {
            Speaker::Tortie(t) => {
                let st = t.status_summary()?;
                Ok(st
                    .peers
                    .iter()
                    // Accepted = held in the Adj-RIB-In after import
                    // policy (the RIB's own count).
                    .map(|p| p.prefixes_accepted)
                    .sum())
            }
            Speaker::Bird(b) => {
                let text = b.birdc(&["show", "route", "count"])?;
                // `A of B routes for C networks in table T`: B counts every
                // route, not only the best per network.
                Ok(text
                    .lines()
                    .filter(|l| l.contains(" in table "))
                    .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
                    .sum())
            }
            Speaker::Gobgp(g) => g.rib_paths("ipv4"),
        }
    }
}

fn run_one(kind: Kind, w: &Workload) -> Result<Measure> {
    let feed = Netns::new("bfeed")?;
    let spk = Netns::new("bspk")?;
    veth(&feed, "feed0", "192.0.2.1/24", &spk, "spk0", "192.0.2.2/24")?;
    for i in 1..w.peers {
        feed.run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", feeder_addr(i)),
                "dev",
                "feed0",
            ],
        )?;
    }
    let speaker = Speaker::start(kind, &spk, w.peers)?;
    let pid = speaker.pid();
    // The PID must be the speaker's own (not a wrapper's): CPU and RSS
    // are read from it. comm is the executable's name, cut to 15 bytes.
    let tortie_name = tortie_integration::tortie_bgp::tortie_binary()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "tortie".into());
    let want_comm: String = match kind {
        Kind::Tortie => tortie_name.chars().take(15).collect(),
        Kind::Bird => "bird".into(),
        Kind::Gobgp => "gobgpd".into(),
    };
    if comm(pid) != want_comm {
        bail!("PID {pid} is {:?}, not {want_comm}", comm(pid));
    }
    let streams: Vec<Vec<u8>> = (0..w.peers)
        .map(|i| encode_stream(w, i))
        .collect::<Result<_>>()?;
    let mut feeders = Vec::new();
    for i in 0..w.peers {
        let f = Feeder::connect(
            feed.name(),
            IpAddr::V4(feeder_addr(i)),
            SocketAddr::new(IpAddr::V4(SPEAKER), 179),
            test_open(FEEDER_AS, feeder_addr(i), 240),
            Duration::from_secs(30),
        )
        .with_context(|| format!("{}: session {i}", kind.name()))?;
        feeders.push(f);
    }
    let want = w.total_paths();
    let t0 = Instant::now();
    let senders: Vec<_> = feeders
        .into_iter()
        .zip(streams)
        .map(|(mut f, s)| {
            std::thread::spawn(move || -> Result<Feeder> {
                f.send(&s)?;
                Ok(f)
            })
        })
        .collect();
    let deadline = t0 + Duration::from_secs(900);
    let mut last = 0;
    loop {
        let n = speaker.paths().unwrap_or(last);
        last = n;
        if n >= want {
            break;
        }
        if Instant::now() > deadline {
            bail!("{}: {} of {want} paths after 900 s", kind.name(), n);
        }
        // Resolution of the figures: one poll (a CLI call, a few ms) plus
        // this pause.
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = t0.elapsed().as_secs_f64();
    let (rss_kib, cpu_secs) = proc_stats(pid)?;
    let mut keep = Vec::new();
    for s in senders {
        match s.join() {
            Ok(Ok(f)) => keep.push(f),
            Ok(Err(e)) => return Err(e.context("feeder")),
            Err(_) => bail!("feeder thread panicked"),
        }
    }
    drop(keep);
    drop(speaker);
    Ok(Measure {
        secs,
        rss_kib,
        cpu_secs,
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !require_netns("bgp_bench", &["bird", "birdc", "gobgpd", "gobgp"]) {
        bail!("bgp_bench needs root and the BGP tools");
    }
    let quick = args.iter().any(|a| a == "--quick");
    let skip_big = args.iter().any(|a| a == "--skip-1m");
    let only: Vec<Kind> = match args.iter().position(|a| a == "--only") {
        Some(i) => args
            .get(i + 1)
            .map(|s| s.split(',').collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|k| match k {
                "tortie" => Some(Kind::Tortie),
                "bird" => Some(Kind::Bird),
                "gobgp" => Some(Kind::Gobgp),
                _ => None,
            })
            .collect(),
        None => vec![Kind::Tortie, Kind::Bird, Kind::Gobgp],
    };
    let (small, big) = if quick {
        (10_000, 100_000)
    } else {
        (100_000, 1_000_000)
    };
    let mut tables: Vec<Workload> = vec![
        Workload {
            routes: small,
            path_every: 0,
            peers: 1,
        },
        Workload {
            routes: small,
            path_every: 10,
            peers: 1,
        },
    ];
    if !skip_big {
        tables.push(Workload {
            routes: big,
            path_every: 0,
            peers: 1,
        });
        tables.push(Workload {
            routes: big,
            path_every: 10,
            peers: 1,
        });
    }
    let peer_counts: Vec<u32> = match args.iter().position(|a| a == "--fanout") {
        Some(i) => args
            .get(i + 1)
            .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default(),
        None => vec![1, 10, 100],
    };
    if peer_counts.iter().any(|&n| n == 0 || n > 100) {
        bail!("--fanout: peer counts must be 1..=100 (one feeder address each)");
    }
    let fanout: Vec<Workload> = peer_counts
        .iter()
        .map(|&peers| Workload {
            routes: if quick { 1000 } else { 10_000 },
            path_every: 0,
            peers,
        })
        .collect();
    if args.iter().any(|a| a == "--fanout-only") {
        tables.clear();
    }
    let mut results: BTreeMap<(String, Kind), Measure> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for w in tables.iter().chain(fanout.iter()) {
        order.push(w.label());
        for &k in &only {
            eprintln!("bgp_bench: {} <- {}", k.name(), w.label());
            match run_one(k, w) {
                Ok(m) => {
                    eprintln!(
                        "bgp_bench:   {:.2} s, {} MiB peak RSS, {:.2} CPU s",
                        m.secs,
                        m.rss_kib / 1024,
                        m.cpu_secs
                    );
                    results.insert((w.label(), k), m);
                }
                Err(e) => eprintln!("bgp_bench:   {} failed: {e:#}", k.name()),
            }
        }
    }

    // The table: one row per workload, per speaker time / RSS / CPU, and
    // the other speakers' time relative to tortie's.
    let mut out = String::new();
    let _ = write!(out, "| workload |");
    for k in &only {
        let _ = write!(
            out,
            " {0} time s | {0} peak RSS MiB | {0} CPU s |",
            k.name()
        );
    }
    for k in only.iter().filter(|k| **k != Kind::Tortie) {
        let _ = write!(out, " {} / tortie time |", k.name());
    }
    out.push('\n');
    let cols = 1 + only.len() * 3 + only.iter().filter(|k| **k != Kind::Tortie).count();
    out.push_str(&"|---".repeat(cols));
    out.push_str("|\n");
    for label in &order {
        let _ = write!(out, "| {label} |");
        for k in &only {
            match results.get(&(label.clone(), *k)) {
                Some(m) => {
                    let _ = write!(
                        out,
                        " {:.2} | {} | {:.2} |",
                        m.secs,
                        m.rss_kib / 1024,
                        m.cpu_secs
                    );
                }
                None => out.push_str(" failed | - | - |"),
            }
        }
        for k in only.iter().filter(|k| **k != Kind::Tortie) {
            let t = results.get(&(label.clone(), Kind::Tortie));
            let o = results.get(&(label.clone(), *k));
            match (t, o) {
                (Some(t), Some(o)) if t.secs > 0.0 => {
                    let _ = write!(out, " {:.2}x |", o.secs / t.secs);
                }
                _ => out.push_str(" - |"),
            }
        }
        out.push('\n');
    }
    // Fan-out: time per path relative to one peer (1.0 = linear).
    let _ = writeln!(out, "\nfan-out (same routes from N peers), time per path relative to 1 peer (<= 1.0: no worse than linear):\n");
    let _ = writeln!(
        out,
        "| speaker | {} |",
        fanout
            .iter()
            .map(Workload::label)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(out, "|---{}|", "|---".repeat(fanout.len()));
    for k in &only {
        let base = fanout.first().and_then(|f| {
            results
                .get(&(f.label(), *k))
                .map(|m| m.secs / f.total_paths() as f64)
        });
        let _ = write!(out, "| {} |", k.name());
        for w in &fanout {
            match (results.get(&(w.label(), *k)), base) {
                (Some(m), Some(b)) if b > 0.0 => {
                    let per = m.secs / w.total_paths() as f64;
                    let _ = write!(out, " {:.2} s ({:.2}) |", m.secs, per / b);
                }
                _ => out.push_str(" - |"),
            }
        }
        out.push('\n');
    }
    println!("{out}");
    Ok(())
}
