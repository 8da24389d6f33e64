//! Two FSMs driven against each other on a virtual clock, every message
//! going through the codec (see `fsm_harness`).
//!
//! ```text
//!   A: AS65001, 192.0.2.1  <── in-memory TCP ──>  B: AS65002, 192.0.2.2
//! ```

mod fsm_harness;

use std::time::Duration;

use fsm_harness::{ebgp_pair, Net, Side};
use tortie_bgp::fsm::{Action, DownReason, Event, Fsm, NoJitter, ScriptedJitter, State, TimerKind};
use tortie_bgp::wire::{
    CeaseSubcode, ErrorCode, Family, HoldTime, Message, NlriSet, Notification, OpenSubcode, Prefix,
    RouterId, Update,
};

fn fsm(cfg: tortie_bgp::fsm::PeerConfig) -> Fsm {
    Fsm::new(cfg, Box::new(NoJitter))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A sends, B receives an UPDATE with one withdrawn prefix.
fn sample_update() -> Update {
    let p = Prefix::v4([10, 244, 1, 0].into(), 24).expect("valid prefix");
    Update {
        withdrawn: NlriSet::from_prefixes(Family::IPV4_UNICAST, [p]).expect("encodes"),
        ..Update::default()
    }
}

fn count_sent(net: &Net, s: Side, pred: impl Fn(&Message) -> bool) -> usize {
    net.actions_of(s)
        .into_iter()
        .filter(|a| matches!(a, Action::Send { message, .. } if pred(message)))
        .count()
}

fn closes_with(net: &Net, s: Side) -> Vec<Option<Notification>> {
    net.actions_of(s)
        .into_iter()
        .filter_map(|a| match a {
            Action::Close { notification, .. } => Some(notification.clone()),
            _ => None,
        })
        .collect()
}

fn up_pair() -> Net {
    let (a, mut b) = ebgp_pair();
    b.passive = true;
    let mut net = Net::new(fsm(a), fsm(b));
    net.start(Event::ManualStart, Event::ManualStart);
    net
}

#[test]
fn active_and_passive_reach_established() {
    let net = up_pair();
    assert_eq!(net.state(Side::A), State::Established);
    assert_eq!(net.state(Side::B), State::Established);
    // One link, opened by A; the passive side never connected out.
    assert_eq!(net.open_links().len(), 1);
    assert_eq!(net.established_link().map(|l| l.2), Some(Side::A));
    assert!(!net
        .actions_of(Side::B)
        .iter()
        .any(|a| matches!(a, Action::Connect)));
    // Both report Established with what was negotiated.
    let na = net.a.negotiated().expect("negotiated");
    assert_eq!(na.peer_as.0, 65002);
    assert_eq!(na.hold_time, HoldTime(90));
    let nb = net.b.negotiated().expect("negotiated");
    assert_eq!(nb.peer_id, RouterId([192, 0, 2, 1].into()));
    let established: Vec<_> = net
        .log
        .iter()
        .filter(|(_, _, a)| matches!(a, Action::Established { .. }))
        .collect();
    assert_eq!(established.len(), 2);
    // The visible state walk of A is the RFC's.
    let walk: Vec<State> = net
        .actions_of(Side::A)
        .into_iter()
        .filter_map(|a| match a {
            Action::StateChanged { to, .. } => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(
        walk,
        [
            State::Connect,
            State::OpenSent,
            State::OpenConfirm,
            State::Established
        ]
    );
    // No idle-hold or connect-retry timer left running.
    for f in [&net.a, &net.b] {
        assert!(!f.timers().is_armed(TimerKind::ConnectRetry));
        assert!(!f.timers().is_armed(TimerKind::IdleHold));
        assert!(f.timers().is_armed(TimerKind::Hold));
        assert!(f.timers().is_armed(TimerKind::Keepalive));
    }
}

#[test]
fn keepalives_every_third_of_hold_time_keep_the_session_up() {
    let mut net = up_pair();
    net.clear_log();
    net.advance(secs(600));
    assert_eq!(net.state(Side::A), State::Established);
    assert_eq!(net.state(Side::B), State::Established);
    // 600 s / 30 s, with no jitter: exactly 20 KEEPALIVEs each.
    assert_eq!(
        count_sent(&net, Side::A, |m| matches!(m, Message::Keepalive)),
        20
    );
    assert_eq!(
        count_sent(&net, Side::B, |m| matches!(m, Message::Keepalive)),
        20
    );
}

#[test]
fn keepalive_jitter_stays_within_rfc_bounds() {
    let (a, mut b) = ebgp_pair();
    b.passive = true;
    let jit = ScriptedJitter::new(vec![0.75, 1.0, 0.9]);
    let mut net = Net::new(Fsm::new(a, Box::new(jit)), fsm(b));
    net.start(Event::ManualStart, Event::ManualStart);
    net.clear_log();
    net.advance(secs(300));
    let times: Vec<Duration> = net
        .log
        .iter()
        .filter(|(_, s, a)| {
            *s == Side::A
                && matches!(
                    a,
                    Action::Send {
                        message: Message::Keepalive,
                        ..
                    }
                )
        })
        .map(|(t, _, _)| *t)
        .collect();
    assert!(times.len() >= 10, "{times:?}");
    for w in times.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(22_500) && gap <= secs(30),
            "{gap:?}"
        );
    }
}

#[test]
fn updates_reach_the_peer_through_the_codec() {
    let mut net = up_pair();
    net.clear_log();
    let now = net.now;
    let acts = net
        .a
        .send_update(now, sample_update())
        .expect("established");
    net.apply(Side::A, acts);
    let got: Vec<&Update> = net
        .actions_of(Side::B)
        .into_iter()
        .filter_map(|a| match a {
            Action::UpdateReceived { update } => Some(update.as_ref()),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![&sample_update()]);
    // Sending restarted A's keepalive timer: next KEEPALIVE 30 s later.
    assert_eq!(
        net.a.timers().deadline(TimerKind::Keepalive),
        Some(now + secs(30))
    );
    // Not possible before Established.
    let (c, _) = ebgp_pair();
    let mut idle = fsm(c);
    let e = idle.send_update(now, sample_update()).expect_err("idle");
    assert_eq!(e.state, State::Idle);
}

#[test]
fn hold_time_zero_means_no_timers_and_no_keepalives() {
    let (mut a, mut b) = ebgp_pair();
    a.hold_time = HoldTime(0);
    b.passive = true;
    let mut net = Net::new(fsm(a), fsm(b));
    net.start(Event::ManualStart, Event::ManualStart);
    assert_eq!(net.state(Side::B), State::Established);
    net.clear_log();
    for f in [&net.a, &net.b] {
        assert_eq!(f.negotiated().map(|n| n.hold_time), Some(HoldTime(0)));
        assert_eq!(f.poll_timeout(), None, "{:?}", f.timers());
    }
    net.mute = [true, true];
    net.advance(secs(24 * 3600));
    assert_eq!(net.state(Side::A), State::Established);
    assert!(net.log.is_empty());
}

#[test]
fn hold_timer_expiry_sends_notification_and_explains() {
    let mut net = up_pair();
    net.clear_log();
    // B goes silent (its KEEPALIVEs are lost); A's hold timer runs out.
    net.mute[1] = true;
    // The last KEEPALIVE from B arrived at t = 0 (start ran 1 s).
    net.advance(secs(88));
    assert_eq!(net.state(Side::A), State::Established);
    net.advance(secs(1));
    assert_ne!(net.state(Side::A), State::Established);
    assert_eq!(
        closes_with(&net, Side::A),
        vec![Some(Notification::hold_timer_expired())]
    );
    let down = net.actions_of(Side::A).into_iter().find_map(|a| match a {
        Action::SessionDown {
            reason,
            retain_routes_for,
        } => Some((reason.clone(), *retain_routes_for)),
        _ => None,
    });
    let (reason, retain) = down.expect("session down reported");
    assert_eq!(
        reason.to_string(),
        "hold timer expired after 90 s, no message from the peer"
    );
    assert_eq!(retain, None);
    // B learns why from the NOTIFICATION (it still receives).
    assert!(matches!(
        net.b.last_error(),
        Some(DownReason::NotificationReceived { notification }) if notification.code == ErrorCode::HoldTimerExpired
    ));
    // A backs off in Idle (1 s) and then comes back on its own.
    assert!(matches!(
        net.state(Side::A),
        State::Idle | State::Connect | State::OpenSent
    ));
    net.mute[1] = false;
    net.advance(secs(5));
    assert_eq!(net.state(Side::A), State::Established);
    assert_eq!(net.state(Side::B), State::Established);
}

#[test]
fn no_open_within_four_minutes() {
    let (a, mut b) = ebgp_pair();
    // B gets A's OPEN and then waits for ever (hold time 0 on its side);
    // its own OPEN never arrives at A.
    b.hold_time = HoldTime(0);
    let mut net = Net::new(fsm(a), fsm(b));
    net.mute[1] = true;
    net.handle(Side::B, Event::ManualStartPassive);
    net.handle(Side::A, Event::ManualStart);
    assert_eq!(net.state(Side::A), State::OpenSent);
    net.advance(secs(239));
    assert_eq!(net.state(Side::A), State::OpenSent);
    net.advance(secs(1));
    assert_eq!(net.state(Side::A), State::Idle);
    assert_eq!(
        net.a.last_error().map(ToString::to_string).as_deref(),
        Some("no OPEN from the peer within 240 s, sent NOTIFICATION Hold Timer Expired")
    );
}

fn open_error_case(
    tweak: impl Fn(&mut tortie_bgp::fsm::PeerConfig, &mut tortie_bgp::fsm::PeerConfig),
    subcode: OpenSubcode,
    data: Vec<u8>,
    symmetric: bool,
) {
    let (mut a, mut b) = ebgp_pair();
    b.passive = true;
    tweak(&mut a, &mut b);
    let mut net = Net::new(fsm(a), fsm(b));
    net.start(Event::ManualStart, Event::ManualStart);
    // One side refused the other's OPEN; nobody is established.
    assert_ne!(net.state(Side::A), State::Established);
    assert_ne!(net.state(Side::B), State::Established);
    let sent: Vec<Notification> = [Side::A, Side::B]
        .into_iter()
        .flat_map(|s| closes_with(&net, s))
        .flatten()
        .collect();
    let want = Notification::open(subcode, data);
    assert!(sent.contains(&want), "sent {sent:?}, want {want:?}");
    // The refusing side says why; the refused side shows the NOTIFICATION.
    let errors: Vec<String> = [&net.a, &net.b]
        .into_iter()
        .filter_map(|f| f.last_error().map(ToString::to_string))
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("OPEN from the peer refused")),
        "{errors:?}"
    );
    // (When both sides object, each may refuse first.)
    assert!(
        symmetric
            || errors
                .iter()
                .any(|e| e.starts_with("peer sent NOTIFICATION OPEN Message Error")),
        "{errors:?}"
    );
    // Both back off in Idle rather than retrying at once.
    net.clear_log();
    net.advance(Duration::from_millis(500));
    assert!(net.log.is_empty(), "{:?}", net.log);
}

#[test]
fn bad_peer_as_is_refused() {
    open_error_case(
        |a, _| a.peer_as = tortie_bgp::fsm::PeerAs::Exact(tortie_bgp::wire::Asn(65099)),
        OpenSubcode::BadPeerAs,
        vec![],
        false,
    );
}

#[test]
fn too_short_hold_time_is_refused() {
    open_error_case(
        |a, b| {
            a.min_hold_time = 30;
            b.hold_time = HoldTime(9);
        },
        OpenSubcode::UnacceptableHoldTime,
        vec![],
        false,
    );
}

#[test]
fn same_identifier_on_ibgp_is_refused() {
    open_error_case(
        |a, b| {
            a.peer_as = tortie_bgp::fsm::PeerAs::Exact(tortie_bgp::wire::Asn(65001));
            b.local_as = tortie_bgp::wire::Asn(65001);
            b.peer_as = tortie_bgp::fsm::PeerAs::Exact(tortie_bgp::wire::Asn(65001));
            b.router_id = a.router_id;
        },
        OpenSubcode::BadBgpIdentifier,
        vec![],
        true,
    );
}

#[test]
fn missing_required_capability_is_refused() {
    open_error_case(
        |a, _| a.required_capabilities = vec![tortie_bgp::wire::capability::code::EXTENDED_MESSAGE],
        OpenSubcode::UnsupportedCapability,
        vec![6, 0],
        false,
    );
}

/// Both sides active and started at the same instant: two connections,
/// one per direction. Returns the net after it settled.
fn collide(a_id: [u8; 4], b_id: [u8; 4]) -> Net {
    let (mut a, mut b) = ebgp_pair();
    a.router_id = RouterId(a_id.into());
    b.router_id = RouterId(b_id.into());
    let mut net = Net::new(fsm(a), fsm(b));
    net.start(Event::ManualStart, Event::ManualStart);
    net
}

fn assert_collision_resolved(net: &Net, winner: Side) {
    assert_eq!(net.state(Side::A), State::Established);
    assert_eq!(net.state(Side::B), State::Established);
    // Exactly one connection survives, both ends agree, and it is the one
    // opened by the higher identifier.
    assert_eq!(net.open_links().len(), 1, "{:?}", net.open_links());
    let (ca, cb, initiator) = net.established_link().expect("established");
    assert_eq!(initiator, winner);
    assert_eq!(net.b.established_conn(), Some(cb));
    assert_eq!(net.a.established_conn(), Some(ca));
    // The loser was closed with Cease / Connection Collision Resolution.
    let cease = Notification::cease(CeaseSubcode::ConnectionCollisionResolution);
    let all: Vec<Notification> = [Side::A, Side::B]
        .into_iter()
        .flat_map(|s| closes_with(net, s))
        .flatten()
        .collect();
    assert!(all.contains(&cease), "{all:?}");
    // And no one went through Idle because of it.
    assert_eq!(net.a.connect_retry_counter(), 0);
    assert_eq!(net.b.connect_retry_counter(), 0);
}

#[test]
fn collision_keeps_connection_of_higher_identifier_a() {
    let net = collide([192, 0, 2, 200], [192, 0, 2, 2]);
    assert_collision_resolved(&net, Side::A);
}

#[test]
fn collision_keeps_connection_of_higher_identifier_b() {
    let net = collide([192, 0, 2, 1], [192, 0, 2, 2]);
    assert_collision_resolved(&net, Side::B);
}

#[test]
fn collision_with_equal_identifiers_uses_as_numbers() {
    // eBGP may share an identifier (RFC 6286); AS 65002 > 65001 wins.
    let net = collide([192, 0, 2, 9], [192, 0, 2, 9]);
    assert_collision_resolved(&net, Side::B);
}

#[test]
fn new_connection_while_established_is_refused_without_graceful_restart() {
    let mut net = up_pair();
    net.clear_log();
    // B (its TCP socket aside) opens a second connection: a fresh FSM.
    let (_, b2) = ebgp_pair();
    net.b = fsm(b2);
    net.handle(Side::B, Event::ManualStart);
    // A keeps its session and refuses the newcomer with Cease/7.
    assert!(
        closes_with(&net, Side::A).contains(&Some(Notification::cease(
            CeaseSubcode::ConnectionCollisionResolution
        )))
    );
    assert!(!net
        .actions_of(Side::A)
        .iter()
        .any(|a| matches!(a, Action::SessionDown { .. })));
}

#[test]
fn graceful_restart_peer_reconnecting_replaces_the_session() {
    let (mut a, mut b) = ebgp_pair();
    b.passive = true;
    a.graceful_restart = Some(Default::default());
    b.graceful_restart = Some(tortie_bgp::fsm::GracefulRestartConfig {
        restart_time: 60,
        ..Default::default()
    });
    let mut net = Net::new(fsm(a), fsm(b.clone()));
    net.start(Event::ManualStart, Event::ManualStart);
    assert_eq!(net.state(Side::A), State::Established);
    net.clear_log();
    // B restarts: a new process (R bit set) connects while A still thinks
    // the old session is up.
    let mut b2 = b;
    b2.passive = false;
    if let Some(gr) = b2.graceful_restart.as_mut() {
        gr.restarting = true;
    }
    net.b = fsm(b2);
    net.handle(Side::B, Event::ManualStart);
    net.advance(secs(1));
    let down = net.actions_of(Side::A).into_iter().find_map(|a| match a {
        Action::SessionDown {
            reason,
            retain_routes_for,
        } => Some((reason.clone(), *retain_routes_for)),
        _ => None,
    });
    assert_eq!(down, Some((DownReason::PeerRestarted, Some(secs(60)))));
    assert_eq!(net.state(Side::A), State::Established);
    assert_eq!(net.state(Side::B), State::Established);
    let gr = net
        .a
        .negotiated()
        .and_then(|n| n.peer_graceful_restart.clone());
    assert!(gr.is_some_and(|g| g.restarting));
}

#[test]
fn manual_stop_sends_shutdown_communication() {
    let mut net = up_pair();
    net.clear_log();
    net.handle(
        Side::A,
        Event::ManualStop {
            message: Some("maintenance, back at 10:00".into()),
        },
    );
    assert_eq!(net.state(Side::A), State::Idle);
    assert_eq!(
        net.b.last_error().map(ToString::to_string).as_deref(),
        Some(
            "peer sent NOTIFICATION Cease / Administrative Shutdown: \"maintenance, back at 10:00\" \
             (the peer's operator shut the session down)"
        )
    );
    // A stays down: no timers at all, no reconnect, even much later.
    assert_eq!(net.a.poll_timeout(), None);
    net.clear_log();
    net.advance(secs(3600));
    assert!(!net
        .actions_of(Side::A)
        .iter()
        .any(|a| matches!(a, Action::Connect)));
    // B (passive) waits in Active after its backoff; A can start again.
    net.handle(Side::A, Event::ManualStart);
    assert_eq!(net.state(Side::A), State::Established);
}

#[test]
fn passive_peer_never_connects_out() {
    let (_, mut b) = ebgp_pair();
    b.passive = true;
    let (a, _) = ebgp_pair();
    let mut net = Net::new(fsm(a), fsm(b));
    net.listening = [false, false];
    net.handle(Side::B, Event::ManualStart);
    net.handle(Side::B, Event::AutomaticStart);
    net.advance(secs(24 * 3600));
    assert_eq!(net.state(Side::B), State::Active);
    assert!(!net
        .actions_of(Side::B)
        .iter()
        .any(|a| matches!(a, Action::Connect)));
    assert_eq!(net.b.poll_timeout(), None);
}

#[test]
fn refused_connects_back_off_exponentially_with_jitter() {
    let (a, b) = ebgp_pair();
    let jit = ScriptedJitter::new(vec![0.8]);
    let mut net = Net::new(Fsm::new(a, Box::new(jit)), fsm(b));
    net.listening[1] = false; // B is not listening: every connect fails
    net.handle(Side::A, Event::ManualStart);
    net.advance(secs(1000));
    let connects: Vec<Duration> = net
        .log
        .iter()
        .filter(|(_, s, a)| *s == Side::A && matches!(a, Action::Connect))
        .map(|(t, _, _)| *t)
        .collect();
    let gaps: Vec<u64> = connects
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis() as u64)
        .collect();
    // 1, 2, 4, ... s, capped at 120 s, each times the 0.8 jitter factor.
    assert_eq!(
        gaps.get(..9),
        Some(&[800, 1600, 3200, 6400, 12_800, 25_600, 51_200, 96_000, 96_000][..]),
        "{gaps:?}"
    );
    // Meanwhile A listens (Active), so B could still reach it.
    assert_eq!(net.state(Side::A), State::Active);
    net.listening[1] = true;
    net.handle(Side::B, Event::ManualStart);
    assert_eq!(net.state(Side::A), State::Established);
}

#[test]
fn route_refresh_round_trip() {
    let mut net = up_pair();
    net.clear_log();
    let now = net.now;
    let rr = tortie_bgp::wire::RouteRefresh::request(Family::IPV4_UNICAST);
    let acts = net.b.send_route_refresh(now, rr).expect("established");
    net.apply(Side::B, acts);
    assert!(net
        .actions_of(Side::A)
        .iter()
        .any(|a| matches!(a, Action::RouteRefreshReceived { refresh } if *refresh == rr)));
}

#[test]
fn peer_notification_in_established_is_reported() {
    let mut net = up_pair();
    net.clear_log();
    let stop = Event::AutomaticStop {
        notification: Notification::cease(CeaseSubcode::MaxPrefixesReached),
    };
    net.handle(Side::B, stop);
    let reason = net.actions_of(Side::A).into_iter().find_map(|a| match a {
        Action::SessionDown { reason, .. } => Some(reason.to_string()),
        _ => None,
    });
    assert_eq!(
        reason.as_deref(),
        Some("peer sent NOTIFICATION Cease / Maximum Number of Prefixes Reached")
    );
    // AutomaticStop keeps automatic restarts: B comes back by itself.
    net.advance(secs(10));
    assert_eq!(net.state(Side::A), State::Established);
    assert_eq!(net.state(Side::B), State::Established);
}

#[test]
fn a_virtual_day_with_tight_timers_and_random_jitter_never_drops() {
    // Hold time 3 s (the RFC minimum), keepalive 1 s jittered down to
    // 0.75 s, both sides, for 24 virtual hours: ~200k KEEPALIVEs through
    // the codec, and not one hold timer expiry.
    let (mut a, mut b) = ebgp_pair();
    a.hold_time = HoldTime(3);
    b.hold_time = HoldTime(3);
    b.passive = true;
    let factors = |seed: u64| {
        // A small LCG: deterministic "random" factors in [0.75, 1.0].
        let mut x = seed;
        (0..997)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                0.75 + 0.25 * ((x >> 11) as f64 / (1u64 << 53) as f64)
            })
            .collect::<Vec<f64>>()
    };
    let mut net = Net::new(
        Fsm::new(a, Box::new(ScriptedJitter::new(factors(1)))),
        Fsm::new(b, Box::new(ScriptedJitter::new(factors(2)))),
    );
    net.start(Event::ManualStart, Event::ManualStart);
    assert_eq!(net.state(Side::A), State::Established);
    net.clear_log();
    let started = std::time::Instant::now();
    net.advance(secs(24 * 3600));
    let elapsed = started.elapsed();
    assert_eq!(net.state(Side::A), State::Established);
    assert_eq!(net.state(Side::B), State::Established);
    let downs = net
        .log
        .iter()
        .filter(|(_, _, a)| matches!(a, Action::SessionDown { .. } | Action::StateChanged { .. }))
        .count();
    assert_eq!(downs, 0);
    let keepalives = count_sent(&net, Side::A, |m| matches!(m, Message::Keepalive))
        + count_sent(&net, Side::B, |m| matches!(m, Message::Keepalive));
    assert!(keepalives > 2 * 86_400, "{keepalives}");
    eprintln!("{keepalives} KEEPALIVEs over a virtual day in {elapsed:?}");
}
