//! eBGP between tortie's speaker and a ToR (BIRD 2, then GoBGP): IPv4 and
//! IPv6 routes both ways, with the attributes each side should see (AS
//! path, next hop, MED, communities, large communities), and 4-octet ASNs
//! on both sides (issue 3 §3.1).
//!
//! ```text
//!   ns ebX-t (ToR)                         ns ebX-n (node)
//!   ┌──────────────────────────────┐ veth ┌──────────────────────────────┐
//!   │ BIRD | gobgpd  AS 4200000001 │──────│ tortie bgp    AS 4200000011  │
//!   │ tor0 192.0.2.1  2001:db8::1  │      │ node0 192.0.2.11 2001:db8::11│
//!   │ routes 10.245.x / fd00:245:: │      │ originates 10.244.11.0/24,   │
//!   │   (GoBGP: 10.246.x, fd00:246)│      │   fd00:11::/64               │
//!   └──────────────────────────────┘      └──────────────────────────────┘
//!   one IPv4 session (192.0.2.1-192.0.2.11) + one IPv6 session
//! ```

use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use tortie_integration::bird::Bird;
use tortie_integration::gobgp::{path_for, Gobgp};
use tortie_integration::tortie_bgp::{
    bird_tor, gobgp_tor, path_from, require, tor_and_node, tortie_node, Tortie, NODE_V4, TOR_V4,
    TOR_V6,
};
use tortie_integration::wait_for;

const T: Duration = Duration::from_secs(30);
const TOR_AS: u32 = 4_200_000_001;
const NODE_AS: u32 = 4_200_000_011;

#[test]
fn ebgp_with_bird_both_families_both_ways() -> Result<()> {
    if !require("ebgp_with_bird") {
        return Ok(());
    }
    let (tor, node) = tor_and_node("ebb")?;
    let bird = Bird::start(&tor, &bird_tor(TOR_AS, NODE_AS, 6, "", "")?)?;
    let tortie = Tortie::start(&node, &tortie_node(NODE_AS, TOR_AS, 6, "", "")?)?;

    let p4 = bird.wait_established("tortie4", T)?;
    bird.wait_established("tortie6", T)?;
    assert_eq!(
        p4.neighbor_as,
        Some(NODE_AS),
        "BIRD sees tortie's 4-octet AS"
    );
    assert!(
        p4.neighbor_capabilities
            .iter()
            .any(|c| c == "4-octet AS numbers"),
        "tortie announces the 4-octet AS capability: {:?}",
        p4.neighbor_capabilities
    );
    let peer = tortie.wait_established(TOR_V4, T)?;
    assert_eq!(peer.asn, u64::from(TOR_AS));
    tortie.wait_established(TOR_V6, T)?;

    // tortie -> BIRD, IPv4.
    let r = wait_for("BIRD has tortie's IPv4 route", T, || {
        bird.routes_for("10.244.11.0/24")
            .ok()?
            .into_iter()
            .find(|r| r.proto == "tortie4")
    })
    .map_err(|e| anyhow!("{e:#}\n{}", tortie.describe()))?;
    assert_eq!(r.as_path, vec![NODE_AS]);
    assert_eq!(r.next_hop.first().map(String::as_str), Some(NODE_V4));
    assert_eq!(r.med, Some(10));
    assert_eq!(r.communities, vec!["65000:11"]);
    assert_eq!(r.large_communities, vec![format!("{NODE_AS}:11:12")]);
    assert_eq!(r.origin.as_deref(), Some("IGP"));

    // tortie -> BIRD, IPv6 (global next hop first).
    let r6 = wait_for("BIRD has tortie's IPv6 route", T, || {
        bird.routes_for("fd00:11::/64")
            .ok()?
            .into_iter()
            .find(|r| r.proto == "tortie6")
    })?;
    assert_eq!(r6.as_path, vec![NODE_AS]);
    assert_eq!(
        r6.next_hop.first().map(String::as_str),
        Some("2001:db8::11")
    );
    assert_eq!(r6.med, Some(20));
    assert_eq!(r6.communities, vec!["65000:12"]);
    // tortie must not send its IPv4 routes on the IPv6-only session.
    assert_eq!(
        bird.imported("tortie6")?,
        1,
        "{:?}",
        bird.routes(&["protocol", "tortie6"])
    );

    // BIRD -> tortie, IPv4 and IPv6.
    let route = tortie.wait_route("10.245.1.0/24", T, |p| path_from(p, TOR_V4, "tor-v4"))?;
    let p = route
        .paths
        .iter()
        .find(|p| path_from(p, TOR_V4, "tor-v4"))
        .ok_or_else(|| anyhow!("no path"))?;
    assert_eq!(p.as_path, vec![TOR_AS]);
    assert_eq!(p.next_hop, TOR_V4);
    assert_eq!(p.med, Some(10));
    assert_eq!(p.communities, vec!["65000:1"]);
    assert_eq!(p.large_communities, vec![format!("{TOR_AS}:1:2")]);
    assert!(p.best);
    let route6 = tortie.wait_route("fd00:245:1::/64", T, |_| true)?;
    let p6 = route6.paths.first().ok_or_else(|| anyhow!("no path"))?;
    assert_eq!(p6.as_path, vec![TOR_AS]);
    assert_eq!(p6.next_hop, TOR_V6);
    assert_eq!(p6.med, Some(10));

    // Withdrawal: BIRD drops its static routes, tortie drops them too.
    bird.disable("s4")?;
    tortie.wait_no_route("10.245.1.0/24", T)?;
    tortie.wait_no_route("10.245.2.0/24", T)?;
    ensure!(tortie.peer(TOR_V4)?.established(), "session survived");
    Ok(())
}

#[test]
fn ebgp_with_gobgp_both_families_both_ways() -> Result<()> {
    if !require("ebgp_with_gobgp") {
        return Ok(());
    }
    let (tor, node) = tor_and_node("ebg")?;
    let gobgp = Gobgp::start(&tor, &gobgp_tor(TOR_AS, NODE_AS, 6, "", "", "")?)?;
    gobgp.add_route(
        "ipv4",
        "10.246.1.0/24",
        &[
            "nexthop",
            TOR_V4,
            "origin",
            "igp",
            "med",
            "7",
            "community",
            "65000:2",
            "large-community",
            "4200000001:3:4",
        ],
    )?;
    gobgp.add_route(
        "ipv6",
        "fd00:246:1::/64",
        &["nexthop", TOR_V6, "origin", "igp", "med", "8"],
    )?;
    let tortie = Tortie::start(&node, &tortie_node(NODE_AS, TOR_AS, 6, "", "")?)?;

    let n = gobgp.wait_established(NODE_V4, T)?;
    assert_eq!(n.peer_as, u64::from(NODE_AS));
    gobgp.wait_established("2001:db8::11", T)?;
    tortie.wait_established(TOR_V4, T)?;
    tortie.wait_established(TOR_V6, T)?;

    // tortie -> GoBGP.
    let rib = wait_for("GoBGP has tortie's IPv4 route", T, || {
        let rib = gobgp.rib("ipv4").ok()?;
        rib.iter()
            .any(|p| p.prefix == "10.244.11.0/24")
            .then_some(rib)
    })
    .map_err(|e| anyhow!("{e:#}\n{}", tortie.describe()))?;
    let g = path_for(&rib, "10.244.11.0/24")?;
    assert_eq!(g.as_path, vec![NODE_AS]);
    assert_eq!(g.next_hop.as_deref(), Some(NODE_V4));
    assert_eq!(g.med, Some(10));
    assert_eq!(g.communities, vec!["65000:11"]);
    assert_eq!(g.large_communities, vec![format!("{NODE_AS}:11:12")]);
    assert_eq!(g.origin, Some(0));
    let rib6 = wait_for("GoBGP has tortie's IPv6 route", T, || {
        let rib = gobgp.rib("ipv6").ok()?;
        rib.iter()
            .any(|p| p.prefix == "fd00:11::/64")
            .then_some(rib)
    })?;
    let g6 = path_for(&rib6, "fd00:11::/64")?;
    assert_eq!(g6.next_hop.as_deref(), Some("2001:db8::11"));
    assert_eq!(g6.as_path, vec![NODE_AS]);
    assert_eq!(g6.med, Some(20));

    // GoBGP -> tortie.
    let route = tortie.wait_route("10.246.1.0/24", T, |_| true)?;
    let p = route.paths.first().ok_or_else(|| anyhow!("no path"))?;
    assert_eq!(p.as_path, vec![TOR_AS]);
    assert_eq!(p.next_hop, TOR_V4);
    assert_eq!(p.med, Some(7));
    assert_eq!(p.communities, vec!["65000:2"]);
    assert_eq!(p.large_communities, vec!["4200000001:3:4"]);
    let route6 = tortie.wait_route("fd00:246:1::/64", T, |_| true)?;
    let p6 = route6.paths.first().ok_or_else(|| anyhow!("no path"))?;
    assert_eq!(p6.next_hop, TOR_V6);
    assert_eq!(p6.med, Some(8));

    // Withdrawal.
    gobgp.del_route("ipv4", "10.246.1.0/24")?;
    tortie.wait_no_route("10.246.1.0/24", T)?;
    Ok(())
}
