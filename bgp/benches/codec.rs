//! Codec throughput on a full table: decode 1M IPv4 /24 and 100k IPv6 /48
//! from densely packed UPDATEs, pack them with the codec's packer, and the
//! bare hand-written walker over the same IPv4 stream as the limit.
//!
//! Run: `cargo bench -p tortie-bgp --bench codec` (about a minute). Before
//! the timings it prints heap allocations per pass, counted by a wrapping
//! global allocator: decoding must allocate per message, never per prefix.
//! Figures and the table live in docs/benchmarks.md.

mod support;

use std::alloc::System;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tortie_bgp::wire::{
    messages, pack_announcements, AsPath, Asn, Community, Family, Message, NextHop, NlriEntry,
    Origin, PathAttributes, Prefix, SessionContext,
};

use support::{V4_PREFIXES, V6_PREFIXES};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The context both streams were built for: 4-octet AS, no ADD-PATH, no
/// extended messages.
fn ctx() -> SessionContext {
    SessionContext::four_octet()
}

/// Frame, decode and fold every announced prefix into (count, checksum),
/// the same checksum as [`support::bare_walk`].
fn decode_all(stream: &[u8], ctx: &SessionContext) -> (u64, u64) {
    let (mut count, mut sum) = (0u64, 0u64);
    for msg in messages(stream, ctx) {
        let Ok(Message::Update(update)) = msg else {
            panic!("the benchmark stream must decode: {msg:?}");
        };
        for (_, entry) in update.announced_entries() {
            let key = match entry.prefix.addr() {
                IpAddr::V4(a) => u64::from(u32::from(a)),
                // Fold the top 64 bits: enough to touch the whole prefix.
                IpAddr::V6(a) => (u128::from(a) >> 64) as u64,
            };
            sum = sum.wrapping_add(key ^ u64::from(entry.prefix.prefix_len()));
            count += 1;
        }
    }
    (count, sum)
}

fn attrs() -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence([Asn(65001), Asn(65002)])),
        multi_exit_disc: Some(10),
        communities: vec![Community::new(65001, 100)],
        ..PathAttributes::default()
    }
}

fn v4_entries() -> impl Iterator<Item = NlriEntry> {
    (0..V4_PREFIXES).map(|i| {
        let (addr, len) = support::v4_prefix(i);
        let prefix = Prefix::v4(addr, len).unwrap_or_else(|e| panic!("{e}"));
        NlriEntry::new(prefix)
    })
}

fn v6_entries() -> impl Iterator<Item = NlriEntry> {
    (0..V6_PREFIXES).map(|i| {
        let mut octets = [0u8; 16];
        octets[..6].copy_from_slice(&support::v6_prefix_octets(i));
        let prefix = Prefix::v6(Ipv6Addr::from(octets), 48).unwrap_or_else(|e| panic!("{e}"));
        NlriEntry::new(prefix)
    })
}

fn pack_v4(out: &mut Vec<u8>, ctx: &SessionContext) -> usize {
    let nh = NextHop::V4(Ipv4Addr::new(192, 0, 2, 1));
    pack_announcements(&attrs(), Family::IPV4_UNICAST, nh, v4_entries(), ctx, out)
        .unwrap_or_else(|e| panic!("packing IPv4: {e}"))
}

fn pack_v6(out: &mut Vec<u8>, ctx: &SessionContext) -> usize {
    let nh = NextHop::V6 {
        global: Ipv6Addr::from(support::V6_NEXT_HOP),
        link_local: None,
    };
    pack_announcements(&attrs(), Family::IPV6_UNICAST, nh, v6_entries(), ctx, out)
        .unwrap_or_else(|e| panic!("packing IPv6: {e}"))
}

/// Checks the streams decode to what was packed and that neither decoding
/// nor packing allocates per prefix; prints the counts for
/// docs/benchmarks.md.
fn check_and_count_allocations() {
    let ctx = ctx();
    let (v4, v4_msgs) = support::v4_stream();
    let (v6, v6_msgs) = support::v6_stream();
    let bare = support::bare_walk(&v4).unwrap_or_else(|| panic!("bare walker rejected the stream"));
    assert_eq!(bare.0, u64::from(V4_PREFIXES));
    assert_eq!(
        decode_all(&v4, &ctx),
        bare,
        "codec and bare walker disagree"
    );
    assert_eq!(decode_all(&v6, &ctx).0, u64::from(V6_PREFIXES));

    let mut out = Vec::with_capacity(v4.len() + 4096);
    let packed_v4 = pack_v4(&mut out, &ctx);
    assert_eq!(
        decode_all(&out, &ctx),
        bare,
        "packed IPv4 decodes differently"
    );
    println!(
        "codec: IPv4 stream {} bytes in {v4_msgs} UPDATEs; packer made {packed_v4} UPDATEs, \
         {} bytes, identical to the hand-built stream: {}",
        v4.len(),
        out.len(),
        out == v4
    );
    out.clear();
    let packed_v6 = pack_v6(&mut out, &ctx);
    println!(
        "codec: IPv6 stream {} bytes in {v6_msgs} UPDATEs; packer made {packed_v6} UPDATEs, \
         {} bytes, identical to the hand-built stream: {}",
        v6.len(),
        out.len(),
        out == v6
    );

    let measure = |what: &str, messages: usize, prefixes: u32, f: &mut dyn FnMut()| {
        let region = Region::new(GLOBAL);
        f();
        let stats = region.change();
        println!(
            "codec: allocations: {what}: {} allocations, {} reallocations, {} bytes \
             for {prefixes} prefixes in {messages} messages ({:.2} per message)",
            stats.allocations,
            stats.reallocations,
            stats.bytes_allocated,
            (stats.allocations + stats.reallocations) as f64 / messages as f64,
        );
        // O(messages), not O(prefixes): a handful per UPDATE at most.
        assert!(
            stats.allocations + stats.reallocations <= 16 * messages + 64,
            "{what}: allocations grow with prefixes"
        );
    };
    measure("decode IPv4", v4_msgs, V4_PREFIXES, &mut || {
        black_box(decode_all(&v4, &ctx));
    });
    measure("decode IPv6", v6_msgs, V6_PREFIXES, &mut || {
        black_box(decode_all(&v6, &ctx));
    });
    // The output buffer is reused, as a sender would reuse its own.
    measure(
        "pack IPv4 (reused buffer)",
        v4_msgs,
        V4_PREFIXES,
        &mut || {
            out.clear();
            black_box(pack_v4(&mut out, &ctx));
        },
    );
    measure(
        "pack IPv6 (reused buffer)",
        v6_msgs,
        V6_PREFIXES,
        &mut || {
            out.clear();
            black_box(pack_v6(&mut out, &ctx));
        },
    );
    measure("bare walker IPv4", v4_msgs, V4_PREFIXES, &mut || {
        black_box(support::bare_walk(&v4));
    });
}

fn bench(c: &mut Criterion) {
    let ctx = ctx();
    let (v4, _) = support::v4_stream();
    let (v6, _) = support::v6_stream();

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(u64::from(V4_PREFIXES)));
    g.bench_function(BenchmarkId::new("ipv4_24", V4_PREFIXES), |b| {
        b.iter(|| decode_all(black_box(&v4), &ctx))
    });
    g.bench_function(BenchmarkId::new("bare_walker_ipv4_24", V4_PREFIXES), |b| {
        b.iter(|| support::bare_walk(black_box(&v4)))
    });
    g.throughput(Throughput::Elements(u64::from(V6_PREFIXES)));
    g.bench_function(BenchmarkId::new("ipv6_48", V6_PREFIXES), |b| {
        b.iter(|| decode_all(black_box(&v6), &ctx))
    });
    g.finish();

    let mut out = Vec::with_capacity(v4.len() + 4096);
    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Elements(u64::from(V4_PREFIXES)));
    g.bench_function(BenchmarkId::new("ipv4_24", V4_PREFIXES), |b| {
        b.iter(|| {
            out.clear();
            pack_v4(&mut out, &ctx)
        })
    });
    g.throughput(Throughput::Elements(u64::from(V6_PREFIXES)));
    g.bench_function(BenchmarkId::new("ipv6_48", V6_PREFIXES), |b| {
        b.iter(|| {
            out.clear();
            pack_v6(&mut out, &ctx)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // Modest run time: 20 samples, 3 s each group member.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}

fn main() {
    check_and_count_allocations();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
