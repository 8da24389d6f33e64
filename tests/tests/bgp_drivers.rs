//! Self-test of the BGP drivers (tests/src/bird.rs, gobgp.rs): BIRD and
//! GoBGP peer with each other and exchange routes, and each driver reads
//! the other side's attributes back. No tortie involved: when this fails,
//! the drivers (or the tools) are at fault, not the speaker.
//!
//! ```text
//!   ns "bird"                               ns "gobgp"
//!   ┌─────────────────────────┐   veth    ┌─────────────────────────┐
//!   │ BIRD  AS 4200000001     │───────────│ gobgpd AS 4200000002    │
//!   │ 192.0.2.1  2001:db8::1  │           │ 192.0.2.2  2001:db8::2  │
//!   │ static 10.244.1.0/24    │           │ rib add 10.245.1.0/24   │
//!   │        fd00:1::/64      │           │         fd00:2::/64     │
//!   └─────────────────────────┘           └─────────────────────────┘
//! ```

use std::time::Duration;

use anyhow::Result;
use tortie_integration::bgp_util::link;
use tortie_integration::bird::{Bird, FAST_TIMERS};
use tortie_integration::gobgp::{path_for, Gobgp};
use tortie_integration::{require_netns, wait_for, Netns};

const T: Duration = Duration::from_secs(30);

fn bird_conf() -> String {
    format!(
        r#"log stderr all;
router id 192.0.2.1;
protocol device {{ }}
protocol static s4 {{ ipv4; route 10.244.1.0/24 blackhole; }}
protocol static s6 {{ ipv6; route fd00:1::/64 blackhole; }}
protocol bgp gobgp {{
    local 192.0.2.1 as 4200000001;
    neighbor 192.0.2.2 as 4200000002;
    hold time 6; {FAST_TIMERS}
    ipv4 {{ import all; export filter {{
        bgp_med = 10; bgp_community.add((65000, 1));
        bgp_large_community.add((4200000001, 1, 2)); accept; }}; }};
    ipv6 {{ import all; export all; next hop address 2001:db8::1; }};
}}
"#
    )
}

const GOBGP: &str = r#"[global.config]
  as = 4200000002
  router-id = "192.0.2.2"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.1"
    peer-as = 4200000001
  [neighbors.timers.config]
    hold-time = 6
    connect-retry = 1
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#;

#[test]
fn bird_and_gobgp_exchange_routes() -> Result<()> {
    if !require_netns(
        "bird_and_gobgp_exchange_routes",
        &["bird", "birdc", "gobgpd", "gobgp"],
    ) {
        return Ok(());
    }
    let a = Netns::new("drvb")?;
    let b = Netns::new("drvg")?;
    link(&a, "va", 1, &b, "vb", 2)?;
    let gobgp = Gobgp::start(&b, GOBGP)?;
    gobgp.add_route(
        "ipv4",
        "10.245.1.0/24",
        &[
            "nexthop",
            "192.0.2.2",
            "med",
            "5",
            "community",
            "65000:2",
            "large-community",
            "4200000002:3:4",
            "aspath",
            "65010 4200000010",
        ],
    )?;
    gobgp.add_route("ipv6", "fd00:2::/64", &["nexthop", "2001:db8::2"])?;
    let bird = Bird::start(&a, &bird_conf())?;

    let p = bird.wait_established("gobgp", T)?;
    assert_eq!(p.neighbor_as, Some(4_200_000_002));
    assert_eq!(p.hold_time, Some(6));
    gobgp.wait_established("192.0.2.1", T)?;

    // BIRD's view of GoBGP's routes.
    wait_for("BIRD has GoBGP's 2 routes", T, || {
        (bird.imported("gobgp").ok()? == 2).then_some(())
    })?;
    let r = bird.routes_for("10.245.1.0/24")?;
    let r = r.first().ok_or_else(|| anyhow::anyhow!("no route"))?;
    assert_eq!(r.proto, "gobgp");
    assert_eq!(r.as_path, vec![4_200_000_002, 65010, 4_200_000_010]);
    assert_eq!(r.next_hop, vec!["192.0.2.2"]);
    assert_eq!(r.med, Some(5));
    assert_eq!(r.communities, vec!["65000:2"]);
    assert_eq!(r.large_communities, vec!["4200000002:3:4"]);
    let r6 = bird.routes_for("fd00:2::/64")?;
    assert_eq!(
        r6.first().map(|r| r.as_path.clone()),
        Some(vec![4_200_000_002])
    );

    // GoBGP's view of BIRD's routes.
    let rib = wait_for("GoBGP has BIRD's IPv4 route", T, || {
        let rib = gobgp.rib("ipv4").ok()?;
        rib.iter()
            .any(|p| p.prefix == "10.244.1.0/24")
            .then_some(rib)
    })?;
    let g = path_for(&rib, "10.244.1.0/24")?;
    assert_eq!(g.as_path, vec![4_200_000_001]);
    assert_eq!(g.next_hop.as_deref(), Some("192.0.2.1"));
    assert_eq!(g.med, Some(10));
    assert_eq!(g.communities, vec!["65000:1"]);
    assert_eq!(g.large_communities, vec!["4200000001:1:2"]);
    assert_eq!(g.neighbor.as_deref(), Some("192.0.2.1"));
    let rib6 = wait_for("GoBGP has BIRD's IPv6 route", T, || {
        let rib = gobgp.rib("ipv6").ok()?;
        rib.iter().any(|p| p.prefix == "fd00:1::/64").then_some(rib)
    })?;
    assert_eq!(
        path_for(&rib6, "fd00:1::/64")?.next_hop.as_deref(),
        Some("2001:db8::1")
    );
    assert_eq!(gobgp.rib_paths("ipv4")?, 2);

    // birdc reload in: BIRD sends ROUTE-REFRESH, GoBGP counts it.
    let before = gobgp
        .neighbor("192.0.2.1")?
        .received
        .get("refresh")
        .copied()
        .unwrap_or(0);
    bird.reload_in("gobgp")?;
    wait_for("GoBGP received ROUTE-REFRESH", T, || {
        let n = gobgp.neighbor("192.0.2.1").ok()?;
        (n.received.get("refresh").copied().unwrap_or(0) > before).then_some(())
    })?;

    // Withdrawal and disable/enable.
    gobgp.del_route("ipv4", "10.245.1.0/24")?;
    wait_for("BIRD dropped the withdrawn route", T, || {
        (bird.imported("gobgp").ok()? == 1).then_some(())
    })?;
    bird.disable("gobgp")?;
    wait_for("GoBGP saw the session go down", T, || {
        (!gobgp.established("192.0.2.1")).then_some(())
    })?;
    bird.enable("gobgp")?;
    bird.wait_established("gobgp", T)?;
    Ok(())
}

/// The raw test peer (tests/src/bgp_testpeer.rs) against BIRD: it
/// establishes, BIRD imports a hand-built UPDATE, and a malformed NLRI gets
/// the NOTIFICATION RFC 4271 §6.3 prescribes, decoded on the test peer's
/// socket. Validates the peer the RFC 7606 tests use against tortie.
#[test]
fn raw_test_peer_against_bird() -> Result<()> {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use tortie_integration::bgp_testpeer::{base_attrs, nlri4, test_open, update, TestPeer};

    if !require_netns("raw_test_peer_against_bird", &["bird", "birdc"]) {
        return Ok(());
    }
    let a = Netns::new("rawb")?;
    let b = Netns::new("rawp")?;
    link(&a, "va", 1, &b, "vb", 2)?;
    let bird = Bird::start(
        &a,
        &format!(
            r#"log stderr all;
router id 192.0.2.1;
protocol device {{ }}
protocol bgp raw {{
    local 192.0.2.1 as 65000; neighbor 192.0.2.2 as 65001; passive on;
    hold time 30; {FAST_TIMERS}
    ipv4 {{ import all; export none; }};
}}
"#
        ),
    )?;
    let me = Ipv4Addr::new(192, 0, 2, 2);
    let mut peer = TestPeer::connect_retry(
        b.name(),
        IpAddr::V4(me),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 179),
        test_open(65001, me, 30),
        T,
    )?;
    assert!(peer.ctx.four_octet_as);
    bird.wait_established("raw", T)?;
    peer.send_raw(&update(
        &[],
        &base_attrs(65001, me),
        &nlri4(Ipv4Addr::new(10, 9, 0, 0), 16),
        None,
    ))?;
    wait_for("BIRD imports the hand-built route", T, || {
        (bird.imported("raw").ok()? == 1).then_some(())
    })?;
    peer.stays_up(Duration::from_millis(300))?;
    peer.send_raw(&update(
        &[],
        &base_attrs(65001, me),
        &[33, 10, 9, 0, 0, 0],
        None,
    ))?;
    let n = peer.expect_notification(T)?;
    assert_eq!(u8::from(n.code), 3, "{n}");
    assert_eq!(n.subcode, 10, "{n}");
    Ok(())
}
