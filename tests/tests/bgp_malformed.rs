//! Malformed UPDATEs (RFC 7606, issue 3 §3.7), sent by the suite's own
//! raw test peer (tests/src/bgp_testpeer.rs): tortie must
//! treat-as-withdraw or discard the attribute where RFC 7606 says so and
//! keep the session up (checked on the socket and in `tortie status`), and
//! reset only where it must, with the right NOTIFICATION (read and decoded
//! on the test peer's socket).
//!
//! ```text
//!   ns maX-t (test peer, this process via setns)   ns maX-n (node)
//!   tor0 192.0.2.1 (session kept, AS 65001)  ─veth─  tortie bgp AS 64512
//!        192.0.2.21-27 (one per reset case)          node0 192.0.2.11:179
//!                                                    every peer passive
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use tortie_integration::bgp_testpeer::{
    as_path, attr, base_attrs, flag, med, next_hop, nlri4, origin_igp, test_open, update, TestPeer,
};
use tortie_integration::tortie_bgp::{config, require, tor_and_node, Tortie};
use tortie_integration::Netns;

const T: Duration = Duration::from_secs(20);
const PEER_AS: u32 = 65001;
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn speaker(node: &Netns, peers: &[Ipv4Addr]) -> Result<Tortie> {
    let list: String = peers
        .iter()
        .map(|p| {
            format!(
                "  - {{peerIP: {p}, asNumber: {PEER_AS}, passive: true, holdTime: 30, keepaliveTime: 10, families: [IPv4, IPv6]}}\n"
            )
        })
        .collect();
    Tortie::start(node, &config(64512, "192.0.2.11", "", &list))
}

fn connect(ns: &Netns, from: Ipv4Addr) -> Result<TestPeer> {
    TestPeer::connect_retry(
        ns.name(),
        IpAddr::V4(from),
        SocketAddr::new(IpAddr::V4(NODE), 179),
        test_open(PEER_AS, from, 30),
        T,
    )
}

#[test]
fn rfc7606_treat_as_withdraw_and_attribute_discard_keep_the_session() -> Result<()> {
    if !require("rfc7606_keep_session") {
        return Ok(());
    }
    let (tor, node) = tor_and_node("mak")?;
    let tortie = speaker(&node, &[PEER])?;
    let mut peer = connect(&tor, PEER)?;
    tortie.wait_established("192.0.2.1", T)?;

    let p1 = Ipv4Addr::new(10, 1, 1, 0);
    let good = update(
        &[],
        &[base_attrs(PEER_AS, PEER), med(1)].concat(),
        &nlri4(p1, 24),
        None,
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // §7.4
        (
            "MED of length 3",
            [
                base_attrs(PEER_AS, PEER),
                attr(flag::OPTIONAL, 4, &[0, 0, 1], None),
            ]
            .concat(),
        ),
        // §7.1
        (
            "ORIGIN value 7",
            [
                attr(flag::TRANSITIVE, 1, &[7], None),
                as_path(&[PEER_AS]),
                next_hop(PEER),
            ]
            .concat(),
        ),
        // §7.2: a segment that claims 3 ASes but holds 1.
        (
            "AS_PATH segment overrun",
            [
                origin_igp(),
                attr(flag::TRANSITIVE, 2, &[2, 3, 0, 0, 0xfd, 0xe9], None),
                next_hop(PEER),
            ]
            .concat(),
        ),
        // §7.8
        (
            "COMMUNITIES of length 5",
            [
                base_attrs(PEER_AS, PEER),
                attr(flag::OPTIONAL | flag::TRANSITIVE, 8, &[0, 0, 0, 1, 2], None),
            ]
            .concat(),
        ),
        // §3 d: missing well-known mandatory attribute.
        ("AS_PATH missing", [origin_igp(), next_hop(PEER)].concat()),
        // §7.3
        (
            "NEXT_HOP of length 5",
            [
                origin_igp(),
                as_path(&[PEER_AS]),
                attr(flag::TRANSITIVE, 3, &[192, 0, 2, 1, 0], None),
            ]
            .concat(),
        ),
        // RFC 8092 §6
        (
            "LARGE_COMMUNITIES of length 10",
            [
                base_attrs(PEER_AS, PEER),
                attr(flag::OPTIONAL | flag::TRANSITIVE, 32, &[0; 10], None),
            ]
            .concat(),
        ),
    ];
    for (what, attrs) in cases {
        peer.send_raw(&good)?;
        tortie
            .wait_route("10.1.1.0/24", T, |_| true)
            .with_context(|| format!("before {what}"))?;
        peer.send_raw(&update(&[], &attrs, &nlri4(p1, 24), None))?;
        // Treat-as-withdraw: the route goes, the session stays.
        tortie
            .wait_no_route("10.1.1.0/24", T)
            .with_context(|| format!("{what}: not treated as withdraw"))?;
        peer.stays_up(Duration::from_millis(300))
            .with_context(|| format!("{what}: session reset, RFC 7606 says treat-as-withdraw"))?;
        ensure!(
            tortie.peer("192.0.2.1")?.established(),
            "{what}: status shows the session down"
        );
    }

    // Attribute discard (and the other "keep the route" rules): each
    // announces its own prefix, which must be there afterwards.
    let keep: Vec<(&str, Vec<u8>, Option<u32>)> = vec![
        // §7.6
        (
            "ATOMIC_AGGREGATE of length 1",
            [
                base_attrs(PEER_AS, PEER),
                attr(flag::TRANSITIVE, 6, &[1], None),
            ]
            .concat(),
            None,
        ),
        // §7.7
        (
            "AGGREGATOR of length 5",
            [
                base_attrs(PEER_AS, PEER),
                attr(flag::OPTIONAL | flag::TRANSITIVE, 7, &[0; 5], None),
            ]
            .concat(),
            None,
        ),
        // §3 g: all but the first copy discarded.
        (
            "MED twice",
            [base_attrs(PEER_AS, PEER), med(5), med(9)].concat(),
            Some(5),
        ),
        // RFC 4271 §5: unrecognised optional non-transitive is ignored.
        (
            "unknown optional non-transitive attribute",
            [
                base_attrs(PEER_AS, PEER),
                attr(flag::OPTIONAL, 250, &[1, 2, 3], None),
            ]
            .concat(),
            None,
        ),
    ];
    for (i, (what, attrs, want_med)) in keep.into_iter().enumerate() {
        let third = u8::try_from(2 + i)?;
        let prefix = format!("10.1.{third}.0/24");
        peer.send_raw(&update(
            &[],
            &attrs,
            &nlri4(Ipv4Addr::new(10, 1, third, 0), 24),
            None,
        ))?;
        let r = tortie
            .wait_route(&prefix, T, |_| true)
            .with_context(|| format!("{what}: route not accepted (RFC 7606: attribute discard)"))?;
        if let Some(m) = want_med {
            let got = r.paths.first().and_then(|p| p.med);
            ensure!(
                got == Some(m),
                "{what}: MED {got:?}, the first copy ({m}) must win"
            );
        }
        peer.stays_up(Duration::from_millis(300))
            .with_context(|| format!("{what}: session reset"))?;
    }
    ensure!(tortie.peer("192.0.2.1")?.established());
    Ok(())
}

/// An MP_REACH_NLRI for fd00:1::/64 via 2001:db8::1.
fn mp_reach_v6() -> Vec<u8> {
    let mut v = vec![0, 2, 1, 16];
    v.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .map(|a| a.octets())
            .unwrap_or_default(),
    );
    v.push(0);
    v.extend_from_slice(&[64, 0xfd, 0, 0, 1, 0, 0, 0, 0]);
    attr(flag::OPTIONAL, 14, &v, None)
}

#[test]
fn rfc7606_session_reset_cases_send_the_right_notification() -> Result<()> {
    if !require("rfc7606_session_reset") {
        return Ok(());
    }
    let (tor, node) = tor_and_node("mar")?;
    // (what, message bytes, NOTIFICATION code, acceptable subcodes)
    let p = Ipv4Addr::new(10, 2, 0, 0);
    let base = base_attrs(PEER_AS, PEER);
    let mut header18 = vec![0xff; 16];
    header18.extend_from_slice(&[0, 18, 2]);
    let mut bad_type = vec![0xff; 16];
    bad_type.extend_from_slice(&[0, 19, 9]);
    let mut overrun_withdrawn = vec![0xff; 16];
    overrun_withdrawn.extend_from_slice(&[0, 23, 2, 0, 100, 0, 0]);
    let cases: Vec<(&str, Vec<u8>, u8, Vec<u8>)> = vec![
        // RFC 4271 §6.3: syntactically incorrect NLRI -> Invalid Network
        // Field (RFC 7606 §5.3: session reset).
        (
            "NLRI prefix length 33",
            update(&[], &base, &[33, 10, 2, 0, 0, 0], None),
            3,
            vec![10],
        ),
        // An attribute overrunning the attribute field: the NLRI cannot be
        // located, so RFC 7606 §4 leaves only a reset.
        (
            "attribute overruns the attribute field",
            update(
                &[],
                &[base.clone(), vec![flag::TRANSITIVE, 1, 200, 0]].concat(),
                &nlri4(p, 24),
                None,
            ),
            3,
            vec![1, 5],
        ),
        // RFC 4271 §6.1: Bad Message Length.
        ("header length 18", header18, 1, vec![2]),
        // RFC 4271 §6.1: Bad Message Type.
        ("message type 9", bad_type, 1, vec![3]),
        // RFC 4271 §6.3 / RFC 7606 §4: Malformed Attribute List.
        (
            "withdrawn length past the message",
            overrun_withdrawn,
            3,
            vec![1],
        ),
        // RFC 7606 §3 g: MP_REACH_NLRI twice.
        (
            "MP_REACH_NLRI twice",
            update(
                &[],
                &[
                    origin_igp(),
                    as_path(&[PEER_AS]),
                    mp_reach_v6(),
                    mp_reach_v6(),
                ]
                .concat(),
                &[],
                None,
            ),
            3,
            vec![1],
        ),
        // RFC 4271 §6.3: Unrecognized Well-known Attribute.
        (
            "unrecognised well-known attribute",
            update(
                &[],
                &[base.clone(), attr(flag::TRANSITIVE, 250, &[1], None)].concat(),
                &nlri4(p, 24),
                None,
            ),
            3,
            vec![2],
        ),
    ];
    let addrs: Vec<Ipv4Addr> = (0..cases.len())
        .map(|i| Ipv4Addr::new(192, 0, 2, 21 + u8::try_from(i).unwrap_or(0)))
        .collect();
    for a in &addrs {
        tor.run("ip", &["addr", "add", &format!("{a}/24"), "dev", "tor0"])?;
    }
    let tortie = speaker(&node, &addrs)?;
    let mut failures = Vec::new();
    for ((what, bytes, code, subcodes), from) in cases.into_iter().zip(addrs) {
        let res = (|| -> Result<()> {
            let mut peer = connect(&tor, from)?;
            tortie.wait_established(&from.to_string(), T)?;
            peer.send_raw(&bytes)?;
            let n = peer.expect_notification(T)?;
            let got_code = u8::from(n.code);
            ensure!(
                got_code == code && subcodes.contains(&n.subcode),
                "NOTIFICATION {n} (code {got_code}, subcode {}), want code {code} subcode {subcodes:?}",
                n.subcode
            );
            let st = tortie.wait_status("status shows the reset", T, |s| {
                s.peer(&from.to_string()).is_some_and(|p| !p.established())
            })?;
            eprintln!(
                "{what}: got {n}; tortie lastError: {:?}",
                st.peer(&from.to_string()).map(|p| p.last_error.clone())
            );
            Ok(())
        })();
        if let Err(e) = res {
            failures.push(format!("{what}: {e:#}"));
        }
    }
    if !failures.is_empty() {
        return Err(anyhow!(
            "{} case(s) failed:\n{}\n{}",
            failures.len(),
            failures.join("\n"),
            tortie.describe()
        ));
    }
    Ok(())
}
