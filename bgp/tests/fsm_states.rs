//! One FSM driven directly, state by state, against the RFC 4271 §8.2.2
//! tables: what each state does with the events it does not expect, and
//! a property test that random event sequences never panic nor leave a
//! session timer running in Idle.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tortie_bgp::fsm::negotiate::local_open;
use tortie_bgp::fsm::{
    Action, ConnId, DownReason, Event, Fsm, NoJitter, PeerConfig, State, TimerKind,
};
use tortie_bgp::wire::{
    Asn, CeaseSubcode, DecodeError, DecodeErrorKind, ErrorCode, Family, FsmSubcode, HeaderSubcode,
    HoldTime, Notification, Open, OpenSubcode, RouteRefresh, RouterId, Update, UpdateSubcode,
};

const C1: ConnId = ConnId(1);
const C2: ConnId = ConnId(2);

fn config() -> PeerConfig {
    PeerConfig::new(
        Asn(65001),
        Asn(65002),
        RouterId(Ipv4Addr::new(192, 0, 2, 1)),
    )
}

fn peer_config() -> PeerConfig {
    PeerConfig::new(
        Asn(65002),
        Asn(65001),
        RouterId(Ipv4Addr::new(192, 0, 2, 2)),
    )
}

fn peer_open() -> Open {
    local_open(&peer_config())
}

struct T {
    fsm: Fsm,
    now: Instant,
}

impl T {
    fn new(cfg: PeerConfig) -> Self {
        Self {
            fsm: Fsm::new(cfg, Box::new(NoJitter)),
            now: Instant::now(),
        }
    }

    fn ev(&mut self, e: Event) -> Vec<Action> {
        self.fsm.handle(self.now, e)
    }

    /// A fresh FSM brought into `state` on connection C1 (outbound).
    fn in_state(state: State) -> Self {
        let mut t = T::new(config());
        match state {
            State::Idle => {}
            State::Active => {
                t.ev(Event::ManualStartPassive);
            }
            _ => {
                t.ev(Event::ManualStart);
            }
        }
        if matches!(
            state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            t.ev(Event::TcpCrAcked { conn: C1 });
        }
        if matches!(state, State::OpenConfirm | State::Established) {
            t.ev(Event::BgpOpen {
                conn: C1,
                open: peer_open(),
            });
        }
        if state == State::Established {
            t.ev(Event::KeepAliveMsg { conn: C1 });
        }
        assert_eq!(t.fsm.state(), state);
        t
    }
}

fn closes(actions: &[Action]) -> Vec<(ConnId, Option<Notification>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Close { conn, notification } => Some((*conn, notification.clone())),
            _ => None,
        })
        .collect()
}

fn session_timers_stopped(f: &Fsm) -> bool {
    [
        TimerKind::ConnectRetry,
        TimerKind::Hold,
        TimerKind::Keepalive,
    ]
    .into_iter()
    .all(|k| !f.timers().is_armed(k))
}

fn update_error() -> DecodeError {
    DecodeError::new(
        DecodeErrorKind::MalformedAttributeList { reason: "test" },
        Notification::update(UpdateSubcode::MalformedAttributeList, vec![]),
    )
}

fn header_error() -> DecodeError {
    DecodeError::new(
        DecodeErrorKind::BadMarker,
        Notification::header(HeaderSubcode::ConnectionNotSynchronized, vec![]),
    )
}

#[test]
fn unexpected_messages_get_the_rfc6608_fsm_error_of_the_state() {
    let update = || Event::UpdateMsg {
        conn: C1,
        update: Box::default(),
    };
    let cases: Vec<(State, Event, FsmSubcode)> = vec![
        (
            State::OpenSent,
            Event::KeepAliveMsg { conn: C1 },
            FsmSubcode::UnexpectedInOpenSent,
        ),
        (State::OpenSent, update(), FsmSubcode::UnexpectedInOpenSent),
        (
            State::OpenSent,
            Event::RouteRefreshMsg {
                conn: C1,
                refresh: RouteRefresh::request(Family::IPV4_UNICAST),
            },
            FsmSubcode::UnexpectedInOpenSent,
        ),
        (
            State::OpenConfirm,
            update(),
            FsmSubcode::UnexpectedInOpenConfirm,
        ),
        (
            State::OpenConfirm,
            Event::BgpOpen {
                conn: C1,
                open: peer_open(),
            },
            FsmSubcode::UnexpectedInOpenConfirm,
        ),
        (
            State::Established,
            Event::BgpOpen {
                conn: C1,
                open: peer_open(),
            },
            FsmSubcode::UnexpectedInEstablished,
        ),
    ];
    for (state, event, subcode) in cases {
        let name = event.name();
        let mut t = T::in_state(state);
        let acts = t.ev(event);
        assert_eq!(
            closes(&acts),
            vec![(C1, Some(Notification::fsm(subcode)))],
            "{name} in {state}"
        );
        assert_eq!(t.fsm.state(), State::Idle, "{name} in {state}");
        assert!(session_timers_stopped(&t.fsm));
        assert_eq!(t.fsm.connect_retry_counter(), 1);
        let err = t
            .fsm
            .last_error()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(err.contains(&format!("unexpected {name}")), "{err}");
        assert_eq!(
            acts.iter().any(|a| matches!(a, Action::SessionDown { .. })),
            state == State::Established
        );
    }
}

#[test]
fn unexpected_timer_events_without_a_connection_go_idle() {
    for state in [State::Connect, State::Active] {
        for event in [Event::HoldTimerExpires, Event::KeepaliveTimerExpires] {
            let mut t = T::in_state(state);
            let acts = t.ev(event);
            assert_eq!(t.fsm.state(), State::Idle);
            assert!(closes(&acts).is_empty());
            assert_eq!(
                acts.iter().any(|a| matches!(a, Action::AbortConnect)),
                state == State::Connect
            );
            assert_eq!(t.fsm.connect_retry_counter(), 1);
            assert!(session_timers_stopped(&t.fsm));
            // Automatic restart after the 1 s backoff.
            assert_eq!(
                t.fsm.timers().deadline(TimerKind::IdleHold),
                Some(t.now + Duration::from_secs(1))
            );
        }
    }
}

#[test]
fn idle_ignores_everything_but_starts_and_refuses_connections() {
    let mut t = T::in_state(State::Idle);
    for e in [
        Event::ManualStop { message: None },
        Event::ConnectRetryTimerExpires,
        Event::HoldTimerExpires,
        Event::KeepaliveTimerExpires,
        Event::IdleHoldTimerExpires,
        Event::KeepAliveMsg { conn: C1 },
        Event::BgpOpen {
            conn: C1,
            open: peer_open(),
        },
        Event::TcpConnectionFails { conn: C1 },
        Event::NotifMsg {
            conn: C1,
            notification: Notification::cease(CeaseSubcode::AdministrativeReset),
        },
    ] {
        let name = e.name();
        assert!(t.ev(e).is_empty(), "{name}");
        assert_eq!(t.fsm.state(), State::Idle);
    }
    // An inbound connection is refused with Cease / Connection Rejected;
    // an outbound one we did not ask for is just closed.
    let acts = t.ev(Event::TcpConnectionConfirmed { conn: C1 });
    assert_eq!(
        closes(&acts),
        vec![(
            C1,
            Some(Notification::cease(CeaseSubcode::ConnectionRejected))
        )]
    );
    let acts = t.ev(Event::TcpCrAcked { conn: C2 });
    assert_eq!(closes(&acts), vec![(C2, None)]);
    assert_eq!(t.fsm.poll_timeout(), None);
}

#[test]
fn starts_ignored_outside_idle() {
    for state in State::ALL.into_iter().skip(1) {
        let mut t = T::in_state(state);
        for e in [
            Event::ManualStart,
            Event::AutomaticStart,
            Event::ManualStartPassive,
        ] {
            assert!(t.ev(e).is_empty(), "{state}");
        }
        assert_eq!(t.fsm.state(), state);
    }
}

#[test]
fn manual_stop_in_every_state() {
    for state in State::ALL {
        let mut t = T::in_state(state);
        let acts = t.ev(Event::ManualStop {
            message: Some("bye".into()),
        });
        assert_eq!(t.fsm.state(), State::Idle);
        assert_eq!(t.fsm.poll_timeout(), None, "{state}: no timer, no restart");
        assert_eq!(t.fsm.connect_retry_counter(), 0);
        let want: Vec<_> = match state {
            State::OpenSent | State::OpenConfirm | State::Established => vec![(
                C1,
                Some(Notification::shutdown(
                    CeaseSubcode::AdministrativeShutdown,
                    "bye",
                )),
            )],
            _ => vec![],
        };
        assert_eq!(closes(&acts), want, "{state}");
        assert_eq!(
            acts.iter().any(|a| matches!(a, Action::AbortConnect)),
            state == State::Connect
        );
        let down: Vec<_> = acts
            .iter()
            .filter_map(|a| match a {
                Action::SessionDown {
                    reason,
                    retain_routes_for,
                } => Some((reason.clone(), *retain_routes_for)),
                _ => None,
            })
            .collect();
        if state == State::Established {
            assert_eq!(
                down,
                vec![(
                    DownReason::ManualStop {
                        message: Some("bye".into())
                    },
                    None
                )]
            );
        } else {
            assert!(down.is_empty());
        }
    }
}

#[test]
fn connect_retry_timer_retries_the_connection() {
    let mut t = T::in_state(State::Connect);
    assert_eq!(
        t.fsm.timers().deadline(TimerKind::ConnectRetry),
        Some(t.now + Duration::from_secs(120))
    );
    t.now += Duration::from_secs(120);
    let now = t.now;
    let acts = t.fsm.handle_timeout(now);
    assert!(matches!(acts.as_slice(), [Action::Connect]), "{acts:?}");
    assert_eq!(t.fsm.state(), State::Connect);
    assert_eq!(
        t.fsm.timers().deadline(TimerKind::ConnectRetry),
        Some(now + Duration::from_secs(120))
    );
}

#[test]
fn open_sent_connection_lost_goes_active_and_retries() {
    let mut t = T::in_state(State::OpenSent);
    let acts = t.ev(Event::TcpConnectionFails { conn: C1 });
    assert_eq!(t.fsm.state(), State::Active);
    assert!(t.fsm.timers().is_armed(TimerKind::ConnectRetry));
    assert!(!t.fsm.timers().is_armed(TimerKind::Hold));
    assert_eq!(closes(&acts), vec![(C1, None)]);
    // And from Active the retry connects again.
    let now = t.now + Duration::from_secs(120);
    let acts = t.fsm.handle_timeout(now);
    assert!(acts.iter().any(|a| matches!(a, Action::Connect)));
    assert_eq!(t.fsm.state(), State::Connect);
}

#[test]
fn notification_with_version_error_does_not_count_as_failure() {
    let mut t = T::in_state(State::OpenSent);
    t.ev(Event::NotifMsg {
        conn: C1,
        notification: Notification::open(OpenSubcode::UnsupportedVersionNumber, vec![0, 3]),
    });
    assert_eq!(t.fsm.state(), State::Idle);
    assert_eq!(t.fsm.connect_retry_counter(), 0);
    let mut t = T::in_state(State::OpenSent);
    t.ev(Event::NotifMsg {
        conn: C1,
        notification: Notification::open(OpenSubcode::BadPeerAs, vec![]),
    });
    assert_eq!(t.fsm.connect_retry_counter(), 1);
}

#[test]
fn codec_errors_send_the_codecs_notification() {
    for state in [State::OpenSent, State::OpenConfirm, State::Established] {
        for (event, error) in [
            (
                Event::decode_failed(C1, header_error()),
                Notification::header(HeaderSubcode::ConnectionNotSynchronized, vec![]),
            ),
            (
                Event::decode_failed(C1, update_error()),
                Notification::update(UpdateSubcode::MalformedAttributeList, vec![]),
            ),
        ] {
            let mut t = T::in_state(state);
            let acts = t.ev(event);
            assert_eq!(closes(&acts), vec![(C1, Some(error))], "{state}");
            assert_eq!(t.fsm.state(), State::Idle);
            if state == State::Established {
                let reason = acts.iter().find_map(|a| match a {
                    Action::SessionDown { reason, .. } => Some(reason.to_string()),
                    _ => None,
                });
                assert!(
                    reason.is_some_and(|r| r.starts_with("bad message from the peer")),
                    "{acts:?}"
                );
            }
        }
    }
}

#[test]
fn keepalive_timer_in_established_sends_and_rearms() {
    let mut t = T::in_state(State::Established);
    let k = t
        .fsm
        .timers()
        .deadline(TimerKind::Keepalive)
        .expect("armed");
    assert_eq!(k, t.now + Duration::from_secs(30));
    let acts = t.fsm.handle_timeout(k);
    assert!(matches!(
        acts.as_slice(),
        [Action::Send {
            conn: C1,
            message: tortie_bgp::wire::Message::Keepalive
        }]
    ));
    assert_eq!(
        t.fsm.timers().deadline(TimerKind::Keepalive),
        Some(k + Duration::from_secs(30))
    );
}

#[test]
fn messages_restart_the_hold_timer() {
    let mut t = T::in_state(State::Established);
    t.now += Duration::from_secs(60);
    t.ev(Event::UpdateMsg {
        conn: C1,
        update: Box::new(Update::end_of_rib(Family::IPV4_UNICAST)),
    });
    assert_eq!(
        t.fsm.timers().deadline(TimerKind::Hold),
        Some(t.now + Duration::from_secs(90))
    );
}

#[test]
fn second_connection_is_a_candidate_until_its_open() {
    let mut t = T::in_state(State::OpenConfirm);
    let acts = t.ev(Event::TcpConnectionConfirmed { conn: C2 });
    // We answer with our OPEN, as the RFC's second FSM would.
    assert!(matches!(
        acts.as_slice(),
        [Action::Send {
            conn: C2,
            message: tortie_bgp::wire::Message::Open(_)
        }]
    ));
    assert_eq!(t.fsm.connections(), vec![C1, C2]);
    // A KEEPALIVE on the candidate (in OpenSent) is an FSM error for it
    // alone.
    let acts = t.ev(Event::KeepAliveMsg { conn: C2 });
    assert_eq!(
        closes(&acts),
        vec![(
            C2,
            Some(Notification::fsm(FsmSubcode::UnexpectedInOpenSent))
        )]
    );
    assert_eq!(t.fsm.state(), State::OpenConfirm);
    assert_eq!(t.fsm.connections(), vec![C1]);
}

#[test]
fn candidate_takes_over_when_the_primary_dies() {
    let mut t = T::in_state(State::OpenConfirm);
    t.ev(Event::TcpConnectionConfirmed { conn: C2 });
    t.ev(Event::TcpConnectionFails { conn: C1 });
    assert_eq!(t.fsm.state(), State::OpenSent);
    assert_eq!(t.fsm.connections(), vec![C2]);
    t.ev(Event::BgpOpen {
        conn: C2,
        open: peer_open(),
    });
    t.ev(Event::KeepAliveMsg { conn: C2 });
    assert_eq!(t.fsm.established_conn(), Some(C2));
}

#[test]
fn collision_when_open_arrives_on_the_candidate() {
    // We are 192.0.2.1 < 192.0.2.2: the peer's connection (inbound) wins.
    let mut t = T::in_state(State::OpenConfirm); // C1 is ours (outbound)
    t.ev(Event::TcpConnectionConfirmed { conn: C2 });
    let acts = t.ev(Event::BgpOpen {
        conn: C2,
        open: peer_open(),
    });
    let cease = Notification::cease(CeaseSubcode::ConnectionCollisionResolution);
    assert_eq!(closes(&acts), vec![(C1, Some(cease.clone()))]);
    assert_eq!(t.fsm.state(), State::OpenConfirm);
    assert_eq!(t.fsm.connections(), vec![C2]);
    // With a higher identifier we keep ours and close the newcomer.
    let mut cfg = config();
    cfg.router_id = RouterId(Ipv4Addr::new(192, 0, 2, 99));
    let mut t = T::new(cfg);
    t.ev(Event::ManualStart);
    t.ev(Event::TcpCrAcked { conn: C1 });
    t.ev(Event::BgpOpen {
        conn: C1,
        open: peer_open(),
    });
    t.ev(Event::TcpConnectionConfirmed { conn: C2 });
    let acts = t.ev(Event::BgpOpen {
        conn: C2,
        open: peer_open(),
    });
    assert_eq!(closes(&acts), vec![(C2, Some(cease))]);
    assert_eq!(t.fsm.connections(), vec![C1]);
    assert_eq!(t.fsm.state(), State::OpenConfirm);
}

#[test]
fn open_refused_with_the_right_notification() {
    let mut t = T::in_state(State::OpenSent);
    let mut open = peer_open();
    open.hold_time = HoldTime(2);
    let acts = t.ev(Event::BgpOpen { conn: C1, open });
    assert_eq!(
        closes(&acts),
        vec![(
            C1,
            Some(Notification::open(
                OpenSubcode::UnacceptableHoldTime,
                vec![]
            ))
        )]
    );
    assert_eq!(t.fsm.state(), State::Idle);
    let err = t
        .fsm
        .last_error()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert_eq!(
        err,
        "OPEN from the peer refused: peer proposes a hold time of 2 s, we accept 0 or at least 3 s; \
         sent NOTIFICATION OPEN Message Error / Unacceptable Hold Time"
    );
}

#[test]
fn late_events_for_closed_connections_are_ignored() {
    let mut t = T::in_state(State::Established);
    t.ev(Event::TcpConnectionFails { conn: C1 });
    let state = t.fsm.state();
    for e in [
        Event::KeepAliveMsg { conn: C1 },
        Event::TcpConnectionFails { conn: C1 },
        Event::NotifMsg {
            conn: C1,
            notification: Notification::cease(CeaseSubcode::AdministrativeReset),
        },
    ] {
        assert!(t.ev(e).is_empty());
        assert_eq!(t.fsm.state(), state);
    }
}

#[test]
fn established_loss_reports_graceful_restart_retention() {
    let mut cfg = config();
    cfg.graceful_restart = Some(Default::default());
    let mut peer = peer_config();
    peer.graceful_restart = Some(tortie_bgp::fsm::GracefulRestartConfig {
        restart_time: 45,
        ..Default::default()
    });
    let mut t = T::new(cfg);
    t.ev(Event::ManualStart);
    t.ev(Event::TcpCrAcked { conn: C1 });
    t.ev(Event::BgpOpen {
        conn: C1,
        open: local_open(&peer),
    });
    t.ev(Event::KeepAliveMsg { conn: C1 });
    let acts = t.ev(Event::TcpConnectionFails { conn: C1 });
    let retain = acts.iter().find_map(|a| match a {
        Action::SessionDown {
            retain_routes_for, ..
        } => Some(*retain_routes_for),
        _ => None,
    });
    assert_eq!(retain, Some(Some(Duration::from_secs(45))));
}

/// An FSM with graceful restart, Established on C1 (ours, outbound) with a
/// graceful-restart peer, and the peer's own connection C2 confirmed.
fn established_gr_with_candidate(router_id: Ipv4Addr) -> T {
    let mut cfg = config();
    cfg.router_id = RouterId(router_id);
    cfg.graceful_restart = Some(Default::default());
    let mut t = T::new(cfg);
    t.ev(Event::ManualStart);
    t.ev(Event::TcpCrAcked { conn: C1 });
    t.ev(Event::BgpOpen {
        conn: C1,
        open: local_open(&gr_peer(false)),
    });
    t.ev(Event::KeepAliveMsg { conn: C1 });
    assert_eq!(t.fsm.established_conn(), Some(C1));
    t.ev(Event::TcpConnectionConfirmed { conn: C2 });
    t
}

fn gr_peer(restarting: bool) -> PeerConfig {
    let mut peer = peer_config();
    peer.graceful_restart = Some(tortie_bgp::fsm::GracefulRestartConfig {
        restart_time: 45,
        restarting,
        ..Default::default()
    });
    peer
}

fn session_down(actions: &[Action]) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::SessionDown { .. }))
}

#[test]
fn late_open_of_a_simultaneous_open_keeps_the_established_session_that_wins() {
    // Both sides connected at once; our session (C1, ours) came up before
    // the peer's OPEN on its own connection C2. We have the higher
    // identifier, so by RFC 4271 §6.8 the peer keeps C1 too: C2 goes, the
    // session stays, nothing flaps.
    let mut t = established_gr_with_candidate(Ipv4Addr::new(192, 0, 2, 99));
    let acts = t.ev(Event::BgpOpen {
        conn: C2,
        open: local_open(&gr_peer(false)),
    });
    let cease = Notification::cease(CeaseSubcode::ConnectionCollisionResolution);
    assert_eq!(closes(&acts), vec![(C2, Some(cease))]);
    assert!(!session_down(&acts));
    assert_eq!(t.fsm.established_conn(), Some(C1));
    assert_eq!(t.fsm.connections(), vec![C1]);
}

#[test]
fn late_open_that_wins_the_collision_replaces_the_session() {
    // We have the lower identifier: the peer keeps its own connection C2
    // and closes C1, so we move to C2 (routes kept as for a restart).
    let mut t = established_gr_with_candidate(Ipv4Addr::new(192, 0, 2, 1));
    let acts = t.ev(Event::BgpOpen {
        conn: C2,
        open: local_open(&gr_peer(false)),
    });
    assert!(session_down(&acts));
    assert!(closes(&acts).iter().any(|(c, _)| *c == C1));
    assert_eq!(t.fsm.connections(), vec![C2]);
    assert_eq!(t.fsm.state(), State::OpenConfirm);
}

#[test]
fn peer_reconnecting_in_the_same_direction_replaces_the_session() {
    // The peer opened the session and now opens another connection: it gave
    // the first one up (a restart), whatever the identifiers and R bit say.
    let mut cfg = config();
    cfg.router_id = RouterId(Ipv4Addr::new(192, 0, 2, 99));
    cfg.graceful_restart = Some(Default::default());
    let mut t = T::new(cfg);
    t.ev(Event::ManualStartPassive);
    t.ev(Event::TcpConnectionConfirmed { conn: C1 });
    t.ev(Event::BgpOpen {
        conn: C1,
        open: local_open(&gr_peer(false)),
    });
    t.ev(Event::KeepAliveMsg { conn: C1 });
    assert_eq!(t.fsm.established_conn(), Some(C1));
    t.ev(Event::TcpConnectionConfirmed { conn: C2 });
    let acts = t.ev(Event::BgpOpen {
        conn: C2,
        open: local_open(&gr_peer(false)),
    });
    assert!(session_down(&acts));
    assert_eq!(t.fsm.connections(), vec![C2]);
}

#[test]
fn open_with_the_restart_bit_replaces_the_session_whatever_the_identifiers() {
    // RFC 4724 §4.2: the peer restarted (R bit) while we still had its old
    // session: the old one ends, its routes kept as stale.
    let mut t = established_gr_with_candidate(Ipv4Addr::new(192, 0, 2, 99));
    let acts = t.ev(Event::BgpOpen {
        conn: C2,
        open: local_open(&gr_peer(true)),
    });
    let retain = acts.iter().find_map(|a| match a {
        Action::SessionDown {
            reason,
            retain_routes_for,
        } => Some((reason.clone(), *retain_routes_for)),
        _ => None,
    });
    assert_eq!(
        retain,
        Some((DownReason::PeerRestarted, Some(Duration::from_secs(45))))
    );
    assert_eq!(t.fsm.connections(), vec![C2]);
    assert_eq!(t.fsm.state(), State::OpenConfirm);
}

#[test]
fn backoff_resets_only_after_a_stable_session() {
    // Fail an established session right away three times: 1, 2, 4 s.
    let mut t = T::in_state(State::Established);
    let mut conn = C1;
    let mut waits = Vec::new();
    for next in 10..13 {
        t.ev(Event::TcpConnectionFails { conn });
        let at = t
            .fsm
            .timers()
            .deadline(TimerKind::IdleHold)
            .expect("backoff");
        waits.push((at - t.now).as_secs());
        t.now = at;
        let now = t.now;
        t.fsm.handle_timeout(now);
        // Connection ids are never reused.
        conn = ConnId(next);
        t.ev(Event::TcpCrAcked { conn });
        t.ev(Event::BgpOpen {
            conn,
            open: peer_open(),
        });
        t.ev(Event::KeepAliveMsg { conn });
        assert_eq!(t.fsm.state(), State::Established);
    }
    assert_eq!(waits, [1, 2, 4]);
    // Up for longer than the largest backoff: the next failure waits 1 s.
    t.now += Duration::from_secs(60);
    t.ev(Event::KeepAliveMsg { conn });
    t.now += Duration::from_secs(60);
    t.ev(Event::TcpConnectionFails { conn });
    let at = t
        .fsm
        .timers()
        .deadline(TimerKind::IdleHold)
        .expect("backoff");
    assert_eq!(at - t.now, Duration::from_secs(1));
}

#[test]
fn send_hold_timer_ends_a_session_the_peer_does_not_read() {
    let mut t = T::in_state(State::Established);
    // Stalls restart nothing while the timer runs; progress stops it.
    t.ev(Event::SendStalled { conn: C1 });
    let at = t.fsm.timers().deadline(TimerKind::SendHold).expect("armed");
    assert_eq!(at, t.now + Duration::from_secs(480));
    t.now += Duration::from_secs(100);
    t.ev(Event::SendStalled { conn: C1 });
    assert_eq!(t.fsm.timers().deadline(TimerKind::SendHold), Some(at));
    t.ev(Event::SendProgress { conn: C1 });
    assert!(!t.fsm.timers().is_armed(TimerKind::SendHold));
    // Stuck for 8 minutes: closed with Send Hold Timer Expired (code 8).
    t.ev(Event::SendStalled { conn: C1 });
    // Keep our own hold timer alive meanwhile (the peer still talks).
    for _ in 0..8 {
        t.now += Duration::from_secs(60);
        t.ev(Event::KeepAliveMsg { conn: C1 });
    }
    let now = t.now;
    let acts = t.fsm.handle_timeout(now);
    assert_eq!(
        closes(&acts),
        vec![(
            C1,
            Some(Notification::new(ErrorCode::Other(8), 0u8, vec![]))
        )]
    );
    let down = acts.iter().find_map(|a| match a {
        Action::SessionDown { reason, .. } => Some(reason.explain("192.0.2.2")),
        _ => None,
    });
    assert_eq!(
        down.as_deref(),
        Some(
            "could not send to 192.0.2.2 for 480 s (RFC 9687 send hold timer), \
             sent NOTIFICATION Send Hold Timer Expired"
        )
    );
}

#[test]
fn send_hold_time_is_at_least_twice_the_hold_time() {
    let mut cfg = config();
    cfg.hold_time = HoldTime(300);
    let mut peer = peer_config();
    peer.hold_time = HoldTime(300);
    let mut t = T::new(cfg);
    t.ev(Event::ManualStart);
    t.ev(Event::TcpCrAcked { conn: C1 });
    t.ev(Event::BgpOpen {
        conn: C1,
        open: local_open(&peer),
    });
    t.ev(Event::SendStalled { conn: C1 });
    assert_eq!(
        t.fsm.timers().deadline(TimerKind::SendHold),
        Some(t.now + Duration::from_secs(600))
    );
}

#[test]
fn silent_second_connection_is_dropped_after_the_open_wait() {
    let mut t = T::in_state(State::Established);
    t.ev(Event::TcpConnectionConfirmed { conn: C2 });
    assert_eq!(t.fsm.connections(), vec![C1, C2]);
    let at = t
        .fsm
        .timers()
        .deadline(TimerKind::CandidateHold)
        .expect("armed");
    assert_eq!(at, t.now + Duration::from_secs(240));
    // Keep the session itself alive.
    for _ in 0..4 {
        t.now += Duration::from_secs(60);
        t.ev(Event::KeepAliveMsg { conn: C1 });
    }
    let now = t.now;
    let acts = t.fsm.handle_timeout(now);
    assert!(closes(&acts).contains(&(C2, Some(Notification::hold_timer_expired()))));
    assert_eq!(t.fsm.connections(), vec![C1]);
    assert_eq!(t.fsm.state(), State::Established);
}

#[test]
fn idle_waiting_to_restart_accepts_the_peer() {
    let mut t = T::in_state(State::OpenSent);
    t.ev(Event::TcpConnectionFails { conn: C1 });
    t.ev(Event::ConnectRetryTimerExpires); // from Active: connects again
    t.ev(Event::TcpConnectionFails { conn: ConnId(9) }); // refused
    t.ev(Event::HoldTimerExpires); // an unexpected event: Idle, backoff armed
    assert_eq!(t.fsm.state(), State::Idle);
    assert!(t.fsm.timers().is_armed(TimerKind::IdleHold));
    let acts = t.ev(Event::TcpConnectionConfirmed { conn: C2 });
    assert!(matches!(
        acts.first(),
        Some(Action::Send {
            conn: C2,
            message: tortie_bgp::wire::Message::Open(_)
        })
    ));
    assert_eq!(t.fsm.state(), State::OpenSent);
    assert!(!t.fsm.timers().is_armed(TimerKind::IdleHold));
}

#[test]
fn reasons_name_the_peer_when_asked() {
    let r = DownReason::HoldTimerExpired {
        hold_time: Duration::from_secs(90),
        awaiting_open: false,
    };
    assert_eq!(
        r.to_string(),
        "hold timer expired after 90 s, no message from the peer"
    );
    assert_eq!(
        r.explain("192.0.2.1"),
        "hold timer expired after 90 s, no message from 192.0.2.1"
    );
    let h = DownReason::NotificationReceived {
        notification: Notification::hold_timer_expired(),
    };
    assert_eq!(
        h.explain("192.0.2.1"),
        "192.0.2.1 sent NOTIFICATION Hold Timer Expired"
    );
    let n = DownReason::NotificationReceived {
        notification: Notification::shutdown(CeaseSubcode::AdministrativeShutdown, "upgrade"),
    };
    assert_eq!(
        n.explain("tor-a"),
        "tor-a sent NOTIFICATION Cease / Administrative Shutdown: \"upgrade\" \
         (tor-a's operator shut the session down)"
    );
}

// ----- property test -------------------------------------------------

fn arb_event() -> impl Strategy<Value = Event> {
    // Mostly the latest connection, so sessions get somewhere.
    let conn = prop_oneof![6 => Just(1u64), 1 => Just(2), 1 => Just(3)].prop_map(ConnId);
    let notif = prop_oneof![
        Just(Notification::cease(CeaseSubcode::AdministrativeShutdown)),
        Just(Notification::open(
            OpenSubcode::UnsupportedVersionNumber,
            vec![0, 4]
        )),
        Just(Notification::hold_timer_expired()),
    ];
    let open = prop_oneof![
        5 => Just(peer_open()),
        1 => Just({
            let mut o = peer_open();
            o.hold_time = HoldTime(0);
            o
        }),
        1 => Just({
            let mut o = peer_open();
            o.my_as = 65099;
            o.capabilities.clear();
            o
        }),
        1 => Just({
            let mut o = peer_open();
            o.router_id = RouterId(Ipv4Addr::new(192, 0, 2, 200));
            o
        }),
    ];
    prop_oneof![
        2 => Just(Event::ManualStart),
        1 => Just(Event::ManualStartPassive),
        1 => Just(Event::AutomaticStart),
        1 => Just(Event::AutomaticStartPassive),
        1 => Just(Event::ManualStop { message: None }),
        1 => Just(Event::AutomaticStop {
            notification: Notification::cease(CeaseSubcode::MaxPrefixesReached)
        }),
        1 => Just(Event::ConnectRetryTimerExpires),
        1 => Just(Event::HoldTimerExpires),
        1 => Just(Event::KeepaliveTimerExpires),
        1 => Just(Event::IdleHoldTimerExpires),
        1 => Just(Event::SendHoldTimerExpires),
        1 => conn.clone().prop_map(|conn| Event::SendStalled { conn }),
        1 => conn.clone().prop_map(|conn| Event::SendProgress { conn }),
        1 => conn.clone().prop_map(|conn| Event::OpenCollisionDump { conn }),
        4 => conn.clone().prop_map(|conn| Event::TcpCrAcked { conn }),
        4 => conn.clone().prop_map(|conn| Event::TcpConnectionConfirmed { conn }),
        1 => conn.clone().prop_map(|conn| Event::TcpConnectionFails { conn }),
        8 => (conn.clone(), open).prop_map(|(conn, open)| Event::BgpOpen { conn, open }),
        8 => conn.clone().prop_map(|conn| Event::KeepAliveMsg { conn }),
        3 => conn.clone().prop_map(|conn| Event::UpdateMsg {
            conn,
            update: Box::default()
        }),
        1 => conn.clone().prop_map(|conn| Event::decode_failed(conn, update_error())),
        1 => conn.clone().prop_map(|conn| Event::decode_failed(conn, header_error())),
        1 => conn.clone().prop_map(|conn| Event::RouteRefreshMsg {
            conn,
            refresh: RouteRefresh::request(Family::IPV4_UNICAST)
        }),
        1 => (conn, notif).prop_map(|(conn, notification)| Event::NotifMsg { conn, notification }),
    ]
}

/// Gives every new connection a fresh id (the shell never reuses one) and
/// points other connection events at one of the recent ids: the generated
/// id 1..4 means "the k-th most recent connection".
fn fresh_ids(e: Event, ids: &mut Vec<ConnId>) -> Event {
    let Some(ConnId(k)) = e.conn() else {
        return e;
    };
    let id = match e {
        Event::TcpCrAcked { .. } | Event::TcpConnectionConfirmed { .. } => {
            let id = ConnId(100 + ids.len() as u64);
            ids.push(id);
            id
        }
        _ => ids
            .len()
            .checked_sub(k as usize)
            .and_then(|i| ids.get(i).copied())
            .unwrap_or(ConnId(99)),
    };
    match e {
        Event::TcpCrAcked { .. } => Event::TcpCrAcked { conn: id },
        Event::TcpConnectionConfirmed { .. } => Event::TcpConnectionConfirmed { conn: id },
        Event::TcpConnectionFails { .. } => Event::TcpConnectionFails { conn: id },
        Event::SendStalled { .. } => Event::SendStalled { conn: id },
        Event::SendProgress { .. } => Event::SendProgress { conn: id },
        Event::OpenCollisionDump { .. } => Event::OpenCollisionDump { conn: id },
        Event::BgpOpen { open, .. } => Event::BgpOpen { conn: id, open },
        Event::BgpHeaderErr { error, .. } => Event::BgpHeaderErr { conn: id, error },
        Event::BgpOpenMsgErr { error, .. } => Event::BgpOpenMsgErr { conn: id, error },
        Event::UpdateMsgErr { error, .. } => Event::UpdateMsgErr { conn: id, error },
        Event::NotifMsg { notification, .. } => Event::NotifMsg {
            conn: id,
            notification,
        },
        Event::KeepAliveMsg { .. } => Event::KeepAliveMsg { conn: id },
        Event::UpdateMsg { update, .. } => Event::UpdateMsg { conn: id, update },
        Event::RouteRefreshMsg { refresh, .. } => Event::RouteRefreshMsg { conn: id, refresh },
        other => other,
    }
}

#[derive(Debug, Clone)]
enum Step {
    Event(Event),
    /// Let this many milliseconds pass, then fire due timers.
    Wait(u64),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => arb_event().prop_map(Step::Event),
        1 => (0u64..300_000).prop_map(Step::Wait),
    ]
}

fn check_invariants(f: &Fsm, now: Instant) -> Result<(), TestCaseError> {
    let state = f.state();
    let conns = f.connections();
    if state == State::Idle {
        prop_assert!(
            session_timers_stopped(f),
            "timers in Idle: {:?}",
            f.timers()
        );
        prop_assert!(conns.is_empty(), "connections in Idle: {conns:?}");
        prop_assert!(!f.is_connecting());
    } else {
        prop_assert!(!f.timers().is_armed(TimerKind::IdleHold));
    }
    let has_session = matches!(
        state,
        State::OpenSent | State::OpenConfirm | State::Established
    );
    prop_assert_eq!(has_session, !conns.is_empty(), "{} with {:?}", state, conns);
    if state == State::Connect {
        prop_assert!(f.is_connecting());
    }
    if matches!(state, State::OpenConfirm | State::Established) {
        let n = f.negotiated();
        prop_assert!(n.is_some());
        let hold = n.map(|n| n.hold_time.0).unwrap_or(0);
        prop_assert_eq!(f.timers().is_armed(TimerKind::Hold), hold != 0);
        prop_assert_eq!(f.timers().is_armed(TimerKind::Keepalive), hold != 0);
    } else {
        prop_assert!(f.negotiated().is_none());
        prop_assert!(!f.timers().is_armed(TimerKind::Keepalive));
    }
    prop_assert_eq!(f.established_conn().is_some(), state == State::Established);
    prop_assert_eq!(
        f.timers().is_armed(TimerKind::CandidateHold),
        conns.len() == 2
    );
    if !has_session {
        prop_assert!(!f.timers().is_armed(TimerKind::SendHold));
    }
    if let Some(t) = f.poll_timeout() {
        prop_assert!(t > now, "timer due at or before now left unfired");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn random_event_sequences_keep_the_invariants(
        steps in proptest::collection::vec(arb_step(), 0..80),
        passive in any::<bool>(),
        zero_hold in any::<bool>(),
    ) {
        let mut cfg = config();
        cfg.passive = passive;
        if zero_hold {
            cfg.hold_time = HoldTime(0);
        }
        let mut f = Fsm::new(cfg, Box::new(NoJitter));
        let mut now = Instant::now();
        let mut ids: Vec<ConnId> = Vec::new();
        for step in steps {
            let acts = match step {
                Step::Event(e) => {
                    let e = fresh_ids(e, &mut ids);
                    let acts = f.handle(now, e);
                    // handle() must not leave overdue timers either: fire
                    // them as the shell would.
                    let mut more = f.handle_timeout(now);
                    let mut acts = acts;
                    acts.append(&mut more);
                    acts
                }
                Step::Wait(ms) => {
                    now += Duration::from_millis(ms);
                    f.handle_timeout(now)
                }
            };
            if passive {
                prop_assert!(!acts.iter().any(|a| matches!(a, Action::Connect)));
            }
            for a in &acts {
                if let Action::Close { notification: Some(n), .. } = a {
                    prop_assert!(n.code != ErrorCode::Other(0));
                }
            }
            check_invariants(&f, now)?;
        }
    }
}

#[test]
fn messages_sent_outside_the_fsm_restart_the_keepalive_timer() {
    let mut t = T::in_state(State::Established);
    t.now += Duration::from_secs(20);
    let now = t.now;
    t.fsm.messages_sent(now);
    assert_eq!(
        t.fsm.timers().deadline(TimerKind::Keepalive),
        Some(now + Duration::from_secs(30))
    );
}

#[test]
fn new_config_applies_to_the_next_open() {
    let mut cfg = config();
    cfg.graceful_restart = Some(tortie_bgp::fsm::GracefulRestartConfig {
        restarting: true,
        ..Default::default()
    });
    let mut t = T::new(cfg.clone());
    let r_bit = |f: &Fsm| {
        f.local_open().capabilities.iter().any(
            |c| matches!(c, tortie_bgp::wire::Capability::GracefulRestart(g) if g.restart_state),
        )
    };
    assert!(r_bit(&t.fsm));
    if let Some(gr) = cfg.graceful_restart.as_mut() {
        gr.restarting = false;
    }
    t.fsm.set_config(cfg);
    assert!(!r_bit(&t.fsm));
    let acts = {
        t.ev(Event::ManualStart);
        t.ev(Event::TcpCrAcked { conn: C1 })
    };
    assert!(acts.iter().any(|a| matches!(a,
        Action::Send { message: tortie_bgp::wire::Message::Open(o), .. }
            if !o.capabilities.iter().any(|c| matches!(c,
                tortie_bgp::wire::Capability::GracefulRestart(g) if g.restart_state)))));
}

#[test]
fn failure_report_for_a_closed_socket_is_not_the_connect_attempt_failing() {
    // Connect: our attempt is in flight; the peer connects in meanwhile.
    let mut t = T::in_state(State::Connect);
    t.ev(Event::TcpConnectionConfirmed { conn: C1 });
    assert_eq!(t.fsm.state(), State::OpenSent);
    assert!(t.fsm.is_connecting());
    // A second inbound connection misbehaves and we close it ...
    t.ev(Event::TcpConnectionConfirmed { conn: C2 });
    let acts = t.ev(Event::KeepAliveMsg { conn: C2 });
    assert_eq!(closes(&acts).len(), 1);
    // ... the shell then reports that socket closed: not our attempt.
    assert!(t.ev(Event::TcpConnectionFails { conn: C2 }).is_empty());
    assert!(t.fsm.is_connecting());
    // Our attempt completes and becomes the candidate.
    let acts = t.ev(Event::TcpCrAcked { conn: ConnId(7) });
    assert!(matches!(
        acts.as_slice(),
        [Action::Send {
            conn: ConnId(7),
            message: tortie_bgp::wire::Message::Open(_)
        }]
    ));
    assert_eq!(t.fsm.connections(), vec![C1, ConnId(7)]);
}

#[test]
fn route_refresh_for_a_family_not_negotiated_is_ignored() {
    let mut t = T::in_state(State::Established);
    let acts = t.ev(Event::RouteRefreshMsg {
        conn: C1,
        refresh: RouteRefresh::request(Family::IPV6_UNICAST),
    });
    assert!(acts.is_empty(), "{acts:?}");
    assert_eq!(t.fsm.state(), State::Established);
    let acts = t.ev(Event::RouteRefreshMsg {
        conn: C1,
        refresh: RouteRefresh::request(Family::IPV4_UNICAST),
    });
    assert!(matches!(
        acts.as_slice(),
        [Action::RouteRefreshReceived { .. }]
    ));
}

#[test]
fn open_collision_dump_from_outside() {
    let cease = Notification::cease(CeaseSubcode::ConnectionCollisionResolution);
    // On the only connection: Cease, Idle, counted.
    let mut t = T::in_state(State::OpenConfirm);
    let acts = t.ev(Event::OpenCollisionDump { conn: C1 });
    assert_eq!(closes(&acts), vec![(C1, Some(cease.clone()))]);
    assert_eq!(t.fsm.state(), State::Idle);
    assert_eq!(t.fsm.connect_retry_counter(), 1);
    // On the candidate: only the candidate goes.
    let mut t = T::in_state(State::OpenSent);
    t.ev(Event::TcpConnectionConfirmed { conn: C2 });
    let acts = t.ev(Event::OpenCollisionDump { conn: C2 });
    assert_eq!(closes(&acts), vec![(C2, Some(cease))]);
    assert_eq!(t.fsm.connections(), vec![C1]);
    assert_eq!(t.fsm.state(), State::OpenSent);
}
