//! Speaker core tests on a virtual clock: several speakers connected in
//! memory through the codec (every byte is encoded by one speaker and
//! decoded by a [`ConnDecoder`] for the other, as the runtime does).

// A panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::fsm::NoJitter;
use crate::rib::{Action as FilterAction, MaxPrefix, MaxPrefixAction, PrefixMatch, Rule};
use crate::wire::{AsPath, MessageType, NextHop};

struct Node {
    speaker: Speaker,
    addr: IpAddr,
    /// Messages received, by type.
    received: HashMap<MessageType, usize>,
    /// Route refresh subtypes received.
    refreshes: Vec<RouteRefreshSubtype>,
}

struct End {
    node: usize,
    conn: ConnId,
}

struct Net {
    now: Instant,
    nodes: Vec<Node>,
    /// (node, conn) -> the other end.
    links: HashMap<(usize, ConnId), End>,
    decoders: HashMap<(usize, ConnId), (ConnDecoder, Vec<u8>)>,
    /// Nodes that are "unplugged": connections to them fail.
    down: Vec<usize>,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pfx(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn peer(addr: &str, asn: u32) -> PeerSettings {
    let mut p = PeerSettings::new(ip(addr), Asn(asn));
    p.families = vec![Family::IPV4_UNICAST];
    p
}

impl Net {
    fn new() -> Self {
        Net {
            now: Instant::now(),
            nodes: Vec::new(),
            links: HashMap::new(),
            decoders: HashMap::new(),
            down: Vec::new(),
        }
    }

    fn add(&mut self, addr: &str, asn: u32, cfg: impl FnOnce(&mut SpeakerConfig)) -> usize {
        let a = ip(addr);
        let IpAddr::V4(rid) = a else {
            panic!("v4 router id")
        };
        let mut c = SpeakerConfig::new(Asn(asn), rid);
        cfg(&mut c);
        let speaker = Speaker::new(c, self.now, Box::new(|| Box::new(NoJitter)));
        self.nodes.push(Node {
            speaker,
            addr: a,
            received: HashMap::new(),
            refreshes: Vec::new(),
        });
        self.nodes.len() - 1
    }

    fn set_peers(&mut self, n: usize, peers: Vec<PeerSettings>) {
        let now = self.now;
        let s = &mut self.nodes[n].speaker;
        let cfg = s.config().clone();
        s.set_config(now, cfg, peers);
        self.pump();
    }

    fn node_of(&self, addr: IpAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    /// Carries out every queued output until all speakers are quiet.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut any = false;
            for i in 0..self.nodes.len() {
                while let Some(o) = self.nodes[i].speaker.poll_output() {
                    any = true;
                    self.carry(i, o);
                }
            }
            if !any {
                return;
            }
        }
        panic!("speakers never went quiet");
    }

    fn carry(&mut self, i: usize, o: Output) {
        let now = self.now;
        match o {
            Output::Connect {
                conn,
                peer,
                local_open,
                ..
            } => {
                let target = self.node_of(peer).filter(|j| !self.down.contains(j));
                let my = self.nodes[i].addr;
                let local = SocketAddr::new(my, 40000 + conn.0 as u16);
                let accepted = target.and_then(|j| {
                    if self.down.contains(&i) {
                        return None;
                    }
                    self.nodes[j]
                        .speaker
                        .accepted(now, SocketAddr::new(peer, 179), local)
                        .map(|(c, open)| (j, c, open))
                });
                match accepted {
                    Some((j, cj, open_j)) => {
                        self.links.insert((i, conn), End { node: j, conn: cj });
                        self.links.insert((j, cj), End { node: i, conn });
                        self.decoders
                            .insert((i, conn), (ConnDecoder::new(*local_open), Vec::new()));
                        self.decoders
                            .insert((j, cj), (ConnDecoder::new(open_j), Vec::new()));
                        self.nodes[i].speaker.connected(now, conn, local);
                    }
                    None => self.nodes[i]
                        .speaker
                        .connect_failed(now, conn, "connection refused"),
                }
            }
            Output::Send { conn, bytes } => {
                let Some(End { node: j, conn: cj }) = self.links.get(&(i, conn)).map(|e| End {
                    node: e.node,
                    conn: e.conn,
                }) else {
                    return;
                };
                let (dec, buf) = self.decoders.get_mut(&(j, cj)).unwrap();
                buf.extend_from_slice(&bytes);
                let mut msgs = Vec::new();
                let mut used = 0;
                while let Some((m, n)) = dec.next_message(&buf[used..]) {
                    used += n;
                    msgs.push(m);
                }
                buf.drain(..used);
                let node = &mut self.nodes[j];
                for m in msgs.iter().flatten() {
                    *node.received.entry(m.message_type()).or_default() += 1;
                    if let Message::RouteRefresh(r) = m {
                        node.refreshes.push(r.subtype);
                    }
                }
                node.speaker.received_batch(now, cj, msgs);
            }
            Output::Close { conn } => {
                self.decoders.remove(&(i, conn));
                if let Some(End { node: j, conn: cj }) = self.links.remove(&(i, conn)) {
                    self.links.remove(&(j, cj));
                    self.decoders.remove(&(j, cj));
                    self.nodes[j].speaker.closed(now, cj);
                }
            }
        }
    }

    /// Cuts every connection of node `n` (no NOTIFICATION, as a crash)
    /// and keeps it unreachable.
    fn unplug(&mut self, n: usize) {
        self.down.push(n);
        let ends: Vec<(usize, ConnId)> = self
            .links
            .keys()
            .filter(|(i, _)| *i == n)
            .copied()
            .collect();
        let now = self.now;
        for (i, c) in ends {
            if let Some(End { node: j, conn: cj }) = self.links.remove(&(i, c)) {
                self.links.remove(&(j, cj));
                self.decoders.remove(&(j, cj));
                self.decoders.remove(&(i, c));
                self.nodes[j].speaker.closed(now, cj);
            }
        }
        self.pump();
    }

    fn plug(&mut self, n: usize) {
        self.down.retain(|d| *d != n);
    }

    /// Advances the virtual clock by `d`, firing timers on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.speaker.poll_timeout())
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for n in &mut self.nodes {
                        if n.speaker.poll_timeout().is_some_and(|t| t <= now) {
                            n.speaker.handle_timeout(now);
                        }
                    }
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn state(&self, n: usize, peer: &str) -> State {
        self.nodes[n]
            .speaker
            .snapshot(self.now)
            .into_iter()
            .find(|p| p.address == ip(peer))
            .map(|p| p.state)
            .unwrap()
    }

    fn snap(&self, n: usize, peer: &str) -> PeerSnapshot {
        self.nodes[n]
            .speaker
            .snapshot(self.now)
            .into_iter()
            .find(|p| p.address == ip(peer))
            .unwrap()
    }

    fn best(&self, n: usize, prefix: &str) -> Option<PathAttrs> {
        self.nodes[n]
            .speaker
            .rib()
            .best(pfx(prefix))
            .map(|r| (*r.attrs).clone())
    }

    fn originate(&mut self, n: usize, prefix: &str) {
        let now = self.now;
        self.nodes[n]
            .speaker
            .announce(now, pfx(prefix), PathAttrs::local());
        self.pump();
    }
}

/// A - B - C in a line of eBGP sessions (AS 65001, 65002, 65003).
fn line() -> Net {
    let mut net = Net::new();
    let a = net.add("192.0.2.1", 65001, |_| {});
    let b = net.add("192.0.2.2", 65002, |_| {});
    let c = net.add("192.0.2.3", 65003, |_| {});
    net.set_peers(a, vec![peer("192.0.2.2", 65002)]);
    net.set_peers(b, vec![peer("192.0.2.1", 65001), peer("192.0.2.3", 65003)]);
    net.set_peers(c, vec![peer("192.0.2.2", 65002)]);
    net.advance(Duration::from_secs(1));
    net
}

#[test]
fn ebgp_routes_propagate_with_path_and_next_hop_rewritten_and_withdraw() {
    let mut net = line();
    assert_eq!(net.state(0, "192.0.2.2"), State::Established);
    assert_eq!(net.state(1, "192.0.2.3"), State::Established);
    net.originate(0, "10.244.1.0/24");
    let at_c = net.best(2, "10.244.1.0/24").expect("route reached C");
    assert_eq!(
        at_c.as_path,
        AsPath::from_sequence([Asn(65002), Asn(65001)])
    );
    assert_eq!(
        at_c.next_hop,
        Some(NextHop::V4("192.0.2.2".parse().unwrap()))
    );
    assert_eq!(net.snap(2, "192.0.2.2").prefixes_accepted, 1);
    assert_eq!(net.snap(1, "192.0.2.3").prefixes_advertised, 1);
    // End-of-RIB went out after the (empty) initial dump on every session.
    assert!(net.nodes[2].received[&MessageType::Update] >= 2);
    assert!(net.snap(2, "192.0.2.2").end_of_rib, "C saw B's End-of-RIB");
    assert!(net.snap(0, "192.0.2.2").end_of_rib, "A saw B's End-of-RIB");

    let now = net.now;
    net.nodes[0].speaker.withdraw(now, pfx("10.244.1.0/24"));
    net.pump();
    assert!(net.best(2, "10.244.1.0/24").is_none());
    assert!(net.best(1, "10.244.1.0/24").is_none());
}

#[test]
fn ibgp_keeps_as_path_and_next_hop_and_sets_local_pref() {
    let mut net = Net::new();
    let a = net.add("192.0.2.1", 64512, |_| {});
    let b = net.add("192.0.2.2", 64512, |_| {});
    net.set_peers(a, vec![peer("192.0.2.2", 64512)]);
    net.set_peers(b, vec![peer("192.0.2.1", 64512)]);
    net.originate(a, "10.244.1.0/24");
    let r = net.best(b, "10.244.1.0/24").expect("route reached B");
    assert!(r.as_path.path_len() == 0, "{:?}", r.as_path);
    assert_eq!(r.local_pref, Some(100));
    assert_eq!(r.next_hop, Some(NextHop::V4("192.0.2.1".parse().unwrap())));
}

#[test]
fn peer_removed_from_config_takes_its_routes_and_keeps_other_sessions() {
    let mut net = line();
    net.originate(0, "10.244.1.0/24");
    net.originate(2, "10.244.3.0/24");
    assert!(net.best(1, "10.244.1.0/24").is_some());
    let before = net.snap(1, "192.0.2.3").established_count;
    // B drops A from its config; the B-C session is untouched.
    net.set_peers(1, vec![peer("192.0.2.3", 65003)]);
    assert!(net.best(1, "10.244.1.0/24").is_none());
    assert!(net.best(2, "10.244.1.0/24").is_none());
    assert_eq!(net.state(1, "192.0.2.3"), State::Established);
    assert_eq!(net.snap(1, "192.0.2.3").established_count, before);
    assert!(net.best(1, "10.244.3.0/24").is_some());
    // A saw an administrative shutdown.
    assert!(
        net.snap(0, "192.0.2.2")
            .last_error
            .contains("Administrative Shutdown")
            || net.snap(0, "192.0.2.2").last_error.contains("shut"),
        "{}",
        net.snap(0, "192.0.2.2").last_error
    );
}

#[test]
fn filter_change_keeps_the_session_and_recomputes_exports() {
    let mut net = line();
    net.originate(0, "10.244.1.0/24");
    assert!(net.best(2, "10.244.1.0/24").is_some());
    let mut to_c = peer("192.0.2.3", 65003);
    to_c.export = Filter {
        rules: vec![Rule::prefix(
            PrefixMatch::within(pfx("10.244.0.0/16"), None, None),
            FilterAction::Reject,
        )],
        default: FilterAction::Accept,
    };
    net.set_peers(1, vec![peer("192.0.2.1", 65001), to_c]);
    assert_eq!(net.snap(1, "192.0.2.3").established_count, 1);
    assert!(net.best(2, "10.244.1.0/24").is_none());
}

#[test]
fn route_refresh_resends_adj_rib_out_between_borr_and_eorr() {
    let mut net = line();
    net.originate(0, "10.244.1.0/24");
    let updates_before = net.nodes[1].received[&MessageType::Update];
    let now = net.now;
    net.nodes[1]
        .speaker
        .request_refresh(now, ip("192.0.2.1"), Family::IPV4_UNICAST);
    net.pump();
    assert!(net.nodes[1].received[&MessageType::Update] > updates_before);
    assert_eq!(
        net.nodes[1].refreshes,
        vec![
            RouteRefreshSubtype::BeginningOfRefresh,
            RouteRefreshSubtype::EndOfRefresh
        ]
    );
    assert!(net.best(1, "10.244.1.0/24").is_some());
}

#[test]
fn max_prefix_cease_closes_the_session_and_warn_keeps_it() {
    let mut net = Net::new();
    let a = net.add("192.0.2.1", 65001, |_| {});
    let b = net.add("192.0.2.2", 65002, |_| {});
    net.set_peers(a, vec![peer("192.0.2.2", 65002)]);
    let mut pa = peer("192.0.2.1", 65001);
    pa.max_prefix = Some(MaxPrefix {
        limit: 2,
        action: MaxPrefixAction::Cease,
    });
    pa.idle_hold_initial = Duration::from_secs(60);
    net.set_peers(b, vec![pa.clone()]);
    net.originate(a, "10.244.1.0/24");
    net.originate(a, "10.244.2.0/24");
    assert_eq!(net.state(b, "192.0.2.1"), State::Established);
    net.originate(a, "10.244.3.0/24");
    assert_ne!(net.state(b, "192.0.2.1"), State::Established);
    assert!(net.best(b, "10.244.1.0/24").is_none());
    assert!(
        net.snap(b, "192.0.2.1")
            .last_error
            .contains("Maximum Number of Prefixes"),
        "{}",
        net.snap(b, "192.0.2.1").last_error
    );

    pa.max_prefix = Some(MaxPrefix {
        limit: 2,
        action: MaxPrefixAction::Warn,
    });
    net.set_peers(b, vec![pa]);
    net.advance(Duration::from_secs(130));
    assert_eq!(net.state(b, "192.0.2.1"), State::Established);
    assert!(net.best(b, "10.244.3.0/24").is_some());
}

fn gr_pair() -> Net {
    let mut net = Net::new();
    let a = net.add("192.0.2.1", 65001, |_| {});
    let b = net.add("192.0.2.2", 65002, |_| {});
    let mut pb = peer("192.0.2.2", 65002);
    pb.graceful_restart = Some(30);
    let mut pa = peer("192.0.2.1", 65001);
    pa.graceful_restart = Some(30);
    net.set_peers(a, vec![pb]);
    net.set_peers(b, vec![pa]);
    net.originate(a, "10.244.1.0/24");
    net.originate(a, "10.244.2.0/24");
    assert!(net.best(b, "10.244.1.0/24").is_some());
    net
}

#[test]
fn graceful_restart_keeps_stale_routes_and_purges_after_end_of_rib() {
    let mut net = gr_pair();
    net.unplug(0);
    assert_ne!(net.state(1, "192.0.2.1"), State::Established);
    let r = net.nodes[1]
        .speaker
        .rib()
        .best(pfx("10.244.1.0/24"))
        .unwrap();
    assert!(r.stale, "kept as stale");
    assert!(net.snap(1, "192.0.2.1").stale);
    // A comes back without 10.244.2.0/24.
    let now = net.now;
    net.nodes[0].speaker.withdraw(now, pfx("10.244.2.0/24"));
    net.plug(0);
    net.advance(Duration::from_secs(5));
    assert_eq!(net.state(1, "192.0.2.1"), State::Established);
    let r = net.nodes[1]
        .speaker
        .rib()
        .best(pfx("10.244.1.0/24"))
        .unwrap();
    assert!(!r.stale, "refreshed by the new session");
    assert!(
        net.best(1, "10.244.2.0/24").is_none(),
        "purged at End-of-RIB"
    );
    assert!(!net.snap(1, "192.0.2.1").stale);
}

#[test]
fn graceful_restart_purges_stale_routes_when_restart_time_runs_out() {
    let mut net = gr_pair();
    net.unplug(0);
    net.advance(Duration::from_secs(20));
    assert!(net.best(1, "10.244.1.0/24").is_some());
    net.advance(Duration::from_secs(15));
    assert!(net.best(1, "10.244.1.0/24").is_none());
}

#[test]
fn restarting_speaker_defers_advertisement_until_end_of_rib() {
    let mut net = Net::new();
    let a = net.add("192.0.2.1", 65001, |c| {
        c.restarting = true;
        c.restart_defer = Duration::from_secs(60);
        c.originate = vec![Originate {
            prefix: pfx("10.244.1.0/24"),
            attrs: PathAttrs::local(),
        }];
    });
    assert!(net.nodes[a].speaker.deferring());
    let b = net.add("192.0.2.2", 65002, |_| {});
    let mut pb = peer("192.0.2.2", 65002);
    pb.graceful_restart = Some(30);
    let mut pa = peer("192.0.2.1", 65001);
    pa.graceful_restart = Some(30);
    net.set_peers(b, vec![pa]);
    net.set_peers(a, vec![pb]);
    // B sends its (empty) table and End-of-RIB; A then advertises.
    assert!(!net.nodes[a].speaker.deferring());
    assert!(net.best(b, "10.244.1.0/24").is_some());
}

#[test]
fn first_start_defers_nothing() {
    let mut net = Net::new();
    let a = net.add("192.0.2.1", 65001, |_| {});
    assert!(!net.nodes[a].speaker.deferring());
}

#[test]
fn hundred_thousand_routes_with_one_attribute_set_pack_into_about_a_hundred_updates() {
    let mut net = Net::new();
    let a = net.add("192.0.2.1", 65001, |_| {});
    let b = net.add("192.0.2.2", 65002, |_| {});
    let routes: Vec<Originate> = (0..100_000u32)
        .map(|i| Originate {
            prefix: Prefix::v4(std::net::Ipv4Addr::from((10 << 24) | (i << 8)), 24).unwrap(),
            attrs: PathAttrs::local(),
        })
        .collect();
    let now = net.now;
    net.nodes[a].speaker.announce_many(now, routes);
    net.set_peers(a, vec![peer("192.0.2.2", 65002)]);
    net.set_peers(b, vec![peer("192.0.2.1", 65001)]);
    assert_eq!(net.snap(b, "192.0.2.1").prefixes_accepted, 100_000);
    let updates = net.nodes[b].received[&MessageType::Update];
    assert!(updates < 150, "{updates} UPDATEs");
}

#[test]
fn unknown_peer_is_refused() {
    let mut net = Net::new();
    let a = net.add("192.0.2.1", 65001, |_| {});
    let now = net.now;
    let r = net.nodes[a].speaker.accepted(
        now,
        "192.0.2.1:179".parse().unwrap(),
        "198.51.100.9:40000".parse().unwrap(),
    );
    assert!(r.is_none());
    assert!(net.nodes[a].speaker.poll_output().is_none());
}

#[test]
fn shutdown_sends_cease_to_every_peer() {
    let mut net = line();
    let now = net.now;
    net.nodes[1].speaker.shutdown(now, "tortie is stopping");
    net.pump();
    assert!(net.nodes[1].speaker.is_quiet());
    assert!(net.snap(0, "192.0.2.2").last_error.contains("stopping"));
    net.advance(Duration::from_secs(30));
    assert_ne!(net.state(1, "192.0.2.1"), State::Established);
}

#[test]
fn import_filter_change_asks_for_a_refresh_and_refilters() {
    let mut net = line();
    net.originate(0, "10.244.1.0/24");
    net.originate(0, "10.244.2.0/24");
    assert!(net.best(1, "10.244.2.0/24").is_some());
    let mut from_a = peer("192.0.2.1", 65001);
    from_a.import = Filter {
        rules: vec![Rule::prefix(
            PrefixMatch::Exact(pfx("10.244.2.0/24")),
            FilterAction::Reject,
        )],
        default: FilterAction::Accept,
    };
    net.set_peers(1, vec![from_a, peer("192.0.2.3", 65003)]);
    assert!(net.best(1, "10.244.2.0/24").is_none(), "re-filtered");
    assert!(net.best(1, "10.244.1.0/24").is_some());
    net.set_peers(1, vec![peer("192.0.2.1", 65001), peer("192.0.2.3", 65003)]);
    assert!(net.best(1, "10.244.2.0/24").is_some(), "back after refresh");
    assert_eq!(net.snap(1, "192.0.2.1").established_count, 1, "no reset");
}

#[test]
fn simultaneous_connects_collide_and_one_session_survives() {
    let mut net = Net::new();
    let a = net.add("192.0.2.1", 65001, |_| {});
    let b = net.add("192.0.2.2", 65002, |_| {});
    let now = net.now;
    for (n, p) in [(a, peer("192.0.2.2", 65002)), (b, peer("192.0.2.1", 65001))] {
        let cfg = net.nodes[n].speaker.config().clone();
        net.nodes[n].speaker.set_config(now, cfg, vec![p]);
    }
    // Both Connect outputs are queued before either is carried out.
    net.pump();
    net.advance(Duration::from_secs(5));
    assert_eq!(net.state(a, "192.0.2.2"), State::Established);
    assert_eq!(net.state(b, "192.0.2.1"), State::Established);
    assert_eq!(net.links.len(), 2, "one connection (two ends) left");
    net.originate(a, "10.244.1.0/24");
    assert!(net.best(b, "10.244.1.0/24").is_some());
}

#[test]
fn stale_routes_go_when_the_peer_returns_without_graceful_restart() {
    let mut net = gr_pair();
    net.unplug(0);
    assert!(net.best(1, "10.244.2.0/24").is_some());
    // A comes back configured without GR and without 10.244.2.0/24.
    let now = net.now;
    net.nodes[0].speaker.withdraw(now, pfx("10.244.2.0/24"));
    net.plug(0);
    net.set_peers(0, vec![peer("192.0.2.2", 65002)]);
    net.advance(Duration::from_secs(5));
    assert_eq!(net.state(1, "192.0.2.1"), State::Established);
    assert!(net.best(1, "10.244.2.0/24").is_none());
    assert!(!net.snap(1, "192.0.2.1").stale);
}

#[test]
fn ipv6_routes_on_an_ipv4_session_carry_the_mapped_next_hop() {
    let mut net = Net::new();
    let a = net.add("192.0.2.1", 65001, |_| {});
    let b = net.add("192.0.2.2", 65002, |_| {});
    net.set_peers(a, vec![PeerSettings::new(ip("192.0.2.2"), Asn(65002))]);
    net.set_peers(b, vec![PeerSettings::new(ip("192.0.2.1"), Asn(65001))]);
    net.originate(a, "fd00:1::/64");
    net.originate(a, "10.244.1.0/24");
    let r = net.best(b, "fd00:1::/64").expect("IPv6 route over IPv4");
    assert!(
        matches!(r.next_hop, Some(NextHop::V6 { global, .. }) if global == "::ffff:192.0.2.1".parse::<std::net::Ipv6Addr>().unwrap()),
        "{:?}",
        r.next_hop
    );
    assert!(net.best(b, "10.244.1.0/24").is_some());
}
