//! The decoder allocates per message, never per prefix: a full table of
//! 1M IPv4 /24 (and 100k IPv6 /48) in densely packed UPDATEs, decoded
//! and iterated under a counting global allocator, must cost a bounded
//! number of allocations per UPDATE. The streams and the bare walker are
//! the codec benchmark's (`benches/support`); `cargo bench -p tortie-bgp
//! --bench codec` prints the exact counts.
//!
//! One test in this binary on purpose: the allocator is process-wide.

#[path = "../benches/support/mod.rs"]
mod support;

use std::alloc::System;
use std::net::IpAddr;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tortie_bgp::wire::{messages, Message, SessionContext};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Decodes a stream and folds every announced prefix into (count,
/// checksum), the checksum of [`support::bare_walk`].
fn decode_all(stream: &[u8], ctx: &SessionContext) -> (u64, u64) {
    let (mut count, mut sum) = (0u64, 0u64);
    for msg in messages(stream, ctx) {
        let Ok(Message::Update(update)) = msg else {
            panic!("the table must decode: {msg:?}");
        };
        for (_, entry) in update.announced_entries() {
            let key = match entry.prefix.addr() {
                IpAddr::V4(a) => u64::from(u32::from(a)),
                IpAddr::V6(a) => (u128::from(a) >> 64) as u64,
            };
            sum = sum.wrapping_add(key ^ u64::from(entry.prefix.prefix_len()));
            count += 1;
        }
    }
    (count, sum)
}

#[test]
fn decoding_a_full_table_allocates_per_message_not_per_prefix() {
    let ctx = SessionContext::four_octet();
    for (name, (stream, updates), prefixes) in [
        ("IPv4 /24", support::v4_stream(), support::V4_PREFIXES),
        ("IPv6 /48", support::v6_stream(), support::V6_PREFIXES),
    ] {
        let region = Region::new(GLOBAL);
        let (count, sum) = decode_all(&stream, &ctx);
        let stats = region.change();
        assert_eq!(count, u64::from(prefixes), "{name}");
        if name.starts_with("IPv4") {
            assert_eq!(support::bare_walk(&stream), Some((count, sum)), "{name}");
        }
        let allocs = stats.allocations + stats.reallocations;
        println!("{name}: {allocs} allocations for {prefixes} prefixes in {updates} UPDATEs");
        assert!(
            allocs <= 16 * updates + 64,
            "{name}: {allocs} allocations for {updates} UPDATEs: allocation per prefix?"
        );
    }
}
