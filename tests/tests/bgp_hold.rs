//! Hold timer (RFC 4271 §6.5, issue 3 §3.4): the peer's process is frozen
//! with SIGSTOP (by PID), so its TCP stays open but nothing arrives;
//! tortie must notice within the hold time and withdraw the peer's routes.
//! SIGCONT brings the peer back and the session re-establishes.
//!
//! ```text
//!   ns hoX-t (ToR)                        ns hoX-n (node)
//!   BIRD | gobgpd  AS 65001               tortie bgp  AS 64512
//!   hold time 4, keepalive 1              holdTime 4, keepaliveTime 1
//!   tor0 192.0.2.1  2001:db8::1  ─veth─   node0 192.0.2.11  2001:db8::11
//! ```

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use tortie_integration::bird::Bird;
use tortie_integration::gobgp::Gobgp;
use tortie_integration::tortie_bgp::{
    bird_tor, gobgp_tor, require, tor_and_node, tortie_node, Tortie, TOR_V4,
};

const T: Duration = Duration::from_secs(30);
const HOLD: u32 = 4;
const TOR_AS: u32 = 65001;
const NODE_AS: u32 = 64512;

/// Freezes the peer, checks detection time and withdrawal, thaws it and
/// checks the session and routes come back.
fn freeze_and_thaw(tortie: &Tortie, prefix: &str, signal: impl Fn(i32)) -> Result<()> {
    tortie.wait_established(TOR_V4, T)?;
    tortie.wait_route(prefix, T, |_| true)?;
    let frozen = Instant::now();
    signal(libc::SIGSTOP);
    let res = tortie.wait_status("tortie drops the frozen peer", T, |s| {
        s.peer(TOR_V4).is_some_and(|p| !p.established())
    });
    let detected = frozen.elapsed();
    // Thaw before judging, so a failure never leaves a stopped process.
    let st = match res {
        Ok(st) => st,
        Err(e) => {
            signal(libc::SIGCONT);
            return Err(e);
        }
    };
    // The last KEEPALIVE came at most one keepalive interval before the
    // freeze, so expiry is within HOLD of it; 1.5 s covers polling.
    let limit = Duration::from_secs(u64::from(HOLD)) + Duration::from_millis(1500);
    eprintln!(
        "hold timer expiry detected after {detected:?}; lastError: {:?}",
        st.peer(TOR_V4).map(|p| p.last_error.clone())
    );
    if detected > limit {
        signal(libc::SIGCONT);
    }
    ensure!(
        detected <= limit,
        "hold timer expiry took {detected:?}, more than hold time {HOLD} s"
    );
    let withdrawn = tortie.wait_no_route(prefix, Duration::from_secs(3));
    signal(libc::SIGCONT);
    withdrawn?;
    tortie.wait_established(TOR_V4, T)?;
    tortie.wait_route(prefix, T, |_| true)?;
    Ok(())
}

#[test]
fn hold_timer_detects_frozen_bird() -> Result<()> {
    if !require("hold_timer_detects_frozen_bird") {
        return Ok(());
    }
    let (tor, node) = tor_and_node("hob")?;
    let bird = Bird::start(&tor, &bird_tor(TOR_AS, NODE_AS, HOLD, "", "")?)?;
    let tortie = Tortie::start(&node, &tortie_node(NODE_AS, TOR_AS, HOLD, "", "")?)?;
    freeze_and_thaw(&tortie, "10.245.1.0/24", |sig| bird.signal(sig))?;
    bird.wait_established("tortie4", T)?;
    Ok(())
}

#[test]
fn hold_timer_detects_frozen_gobgp() -> Result<()> {
    if !require("hold_timer_detects_frozen_gobgp") {
        return Ok(());
    }
    let (tor, node) = tor_and_node("hog")?;
    let gobgp = Gobgp::start(&tor, &gobgp_tor(TOR_AS, NODE_AS, HOLD, "", "", "")?)?;
    gobgp.add_route(
        "ipv4",
        "10.246.1.0/24",
        &["nexthop", TOR_V4, "origin", "igp"],
    )?;
    let tortie = Tortie::start(&node, &tortie_node(NODE_AS, TOR_AS, HOLD, "", "")?)?;
    freeze_and_thaw(&tortie, "10.246.1.0/24", |sig| gobgp.signal(sig))?;
    Ok(())
}
