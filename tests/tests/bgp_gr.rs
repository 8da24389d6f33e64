//! Graceful restart (RFC 4724, issue 3 §3.5), both roles.
//!
//! 1. tortie restarts: SIGKILL, then started again with the same state dir
//!    (so its OPEN carries the Restart State bit). BIRD (graceful restart
//!    on) keeps tortie's routes, stale, the whole time: a watcher polls
//!    BIRD every 50 ms and fails on any gap. The restarted tortie no
//!    longer originates 10.244.13.0/24: BIRD must drop that stale route
//!    after tortie's End-of-RIB, and leave graceful-restart mode.
//! 2. BIRD restarts (SIGKILL, then `bird -R`): tortie keeps BIRD's routes
//!    through the restart with no gap, and after BIRD's End-of-RIB drops
//!    the one BIRD no longer has (10.245.3.0/24).
//! 3. GoBGP restarts (SIGKILL, then `gobgpd -r`): tortie keeps its route
//!    while GoBGP is down, then refreshes (drops the route GoBGP did not
//!    re-add). GoBGP's routes come from the CLI after it is up again, so a
//!    gap after reconnection is not judged here.
//!
//! ```text
//!   ns grX-t (ToR)                        ns grX-n (node)
//!   BIRD | gobgpd  AS 65001, GR on        tortie bgp  AS 64512
//!   tor0 192.0.2.1  2001:db8::1  ─veth─   node0 192.0.2.11  2001:db8::11
//!                                         gracefulRestart {enabled, 30 s}
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use tortie_integration::bird::Bird;
use tortie_integration::gobgp::Gobgp;
use tortie_integration::tortie_bgp::{
    bird_tor, gobgp_tor, require, tor_and_node, tortie_node, Tortie, TOR_V4,
};
use tortie_integration::wait_for;

const T: Duration = Duration::from_secs(30);
const TOR_AS: u32 = 65001;
const NODE_AS: u32 = 64512;
const GR: &str = "    gracefulRestart: {enabled: true, restartTime: 30}";
const EXTRA_ORIGINATE: &str = "  - prefix: 10.244.13.0/24\n";

/// Runs `f` while a watcher thread polls `present` every 50 ms; returns
/// the longest stretch during which `present` was false (zero = no gap).
fn watch_gaps<P, F>(present: P, f: F) -> Result<Duration>
where
    P: Fn() -> bool + Sync,
    F: FnOnce() -> Result<()>,
{
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut worst = Duration::ZERO;
            let mut gap_start: Option<Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                if present() {
                    if let Some(g) = gap_start.take() {
                        worst = worst.max(g.elapsed());
                    }
                } else if gap_start.is_none() {
                    gap_start = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some(g) = gap_start {
                worst = worst.max(g.elapsed());
            }
            worst
        });
        let r = f();
        stop.store(true, Ordering::Relaxed);
        let worst = watcher.join().map_err(|_| anyhow!("watcher panicked"))?;
        r.map(|()| worst)
    })
}

#[test]
fn tortie_restart_bird_keeps_routes_stale() -> Result<()> {
    if !require("tortie_restart_bird_keeps_routes_stale") {
        return Ok(());
    }
    let (tor, node) = tor_and_node("grt")?;
    let bird = Bird::start(
        &tor,
        &bird_tor(
            TOR_AS,
            NODE_AS,
            6,
            "graceful restart on; graceful restart time 30;",
            "",
        )?,
    )?;
    let mut tortie = Tortie::start(
        &node,
        &tortie_node(NODE_AS, TOR_AS, 6, GR, EXTRA_ORIGINATE)?,
    )?;
    bird.wait_established("tortie4", T)?;
    let has = |prefix: &str| {
        bird.routes_for(prefix)
            .is_ok_and(|r| r.iter().any(|r| r.proto == "tortie4"))
    };
    wait_for("BIRD has tortie's routes", T, || {
        (has("10.244.11.0/24") && has("10.244.13.0/24")).then_some(())
    })?;
    let gr_caps = bird.protocol("tortie4")?.neighbor_capabilities;
    ensure!(
        gr_caps.iter().any(|c| c == "Graceful restart"),
        "tortie did not announce graceful restart: {gr_caps:?}"
    );

    let worst = watch_gaps(
        || has("10.244.11.0/24"),
        || {
            tortie.kill();
            wait_for("BIRD enters graceful restart", T, || {
                bird.protocol("tortie4")
                    .ok()
                    .filter(|p| p.graceful_restart_active)
            })
            .map_err(|e| anyhow!("{e:#}\n{}", bird.describe("tortie4")))?;
            ensure!(has("10.244.13.0/24"), "BIRD dropped a stale route early");
            tortie.write_config(&tortie_node(NODE_AS, TOR_AS, 6, GR, "")?)?;
            tortie.restart(&node)?;
            let p = bird.wait_established("tortie4", T)?;
            // RFC 4724 §3: the restarted speaker sets the Restart State
            // bit; BIRD shows it as "Restart recovery".
            ensure!(
                p.neighbor_capabilities
                    .iter()
                    .any(|c| c == "Restart recovery"),
                "tortie's OPEN after the restart lacks the Restart State bit: {:?}",
                p.neighbor_capabilities
            );
            // End-of-RIB ends the restart: the route tortie no longer
            // announces goes, graceful-restart mode ends.
            wait_for("BIRD flushes the stale route after End-of-RIB", T, || {
                (!has("10.244.13.0/24")).then_some(())
            })
            .map_err(|e| anyhow!("{e:#}\n{}", bird.describe("tortie4")))?;
            wait_for("BIRD leaves graceful restart", T, || {
                bird.protocol("tortie4")
                    .ok()
                    .filter(|p| !p.graceful_restart_active)
            })?;
            Ok(())
        },
    )?;
    ensure!(
        worst.is_zero(),
        "BIRD withdrew tortie's route 10.244.11.0/24 for {worst:?} during the restart\n{}",
        bird.describe("tortie4")
    );
    ensure!(has("10.244.11.0/24"));
    Ok(())
}

#[test]
fn bird_restart_tortie_keeps_routes_stale() -> Result<()> {
    if !require("bird_restart_tortie_keeps_routes_stale") {
        return Ok(());
    }
    let (tor, node) = tor_and_node("grb")?;
    let gr = "graceful restart on; graceful restart time 30;";
    let mut bird = Bird::start(
        &tor,
        &bird_tor(TOR_AS, NODE_AS, 6, gr, "    route 10.245.3.0/24 blackhole;")?,
    )?;
    let tortie = Tortie::start(&node, &tortie_node(NODE_AS, TOR_AS, 6, GR, "")?)?;
    tortie.wait_established(TOR_V4, T)?;
    tortie.wait_route("10.245.1.0/24", T, |_| true)?;
    tortie.wait_route("10.245.3.0/24", T, |_| true)?;
    let has = |prefix: &str| {
        tortie
            .status()
            .is_ok_and(|s| s.route(prefix).is_some_and(|r| !r.paths.is_empty()))
    };
    let worst = watch_gaps(
        || has("10.245.1.0/24"),
        || {
            let new_conf = bird_tor(TOR_AS, NODE_AS, 6, gr, "")?;
            bird.crash_and_restart_graceful(&tor, Some(&new_conf), || {
                // BIRD is gone: tortie keeps its paths, marked stale.
                tortie
                    .wait_route("10.245.1.0/24", T, |p| p.stale == Some(true))
                    .map(drop)
                    .context("tortie did not mark BIRD's paths stale while BIRD was down")
            })?;
            bird.wait_established("tortie4", T)?;
            tortie.wait_established(TOR_V4, T)?;
            tortie.wait_no_route("10.245.3.0/24", T)?;
            Ok(())
        },
    )?;
    ensure!(
        worst.is_zero(),
        "tortie dropped BIRD's route 10.245.1.0/24 for {worst:?} during BIRD's restart\n{}",
        tortie.describe()
    );
    let r = tortie.wait_route("10.245.1.0/24", T, |_| true)?;
    ensure!(
        r.paths.iter().all(|p| p.stale != Some(true)),
        "still stale after End-of-RIB: {r:?}"
    );
    Ok(())
}

#[test]
fn gobgp_restart_tortie_keeps_routes_then_refreshes() -> Result<()> {
    if !require("gobgp_restart_tortie_keeps_routes") {
        return Ok(());
    }
    let (tor, node) = tor_and_node("grg")?;
    let sections =
        "  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 30";
    let afi = "    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true";
    let mut gobgp = Gobgp::start(&tor, &gobgp_tor(TOR_AS, NODE_AS, 6, "", sections, afi)?)?;
    for p in ["10.246.1.0/24", "10.246.3.0/24"] {
        gobgp.add_route("ipv4", p, &["nexthop", TOR_V4, "origin", "igp"])?;
    }
    let tortie = Tortie::start(&node, &tortie_node(NODE_AS, TOR_AS, 6, GR, "")?)?;
    tortie.wait_established(TOR_V4, T)?;
    tortie.wait_route("10.246.3.0/24", T, |_| true)?;
    gobgp.kill();
    // GoBGP is gone; tortie keeps its routes (stale) for the restart time.
    tortie
        .wait_route("10.246.1.0/24", T, |p| p.stale == Some(true))
        .context("tortie did not mark GoBGP's paths stale")?;
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(3) {
        let s = tortie.status()?;
        ensure!(
            s.route("10.246.1.0/24")
                .is_some_and(|r| !r.paths.is_empty()),
            "tortie dropped GoBGP's route {:?} after the crash\n{}",
            down.elapsed(),
            tortie.describe()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    gobgp.restart(&tor, &["-r"])?;
    gobgp.add_route(
        "ipv4",
        "10.246.1.0/24",
        &["nexthop", TOR_V4, "origin", "igp"],
    )?;
    tortie.wait_established(TOR_V4, T)?;
    tortie.wait_no_route("10.246.3.0/24", T)?;
    tortie.wait_route("10.246.1.0/24", T, |p| p.stale != Some(true))?;
    Ok(())
}
