//! iBGP through a route reflector (RFC 4456), both ways round (issue 3
//! §3.2): BIRD reflecting between two tortie clients, and tortie
//! reflecting between two BIRD clients. AS 64512 throughout.
//!
//! ```text
//!  bird_reflects_between_two_tortie_clients:
//!
//!   ns rrb-h: BIRD reflector, bridge br0 192.0.2.1
//!        ├── h0 ── ns rrb-a: tortie 192.0.2.11, originates 10.244.11.0/24
//!        └── h1 ── ns rrb-b: tortie 192.0.2.12, originates 10.244.12.0/24
//!
//!  tortie_reflects_between_two_bird_clients:
//!
//!   ns rrt-h: tortie reflector (clusterId 192.0.2.11), bridge br0 192.0.2.11
//!        ├── h0 ── ns rrt-a: BIRD 192.0.2.1, static 10.245.1.0/24
//!        └── h1 ── ns rrt-b: BIRD 192.0.2.2, static 10.245.2.0/24
//! ```

use std::time::Duration;

use anyhow::{anyhow, Result};
use tortie_integration::bgp_util::bridge;
use tortie_integration::bird::{Bird, FAST_TIMERS};
use tortie_integration::tortie_bgp::{config, require, Tortie};
use tortie_integration::{wait_for, Netns};

const T: Duration = Duration::from_secs(30);
const AS: u32 = 64512;

#[test]
fn bird_reflects_between_two_tortie_clients() -> Result<()> {
    if !require("bird_reflects_between_two_tortie_clients") {
        return Ok(());
    }
    let hub = Netns::new("rrbh")?;
    let a = Netns::new("rrba")?;
    let b = Netns::new("rrbb")?;
    bridge(&hub, 1, &[(&a, 11), (&b, 12)])?;
    let bird = Bird::start(
        &hub,
        &format!(
            r#"log stderr all;
router id 192.0.2.1;
protocol device {{ }}
template bgp rrc {{
    local 192.0.2.1 as {AS};
    neighbor as {AS};
    direct;
    rr client;
    rr cluster id 192.0.2.1;
    hold time 6; keepalive time 1; {FAST_TIMERS}
    ipv4 {{ import all; export all; gateway direct; }};
}}
protocol bgp c11 from rrc {{ neighbor 192.0.2.11; }}
protocol bgp c12 from rrc {{ neighbor 192.0.2.12; }}
"#
        ),
    )?;
    let mk = |n: u8| {
        config(
            AS,
            &format!("192.0.2.{n}"),
            &format!("  - prefix: 10.244.{n}.0/24\n"),
            &format!(
                "  - {{name: rr, peerIP: 192.0.2.1, asNumber: {AS}, families: [IPv4], holdTime: 6, keepaliveTime: 2}}\n"
            ),
        )
    };
    let ta = Tortie::start(&a, &mk(11))?;
    let tb = Tortie::start(&b, &mk(12))?;
    bird.wait_established("c11", T)?;
    bird.wait_established("c12", T)?;

    // Each client learns the other's route, reflected: next hop kept, AS
    // path empty (iBGP), LOCAL_PREF present.
    for (t, other) in [(&ta, 12u8), (&tb, 11u8)] {
        let prefix = format!("10.244.{other}.0/24");
        let r = t
            .wait_route(&prefix, T, |_| true)
            .map_err(|e| anyhow!("{e:#}\nBIRD: {}", bird.describe("c11")))?;
        let p = r.paths.first().ok_or_else(|| anyhow!("no path"))?;
        assert_eq!(p.next_hop, format!("192.0.2.{other}"), "{prefix}: {p:?}");
        assert!(p.as_path.is_empty(), "iBGP path has no AS: {p:?}");
        assert_eq!(p.local_pref, Some(100), "{p:?}");
        assert!(p.best);
    }
    // BIRD saw both originals with an empty AS path.
    let r = bird.routes_for("10.244.11.0/24")?;
    assert_eq!(r.first().map(|r| r.as_path.is_empty()), Some(true), "{r:?}");
    Ok(())
}

fn bird_client(n: u8) -> String {
    format!(
        r#"log stderr all;
router id 192.0.2.{n};
protocol device {{ }}
protocol static s4 {{ ipv4; route 10.245.{n}.0/24 blackhole; }}
protocol bgp reflector {{
    local 192.0.2.{n} as {AS};
    neighbor 192.0.2.11 as {AS};
    direct;
    hold time 6; keepalive time 1; {FAST_TIMERS}
    ipv4 {{ import all; export all; gateway direct; next hop self; }};
}}
"#
    )
}

#[test]
fn tortie_reflects_between_two_bird_clients() -> Result<()> {
    if !require("tortie_reflects_between_two_bird_clients") {
        return Ok(());
    }
    let hub = Netns::new("rrth")?;
    let a = Netns::new("rrta")?;
    let b = Netns::new("rrtb")?;
    bridge(&hub, 11, &[(&a, 1), (&b, 2)])?;
    let peers = (1..=2)
        .map(|n| {
            format!(
                "  - {{name: bird{n}, peerIP: 192.0.2.{n}, asNumber: {AS}, routeReflectorClient: true, families: [IPv4], holdTime: 6, keepaliveTime: 2}}\n"
            )
        })
        .collect::<String>();
    let cfg = config(AS, "192.0.2.11", "", &peers).replace(
        "logNeighborChanges: true\n",
        "logNeighborChanges: true\nclusterId: 192.0.2.11\n",
    );
    let tortie = Tortie::start(&hub, &cfg)?;
    let b1 = Bird::start(&a, &bird_client(1))?;
    let b2 = Bird::start(&b, &bird_client(2))?;
    b1.wait_established("reflector", T)?;
    b2.wait_established("reflector", T)?;
    tortie.wait_established("192.0.2.1", T)?;
    tortie.wait_established("192.0.2.2", T)?;

    for (bird, other) in [(&b1, 2u8), (&b2, 1u8)] {
        let prefix = format!("10.245.{other}.0/24");
        let r = wait_for(&format!("reflected {prefix}"), T, || {
            bird.routes_for(&prefix)
                .ok()?
                .into_iter()
                .find(|r| r.proto == "reflector")
        })
        .map_err(|e| anyhow!("{e:#}\n{}", tortie.describe()))?;
        // RFC 4456 §8: ORIGINATOR_ID is the originator's router id,
        // CLUSTER_LIST carries the reflector's cluster id; the next hop
        // is left alone.
        assert_eq!(
            r.originator_id.as_deref(),
            Some(format!("192.0.2.{other}").as_str()),
            "{r:?}"
        );
        assert_eq!(r.cluster_list, vec!["192.0.2.11"], "{r:?}");
        assert_eq!(
            r.next_hop.first().map(String::as_str),
            Some(format!("192.0.2.{other}").as_str())
        );
        assert!(r.as_path.is_empty(), "{r:?}");
    }
    // A client's own route is not reflected back to it.
    let own = b1.routes(&["protocol", "reflector"])?;
    assert!(
        own.iter().all(|r| r.prefix != "10.245.1.0/24"),
        "route reflected back to its originator: {own:?}"
    );
    Ok(())
}
