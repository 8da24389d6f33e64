//! ECMP (issue 3 §3.8): the same prefix from two eBGP peers with equal
//! attributes (AS path length 1, ORIGIN IGP, no MED) gives a two-path
//! entry in tortie's RIB: both paths best/multipath.
//!
//! ```text
//!   ns ecm-h: tortie bgp AS 64512, bridge br0 192.0.2.11, maxEcmpPaths 8
//!        ├── h0 ── ns ecm-b: BIRD   AS 65001, 192.0.2.1, 10.250.0.0/24
//!        └── h1 ── ns ecm-g: gobgpd AS 65002, 192.0.2.2, 10.250.0.0/24
//! ```

use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use tortie_integration::bgp_util::bridge;
use tortie_integration::bird::{Bird, FAST_TIMERS};
use tortie_integration::gobgp::Gobgp;
use tortie_integration::tortie_bgp::{config, require, Tortie, TortiePath};
use tortie_integration::Netns;

const T: Duration = Duration::from_secs(30);

fn multipath(p: &TortiePath) -> bool {
    p.best
        || ["multipath", "ecmp"]
            .iter()
            .any(|k| p.raw.get(k).and_then(serde_json::Value::as_bool) == Some(true))
}

#[test]
fn ecmp_two_ebgp_peers_give_two_paths() -> Result<()> {
    if !require("ecmp_two_ebgp_peers") {
        return Ok(());
    }
    let hub = Netns::new("ecmh")?;
    let b = Netns::new("ecmb")?;
    let g = Netns::new("ecmg")?;
    bridge(&hub, 11, &[(&b, 1), (&g, 2)])?;
    let peers = "  - {name: bird, peerIP: 192.0.2.1, asNumber: 65001, families: [IPv4], holdTime: 6, keepaliveTime: 2}\n  - {name: gobgp, peerIP: 192.0.2.2, asNumber: 65002, families: [IPv4], holdTime: 6, keepaliveTime: 2}\n";
    let cfg = config(64512, "192.0.2.11", "", peers).replace(
        "logNeighborChanges: true\n",
        "logNeighborChanges: true\nmaxEcmpPaths: 8\n",
    );
    let tortie = Tortie::start(&hub, &cfg)?;
    let _bird = Bird::start(
        &b,
        &format!(
            r#"log stderr all;
router id 192.0.2.1;
protocol device {{ }}
protocol static s4 {{ ipv4; route 10.250.0.0/24 blackhole; }}
protocol bgp tortie {{
    local 192.0.2.1 as 65001; neighbor 192.0.2.11 as 64512;
    hold time 6; keepalive time 1; {FAST_TIMERS}
    ipv4 {{ import all; export all; }};
}}
"#
        ),
    )?;
    let gobgp = Gobgp::start(
        &g,
        r#"[global.config]
  as = 65002
  router-id = "192.0.2.2"
  local-address-list = ["192.0.2.2"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.11"
    peer-as = 64512
  [neighbors.timers.config]
    hold-time = 6
    keepalive-interval = 1
    connect-retry = 1
    idle-hold-time-after-reset = 1
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
"#,
    )?;
    gobgp.add_route(
        "ipv4",
        "10.250.0.0/24",
        &["nexthop", "192.0.2.2", "origin", "igp"],
    )?;
    tortie.wait_established("192.0.2.1", T)?;
    tortie.wait_established("192.0.2.2", T)?;
    let st = tortie.wait_status("two paths for 10.250.0.0/24", T, |s| {
        s.route("10.250.0.0/24").is_some_and(|r| r.paths.len() >= 2)
    })?;
    let r = st
        .route("10.250.0.0/24")
        .ok_or_else(|| anyhow!("no route"))?;
    let hops: Vec<&str> = r.paths.iter().map(|p| p.next_hop.as_str()).collect();
    ensure!(
        hops.contains(&"192.0.2.1") && hops.contains(&"192.0.2.2"),
        "next hops {hops:?}"
    );
    let n = r.paths.iter().filter(|p| multipath(p)).count();
    ensure!(
        n == 2,
        "{n} of {} paths are best/multipath, want 2: {:#?}",
        r.paths.len(),
        r.paths.iter().map(|p| &p.raw).collect::<Vec<_>>()
    );

    // With one peer's path gone, one path remains.
    gobgp.del_route("ipv4", "10.250.0.0/24")?;
    tortie.wait_status("one path left", T, |s| {
        s.route("10.250.0.0/24").is_some_and(|r| r.paths.len() == 1)
    })?;
    Ok(())
}
