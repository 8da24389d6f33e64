//! An in-memory "network" for two FSMs on a virtual clock.
//!
//! ```text
//!   side A (Fsm)  ── link 1 ──  side B (Fsm)
//!                 ── link 2 ──   (a collision makes two)
//! ```
//!
//! Every `Send` is encoded with the sender's codec context, carried as
//! bytes, and decoded with the receiver's, so messages really go through
//! the codec. `Connect` opens a link (or fails, if the other side is not
//! listening); `Close` writes the NOTIFICATION, then the other end sees
//! `TcpConnectionFails`. Time moves only in `advance`.

#![allow(dead_code)] // Each test file uses a different part of the harness.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tortie_bgp::fsm::{Action, ConnId, Event, Fsm, PeerConfig, State};
use tortie_bgp::wire::{decode_message, Message};

/// Which FSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Link {
    /// The connection id at A and at B.
    a: ConnId,
    b: ConnId,
    /// Which side initiated it.
    initiator: Side,
    open: bool,
}

#[derive(Debug)]
enum Delivery {
    /// An event for one side, computed when the delivery is made.
    Event(Side, Box<Event>),
    /// Bytes on a link, decoded at delivery with the receiver's context.
    Bytes(Side, ConnId, Vec<u8>),
    /// A connect attempt from `Side` is being made.
    Connect(Side),
}

/// Two FSMs and the wire between them.
#[derive(Debug)]
pub struct Net {
    pub t0: Instant,
    pub now: Instant,
    pub a: Fsm,
    pub b: Fsm,
    links: Vec<Link>,
    next_id: u64,
    queue: VecDeque<Delivery>,
    /// Every action, with its side and time, in order.
    pub log: Vec<(Duration, Side, Action)>,
    /// Whether each side accepts TCP connections (its listener is up).
    pub listening: [bool; 2],
    /// Drop every message sent by this side (a black hole), for hold
    /// timer tests.
    pub mute: [bool; 2],
}

fn ev(s: Side, e: Event) -> Delivery {
    Delivery::Event(s, Box::new(e))
}

fn idx(s: Side) -> usize {
    match s {
        Side::A => 0,
        Side::B => 1,
    }
}

impl Net {
    pub fn new(a: Fsm, b: Fsm) -> Self {
        let t0 = Instant::now();
        Self {
            t0,
            now: t0,
            a,
            b,
            links: Vec::new(),
            next_id: 1,
            queue: VecDeque::new(),
            log: Vec::new(),
            listening: [true, true],
            mute: [false, false],
        }
    }

    pub fn fsm(&mut self, s: Side) -> &mut Fsm {
        match s {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    pub fn state(&self, s: Side) -> State {
        match s {
            Side::A => self.a.state(),
            Side::B => self.b.state(),
        }
    }

    /// Feed an event to one side and run the network until it is quiet.
    pub fn handle(&mut self, s: Side, event: Event) {
        self.queue.push_back(ev(s, event));
        self.run();
    }

    /// Queue events for both sides before running, so both act "at once"
    /// (e.g. both start and connect before either connection completes).
    pub fn handle_both(&mut self, ea: Event, eb: Event) {
        self.queue.push_back(ev(Side::A, ea));
        self.queue.push_back(ev(Side::B, eb));
        self.run();
    }

    /// Apply actions that a caller obtained directly from an FSM.
    pub fn apply(&mut self, s: Side, actions: Vec<Action>) {
        self.actions(s, actions);
        self.run();
    }

    /// Move the clock forward by `d`, firing timers in order.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    let acts = self.a.handle_timeout(now);
                    self.actions(Side::A, acts);
                    let acts = self.b.handle_timeout(now);
                    self.actions(Side::B, acts);
                    self.run();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn new_id(&mut self) -> ConnId {
        self.next_id += 1;
        ConnId(self.next_id)
    }

    fn run(&mut self) {
        let mut guard = 0;
        while let Some(d) = self.queue.pop_front() {
            guard += 1;
            assert!(guard < 100_000, "network does not settle");
            match d {
                Delivery::Event(s, e) => {
                    let e = *e;
                    let now = self.now;
                    let acts = self.fsm(s).handle(now, e);
                    self.actions(s, acts);
                }
                Delivery::Connect(s) => self.complete_connect(s),
                Delivery::Bytes(s, conn, bytes) => {
                    let ctx = self.fsm(s).context_for(conn);
                    let event = match decode_message(&bytes, &ctx) {
                        Ok(m) => Event::received(conn, m),
                        Err(e) => Event::decode_failed(conn, e),
                    };
                    let now = self.now;
                    let acts = self.fsm(s).handle(now, event);
                    self.actions(s, acts);
                }
            }
        }
    }

    fn complete_connect(&mut self, s: Side) {
        let id_here = self.new_id();
        if !self.listening[idx(s.other())] {
            self.queue
                .push_back(ev(s, Event::TcpConnectionFails { conn: id_here }));
            return;
        }
        let id_there = self.new_id();
        let (a, b) = match s {
            Side::A => (id_here, id_there),
            Side::B => (id_there, id_here),
        };
        self.links.push(Link {
            a,
            b,
            initiator: s,
            open: true,
        });
        self.queue
            .push_back(ev(s, Event::TcpCrAcked { conn: id_here }));
        self.queue.push_back(ev(
            s.other(),
            Event::TcpConnectionConfirmed { conn: id_there },
        ));
    }

    fn link_of(&self, s: Side, conn: ConnId) -> Option<usize> {
        self.links.iter().position(|l| match s {
            Side::A => l.a == conn,
            Side::B => l.b == conn,
        })
    }

    fn peer_conn(&self, s: Side, i: usize) -> Option<ConnId> {
        let l = self.links.get(i)?;
        Some(match s {
            Side::A => l.b,
            Side::B => l.a,
        })
    }

    fn transmit(&mut self, s: Side, conn: ConnId, message: &Message) {
        let ctx = self.fsm(s).context_for(conn);
        let bytes = message.encode(&ctx).expect("FSM messages encode");
        if self.mute[idx(s)] {
            return;
        }
        if let Some(i) = self.link_of(s, conn) {
            if self.links.get(i).is_some_and(|l| l.open) {
                if let Some(there) = self.peer_conn(s, i) {
                    self.queue
                        .push_back(Delivery::Bytes(s.other(), there, bytes));
                }
            }
        }
    }

    fn actions(&mut self, s: Side, actions: Vec<Action>) {
        let at = self.now - self.t0;
        for a in actions {
            match &a {
                Action::Connect => self.queue.push_back(Delivery::Connect(s)),
                Action::Send { conn, message } => {
                    let (conn, message) = (*conn, message.clone());
                    self.transmit(s, conn, &message);
                }
                Action::Close { conn, notification } => {
                    let conn = *conn;
                    if let Some(n) = notification.clone() {
                        self.transmit(s, conn, &Message::Notification(n));
                    }
                    if let Some(i) = self.link_of(s, conn) {
                        let was_open = self.links.get(i).is_some_and(|l| l.open);
                        if let Some(l) = self.links.get_mut(i) {
                            l.open = false;
                        }
                        if was_open {
                            if let Some(there) = self.peer_conn(s, i) {
                                self.queue.push_back(ev(
                                    s.other(),
                                    Event::TcpConnectionFails { conn: there },
                                ));
                            }
                        }
                    }
                }
                _ => {}
            }
            self.log.push((at, s, a));
        }
    }

    /// Actions of one side, in order.
    pub fn actions_of(&self, s: Side) -> Vec<&Action> {
        self.log
            .iter()
            .filter(|(_, side, _)| *side == s)
            .map(|(_, _, a)| a)
            .collect()
    }

    /// Forget the log (to look only at what happens next).
    pub fn clear_log(&mut self) {
        self.log.clear();
    }

    /// The open links, as (conn at A, conn at B, initiator).
    pub fn open_links(&self) -> Vec<(ConnId, ConnId, Side)> {
        self.links
            .iter()
            .filter(|l| l.open)
            .map(|l| (l.a, l.b, l.initiator))
            .collect()
    }

    /// The link (by initiator) carrying A's Established session.
    pub fn established_link(&self) -> Option<(ConnId, ConnId, Side)> {
        let a = self.a.established_conn()?;
        let l = self.links.iter().find(|l| l.a == a)?;
        Some((l.a, l.b, l.initiator))
    }

    /// Bring both up with `ea` / `eb` (start events) and run 1 s.
    pub fn start(&mut self, ea: Event, eb: Event) {
        self.handle_both(ea, eb);
        self.advance(Duration::from_secs(1));
    }
}

/// A pair of configurations for AS 65001 (A, 192.0.2.1) and AS 65002
/// (B, 192.0.2.2).
pub fn ebgp_pair() -> (PeerConfig, PeerConfig) {
    use tortie_bgp::wire::{Asn, RouterId};
    let a = PeerConfig::new(Asn(65001), Asn(65002), RouterId([192, 0, 2, 1].into()));
    let b = PeerConfig::new(Asn(65002), Asn(65001), RouterId([192, 0, 2, 2].into()));
    (a, b)
}
