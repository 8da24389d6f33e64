//! Decode speed of a full table: 1,000,000 IPv4 /24s packed densely into
//! 4096-octet UPDATEs. The criterion bench is the reference measurement;
//! this test is a coarse check that runs in release mode only:
//!
//! ```text
//! cargo test --release -p tortie-bgp --test wire_perf -- --ignored --nocapture
//! ```

use std::net::Ipv4Addr;
use std::time::Instant;

use tortie_bgp::wire::{
    messages, pack_announcements, AsPath, Asn, Family, Message, NextHop, NlriEntry, Origin,
    PathAttributes, Prefix, SessionContext,
};

fn table(n: u32) -> Vec<NlriEntry> {
    (0..n)
        .map(|i| {
            let p = Prefix::v4(Ipv4Addr::from((i + (1 << 24)) << 8), 24).expect("valid /24");
            NlriEntry::new(p)
        })
        .collect()
}

#[test]
#[ignore = "timing; run in release mode"]
fn decode_one_million_ipv4_prefixes() {
    let ctx = SessionContext::four_octet();
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence([Asn(64512), Asn(65001)])),
        ..PathAttributes::default()
    };
    let mut stream = Vec::new();
    let count = pack_announcements(
        &attrs,
        Family::IPV4_UNICAST,
        NextHop::V4(Ipv4Addr::new(192, 0, 2, 1)),
        table(1_000_000),
        &ctx,
        &mut stream,
    )
    .expect("packs");
    println!("{count} UPDATEs, {} octets", stream.len());

    let mut best = f64::MAX;
    for _ in 0..20 {
        let start = Instant::now();
        let mut prefixes = 0usize;
        let mut check = 0u64;
        for m in messages(&stream, &ctx) {
            let Ok(Message::Update(u)) = m else {
                panic!("not an update");
            };
            // Touch the whole prefix, or the optimiser skips building it.
            for (_, e) in u.announced_entries() {
                prefixes += 1;
                let addr = match e.prefix.addr() {
                    std::net::IpAddr::V4(a) => u64::from(u32::from(a)),
                    std::net::IpAddr::V6(a) => (u128::from(a) >> 64) as u64,
                };
                check = check.wrapping_add(addr ^ u64::from(e.prefix.prefix_len()));
            }
        }
        let t = start.elapsed().as_secs_f64() * 1e3;
        assert_eq!(prefixes, 1_000_000);
        std::hint::black_box(check);
        best = best.min(t);
    }
    println!("best of 20: {best:.2} ms for 1,000,000 prefixes");
}
