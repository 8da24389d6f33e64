//! The FSM against byte streams recorded from BIRD 2 and GoBGP 3 (see
//! `data/README.md`): we take one daemon's place, feed the other daemon's
//! half of the session through the codec, and check what we negotiate and
//! report. The OPENs, capabilities and messages come from independent
//! implementations, not from our own encoder.
//!
//! ```text
//!   recorded peer stream ──frame/decode (fsm.context_for)──► Fsm (in the other daemon's role)
//! ```

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tortie_bgp::fsm::{
    Action, ConnId, Event, Fsm, GracefulRestartConfig, NoJitter, PeerConfig, State,
};
use tortie_bgp::wire::{decode_message, frame, Asn, ErrorCode, Family, Frame, HoldTime, RouterId};

const C: ConnId = ConnId(1);

fn data(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn cfg(local: u32, peer: u32, id: [u8; 4]) -> PeerConfig {
    PeerConfig::new(Asn(local), Asn(peer), RouterId(Ipv4Addr::from(id)))
}

/// Starts `fsm` on one connection (inbound when the config is passive),
/// then feeds every message of `stream`, framing and decoding each with
/// the context the FSM gives at that point. Returns all actions.
fn replay(fsm: &mut Fsm, stream: &[u8]) -> Vec<Action> {
    let mut now = Instant::now();
    let mut actions = fsm.handle(now, Event::ManualStart);
    let accept = if fsm.config().passive {
        Event::TcpConnectionConfirmed { conn: C }
    } else {
        Event::TcpCrAcked { conn: C }
    };
    actions.extend(fsm.handle(now, accept));
    let mut rest = stream;
    while !rest.is_empty() {
        let ctx = fsm.context_for(C);
        let length = match frame(rest, &ctx) {
            Ok(Frame::Complete { length, .. }) => length,
            other => panic!("stream does not frame: {other:?}"),
        };
        let (msg, tail) = rest.split_at(length);
        rest = tail;
        let event = match decode_message(msg, &ctx) {
            Ok(m) => Event::received(C, m),
            Err(e) => Event::decode_failed(C, e),
        };
        now += Duration::from_millis(10);
        actions.extend(fsm.handle(now, event));
    }
    actions
}

fn count(actions: &[Action], pred: impl Fn(&Action) -> bool) -> usize {
    actions.iter().filter(|a| pred(a)).count()
}

fn announced(actions: &[Action]) -> (usize, usize) {
    let mut v4 = 0;
    let mut v6 = 0;
    for a in actions {
        if let Action::UpdateReceived { update } = a {
            assert!(update.treat_as_withdraw.is_none(), "{update:?}");
            for (family, _) in update.announced_entries() {
                if family.is_ipv6() {
                    v6 += 1;
                } else {
                    v4 += 1;
                }
            }
        }
    }
    (v4, v6)
}

fn down_reason(actions: &[Action]) -> Option<(String, Option<Duration>)> {
    actions.iter().find_map(|a| match a {
        Action::SessionDown {
            reason,
            retain_routes_for,
        } => Some((reason.to_string(), *retain_routes_for)),
        _ => None,
    })
}

/// Our side configured like GoBGP in `ebgp-mp`.
fn gobgp_role_ebgp_mp() -> PeerConfig {
    let mut c = cfg(4_200_000_002, 4_200_000_001, [192, 0, 2, 2]);
    c.passive = true;
    c.families = vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST];
    c.add_path_receive = c.families.clone();
    c.add_path_send = c.families.clone();
    c.graceful_restart = Some(GracefulRestartConfig::default());
    c
}

#[test]
fn ebgp_mp_bird_session_as_seen_by_us() {
    let mut fsm = Fsm::new(gobgp_role_ebgp_mp(), Box::new(NoJitter));
    let actions = replay(&mut fsm, &data("ebgp-mp/bird-to-gobgp.bin"));
    // It came up ...
    let neg = actions
        .iter()
        .find_map(|a| match a {
            Action::Established { negotiated, .. } => Some(negotiated.clone()),
            _ => None,
        })
        .expect("established with BIRD");
    assert_eq!(neg.peer_as, Asn(4_200_000_001));
    assert_eq!(neg.peer_id, RouterId(Ipv4Addr::new(192, 0, 2, 1)));
    assert!(!neg.ibgp);
    assert_eq!(neg.hold_time, HoldTime(90));
    assert_eq!(
        neg.families,
        vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]
    );
    assert!(neg.four_octet_as && neg.route_refresh);
    // BIRD offers extended messages and enhanced route refresh; we did not.
    assert!(!neg.extended_message && !neg.enhanced_route_refresh);
    assert_eq!(neg.add_path_receive, neg.families);
    assert_eq!(neg.add_path_send, neg.families);
    let gr = neg.peer_graceful_restart.clone().expect("BIRD has GR on");
    assert_eq!(gr.restart_time, Duration::from_secs(120));
    assert_eq!(gr.families.len(), 2);
    // ... every UPDATE decoded with the negotiated ADD-PATH context ...
    assert_eq!(announced(&actions), (45, 20));
    assert_eq!(
        count(&actions, |a| matches!(
            a,
            Action::RouteRefreshReceived { .. }
        )),
        2
    );
    // ... and it ended with BIRD's shutdown communication, routes dropped
    // (a NOTIFICATION without the N bit on both sides ends GR).
    let (reason, retain) = down_reason(&actions).expect("session down");
    assert_eq!(
        reason,
        "peer sent NOTIFICATION Cease / Administrative Shutdown: \"maintenance\" \
         (the peer's operator shut the session down)"
    );
    assert_eq!(retain, None);
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn ebgp_mp_gobgp_session_as_seen_by_us() {
    // Our side configured like BIRD: active, extended messages offered.
    let mut c = cfg(4_200_000_001, 4_200_000_002, [192, 0, 2, 1]);
    c.families = vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST];
    c.add_path_receive = c.families.clone();
    c.add_path_send = c.families.clone();
    c.graceful_restart = Some(GracefulRestartConfig::default());
    c.extended_message = true;
    let mut fsm = Fsm::new(c, Box::new(NoJitter));
    let mut actions = replay(&mut fsm, &data("ebgp-mp/gobgp-to-bird.bin"));
    assert_eq!(fsm.state(), State::Established);
    let neg = fsm.negotiated().expect("negotiated");
    // GoBGP 3.10 does not offer extended messages.
    assert!(!neg.extended_message);
    assert_eq!(neg.context.max_message_len(), 4096);
    assert!(neg.context.receives_path_ids(Family::IPV6_UNICAST));
    let (v4, v6) = announced(&actions);
    assert!(v4 >= 30 && v6 >= 15, "{v4} {v6}");
    // The stream ends with a TCP close: GR keeps GoBGP's routes 120 s.
    actions = fsm.handle(Instant::now(), Event::TcpConnectionFails { conn: C });
    let (reason, retain) = down_reason(&actions).expect("session down");
    assert_eq!(reason, "TCP connection to the peer closed");
    assert_eq!(retain, Some(Duration::from_secs(120)));
}

#[test]
fn as4_trans_two_octet_bird() {
    let mut c = cfg(65002, 65001, [192, 0, 2, 2]);
    c.passive = true;
    let mut fsm = Fsm::new(c, Box::new(NoJitter));
    let actions = replay(&mut fsm, &data("as4-trans/bird-to-gobgp.bin"));
    let neg = actions
        .iter()
        .find_map(|a| match a {
            Action::Established { negotiated, .. } => Some(negotiated.clone()),
            _ => None,
        })
        .expect("established with a 2-octet-only BIRD");
    assert_eq!(neg.peer_as, Asn(65001));
    assert!(!neg.four_octet_as && !neg.context.four_octet_as);
    assert_eq!(announced(&actions), (10, 0));
    let (reason, _) = down_reason(&actions).expect("session down");
    assert!(reason.starts_with("peer sent NOTIFICATION Cease / Administrative Shutdown"));
    // The same BIRD refuses to be our peer if we expect its 4-octet AS.
    let mut wrong = cfg(65002, 4_200_000_001, [192, 0, 2, 2]);
    wrong.passive = true;
    let mut fsm = Fsm::new(wrong, Box::new(NoJitter));
    let actions = replay(&mut fsm, &data("as4-trans/bird-to-gobgp.bin"));
    let sent = actions.iter().find_map(|a| match a {
        Action::Close {
            notification: Some(n),
            ..
        } => Some(n.clone()),
        _ => None,
    });
    assert_eq!(
        sent.map(|n| (n.code, n.subcode)),
        Some((ErrorCode::OpenMessage, 2))
    );
}

#[test]
fn ibgp_route_reflector_client_bird() {
    let mut c = cfg(64512, 64512, [192, 0, 2, 2]);
    c.passive = true;
    c.families = vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST];
    let mut fsm = Fsm::new(c, Box::new(NoJitter));
    let actions = replay(&mut fsm, &data("ibgp-rr/bird1-to-gobgp.bin"));
    let neg = actions
        .iter()
        .find_map(|a| match a {
            Action::Established { negotiated, .. } => Some(negotiated.clone()),
            _ => None,
        })
        .expect("established with bird1");
    assert!(neg.ibgp);
    assert_eq!(neg.peer_id, RouterId(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(announced(&actions), (8, 4));
    let closed_by_peer = actions.iter().any(|a| {
        matches!(a, Action::SessionDown { reason, .. }
            if reason.sent_notification().is_none() && reason.to_string().contains("Cease"))
    });
    assert!(closed_by_peer);
    // Our own identifier on the other end of an iBGP session is refused.
    let mut same = cfg(64512, 64512, [192, 0, 2, 1]);
    same.passive = true;
    let mut fsm = Fsm::new(same, Box::new(NoJitter));
    let actions = replay(&mut fsm, &data("ibgp-rr/bird1-to-gobgp.bin"));
    assert!(actions.iter().any(|a| matches!(a,
        Action::Close { notification: Some(n), .. }
            if n.code == ErrorCode::OpenMessage && n.subcode == 3)));
}
