//! RIB ingestion at full-table scale: 1,000,000 IPv4 prefixes from one
//! eBGP peer, in UPDATE-sized batches (1,000 /24s sharing one attribute
//! set, 1,000 distinct sets), as a speaker would feed decoded UPDATEs.
//!
//! Run: `cargo bench -p tortie-bgp --bench rib`. Before the criterion
//! timings it prints one cold pass per scenario with its wall time and
//! the heap it holds afterwards per route, counted by a wrapping global
//! allocator (bytes allocated minus bytes freed). Figures and the table
//! live in docs/benchmarks.md ("BGP RIB").

use std::alloc::System;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, BatchSize, Criterion};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tortie_bgp::rib::{PathAttrs, PeerConfig, Rib, RibConfig, Session};
use tortie_bgp::wire::{AsPath, Asn, Community, NextHop, NlriEntry, Origin, Prefix};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const ROUTES: u32 = 1_000_000;
const PER_UPDATE: usize = 1_000;
const PEER_ASN: u32 = 65001;

/// The decoded UPDATEs: (attributes, NLRI) batches.
fn updates() -> Vec<(PathAttrs, Vec<NlriEntry>)> {
    let prefixes: Vec<NlriEntry> = (0..ROUTES)
        .map(|i| {
            // 1.0.0.0/24 upward: distinct /24s across 1/8..16/8.
            let addr = Ipv4Addr::from((1u32 << 24) + (i << 8));
            NlriEntry::new(Prefix::v4(addr, 24).unwrap_or_else(|e| panic!("{e}")))
        })
        .collect();
    prefixes
        .chunks(PER_UPDATE)
        .enumerate()
        .map(|(n, chunk)| {
            let n = u32::try_from(n).unwrap_or(0);
            let attrs = PathAttrs {
                origin: Origin::Igp,
                as_path: AsPath::from_sequence([
                    Asn(PEER_ASN),
                    Asn(64_600 + n % 50),
                    Asn(100_000 + n),
                ]),
                next_hop: Some(NextHop::V4(Ipv4Addr::new(198, 51, 100, 1))),
                med: Some(n % 7),
                communities: vec![Community::new(65001, (n % 100) as u16)],
                ..PathAttrs::local()
            };
            (attrs, chunk.to_vec())
        })
        .collect()
}

struct Setup {
    rib: Rib,
    source: tortie_bgp::rib::PeerId,
}

/// A RIB with the source peer up and, when `export`, one more eBGP peer
/// Established so every route is also exported into its Adj-RIB-Out.
fn setup(track_fib: bool, export: bool) -> Setup {
    let mut cfg = RibConfig::new(Asn(65000), Ipv4Addr::new(10, 0, 0, 1));
    cfg.track_fib = track_fib;
    let mut rib = Rib::new(cfg);
    let session = |id: u8| Session {
        router_id: Ipv4Addr::new(10, 0, 0, id),
        local_v4: Some(Ipv4Addr::new(198, 51, 100, 254)),
        local_v6: None,
    };
    let source = rib.add_peer(PeerConfig::new(
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
        Asn(PEER_ASN),
    ));
    rib.peer_up(source, session(2))
        .unwrap_or_else(|e| panic!("{e}"));
    if export {
        let other = rib.add_peer(PeerConfig::new(
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
            Asn(65007),
        ));
        rib.peer_up(other, session(7))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    Setup { rib, source }
}

fn ingest(s: &mut Setup, ups: &[(PathAttrs, Vec<NlriEntry>)]) {
    for (attrs, nlri) in ups {
        let o = s
            .rib
            .announce(s.source, attrs.clone(), nlri.iter().copied())
            .unwrap_or_else(|e| panic!("{e}"));
        debug_assert_eq!(o.accepted as usize, nlri.len());
    }
}

struct Scenario {
    name: &'static str,
    track_fib: bool,
    export: bool,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "loc-rib only",
        track_fib: false,
        export: false,
    },
    Scenario {
        name: "loc-rib + FIB queue (drained)",
        track_fib: true,
        export: false,
    },
    Scenario {
        name: "loc-rib + FIB queue + 1 eBGP Adj-RIB-Out",
        track_fib: true,
        export: true,
    },
];

/// CPU time (user + system) of this thread so far, from
/// /proc/thread-self/stat (clock ticks, 100 Hz on Linux): less sensitive
/// than wall time to other processes sharing the two cores.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// One cold pass per scenario: wall and CPU time, retained heap per route.
fn cold_passes(ups: &[(PathAttrs, Vec<NlriEntry>)]) {
    println!("| scenario | ingest 1M (wall / CPU) | heap held / route | FIB drain | peer down |");
    println!("|---|---|---|---|---|");
    for sc in &SCENARIOS {
        let region = Region::new(GLOBAL);
        let mut s = setup(sc.track_fib, sc.export);
        let (t, cpu) = (Instant::now(), thread_cpu());
        ingest(&mut s, ups);
        let (ingest_time, ingest_cpu) = (t.elapsed(), thread_cpu() - cpu);
        let t = Instant::now();
        let fib = s.rib.take_fib_changes();
        let drain = t.elapsed();
        assert_eq!(fib.len(), if sc.track_fib { ROUTES as usize } else { 0 });
        drop(fib);
        let stats = region.change();
        // stats_alloc already books realloc growth/shrink into these two.
        let held = stats.bytes_allocated as f64 - stats.bytes_deallocated as f64;
        assert_eq!(s.rib.len(), ROUTES as usize);
        let t = Instant::now();
        let down = s.rib.peer_down(s.source).unwrap_or_else(|e| panic!("{e}"));
        let down_time = t.elapsed();
        assert_eq!(down.removed, ROUTES);
        println!(
            "| {} | {:.3} s / {:.2} s | {:.0} B | {:.3} s | {:.3} s |",
            sc.name,
            ingest_time.as_secs_f64(),
            ingest_cpu.as_secs_f64(),
            held / f64::from(ROUTES),
            drain.as_secs_f64(),
            down_time.as_secs_f64(),
        );
    }
}

fn bench(c: &mut Criterion) {
    let ups = updates();
    let mut g = c.benchmark_group("rib_ingest_1m_ipv4");
    for sc in &SCENARIOS {
        g.bench_function(sc.name, |b| {
            b.iter_batched(
                || setup(sc.track_fib, sc.export),
                |mut s| {
                    ingest(&mut s, &ups);
                    black_box(s.rib.take_fib_changes().len());
                    s
                },
                BatchSize::PerIteration,
            );
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // Each iteration ingests a million routes: few samples.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    targets = bench
}

fn main() {
    cold_passes(&updates());
    benches();
    Criterion::default().configure_from_args().final_summary();
}
