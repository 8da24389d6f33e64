//! The shell on loopback: real sockets, real clock. Addresses 127.0.0.x
//! (all of 127/8 is on `lo`), ports from binding port 0.

// A panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::fsm::State;
use crate::rib::PathAttrs;
use crate::speaker::{Originate, PeerSettings, PeerSnapshot, SpeakerConfig};
use crate::wire::{Asn, Family, Message, Prefix, SessionContext};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn speaker(asn: u32, rid: &str) -> SpeakerConfig {
    let rid: Ipv4Addr = rid.parse().unwrap();
    SpeakerConfig::new(Asn(asn), rid)
}

fn peer(addr: &str, asn: u32, port: u16) -> PeerSettings {
    let mut p = PeerSettings::new(ip(addr), Asn(asn));
    p.families = vec![Family::IPV4_UNICAST];
    p.transport.port = port;
    p.transport.source_address = None;
    p.hold_time = 9;
    p.connect_retry = Duration::from_secs(2);
    p
}

fn listen(addr: &str) -> Vec<SocketAddr> {
    vec![SocketAddr::new(ip(addr), 0)]
}

async fn peer_status(h: &Handle, addr: &str) -> PeerSnapshot {
    h.status(false)
        .await
        .unwrap()
        .peers
        .into_iter()
        .find(|p| p.address == ip(addr))
        .unwrap()
}

/// Polls `h` until `cond` holds for `addr`'s line, or panics at `timeout`.
async fn wait_peer(
    h: &Handle,
    addr: &str,
    timeout: Duration,
    what: &str,
    cond: impl Fn(&PeerSnapshot) -> bool,
) -> PeerSnapshot {
    let end = Instant::now() + timeout;
    loop {
        let p = peer_status(h, addr).await;
        if cond(&p) {
            return p;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}: {p:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn prefixes(n: u32) -> Vec<Originate> {
    (0..n)
        .map(|i| Originate {
            // 10.0.0.0/8 and up, /24s (wraps into 11/8.. for big n).
            prefix: Prefix::v4(Ipv4Addr::from((10u32 << 24) + (i << 8)), 24).unwrap(),
            attrs: PathAttrs::local(),
        })
        .collect()
}

/// B listens on 127.0.0.2 and waits for A; A connects from 127.0.0.1.
async fn pair(
    a_cfg: SpeakerConfig,
    b_cfg: SpeakerConfig,
    tweak_a: impl FnOnce(&mut PeerSettings),
    tweak_b: impl FnOnce(&mut PeerSettings),
) -> (Handle, Handle) {
    let mut pa = peer("127.0.0.1", a_cfg.asn.0, 0);
    pa.passive = true;
    tweak_b(&mut pa);
    let (b, _) = start(RuntimeConfig {
        speaker: b_cfg,
        peers: vec![pa],
        listen: listen("127.0.0.2"),
    })
    .await
    .unwrap();
    let port = b.listen_addrs()[0].port();
    let mut pb = peer("127.0.0.2", 65002, port);
    pb.asn = b.status(false).await.unwrap().speaker.asn;
    pb.transport.source_address = Some(ip("127.0.0.1"));
    tweak_a(&mut pb);
    let (a, _) = start(RuntimeConfig {
        speaker: a_cfg,
        peers: vec![pb],
        listen: Vec::new(),
    })
    .await
    .unwrap();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_speakers_establish_and_exchange_routes() {
    let mut a_cfg = speaker(65001, "192.0.2.1");
    a_cfg.originate = prefixes(1000);
    let mut b_cfg = speaker(65002, "192.0.2.2");
    b_cfg.originate = vec![Originate {
        prefix: "10.244.2.0/24".parse().unwrap(),
        attrs: PathAttrs::local(),
    }];
    let (a, b) = pair(a_cfg, b_cfg, |_| {}, |_| {}).await;
    let t = Duration::from_secs(10);
    let at_b = wait_peer(&b, "127.0.0.1", t, "B has A's 1000 routes", |p| {
        p.prefixes_accepted == 1000
    })
    .await;
    assert_eq!(at_b.state, State::Established);
    wait_peer(&a, "127.0.0.2", t, "A has B's route", |p| {
        p.prefixes_accepted == 1
    })
    .await;
    let routes = b.status(true).await.unwrap().routes.unwrap();
    let r = routes
        .iter()
        .find(|r| r.prefix == "10.0.0.0/24".parse().unwrap())
        .unwrap();
    assert_eq!(r.paths[0].peer, Some(ip("127.0.0.1")));
    assert_eq!(r.paths[0].attrs.as_path.to_string(), "65001");

    // Shutdown sends Cease; B sees it in words.
    a.shutdown("maintenance").await.unwrap();
    let p = wait_peer(&b, "127.0.0.1", t, "B sees A leave", |p| {
        p.state != State::Established
    })
    .await;
    assert!(p.last_error.contains("maintenance"), "{}", p.last_error);
    assert_eq!(p.prefixes_accepted, 0);
    b.shutdown("done").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_peer_is_closed_without_a_byte() {
    let (b, _) = start(RuntimeConfig {
        speaker: speaker(65002, "192.0.2.2"),
        peers: vec![peer("127.0.0.9", 65001, 179)],
        listen: listen("127.0.0.2"),
    })
    .await
    .unwrap();
    let addr = b.listen_addrs()[0];
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0, "no byte before the close");
    b.shutdown("done").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_mismatch_never_establishes_and_match_does() {
    let (a, b) = pair(
        speaker(65001, "192.0.2.1"),
        speaker(65002, "192.0.2.2"),
        |p| p.transport.password = Some("one".into()),
        |p| p.transport.password = Some("two".into()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(peer_status(&b, "127.0.0.1").await.state, State::Established);
    assert_ne!(peer_status(&a, "127.0.0.2").await.state, State::Established);
    a.shutdown("done").await.unwrap();
    b.shutdown("done").await.unwrap();

    let (a, b) = pair(
        speaker(65001, "192.0.2.1"),
        speaker(65002, "192.0.2.2"),
        |p| p.transport.password = Some("same".into()),
        |p| p.transport.password = Some("same".into()),
    )
    .await;
    wait_peer(
        &b,
        "127.0.0.1",
        Duration::from_secs(15),
        "MD5 session",
        |p| p.state == State::Established,
    )
    .await;
    a.shutdown("done").await.unwrap();
    b.shutdown("done").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_timer_expiry_is_detected_and_explained() {
    let mut pa = peer("127.0.0.1", 65001, 0);
    pa.passive = true;
    pa.hold_time = 3;
    let (b, _) = start(RuntimeConfig {
        speaker: speaker(65002, "192.0.2.2"),
        peers: vec![pa],
        listen: listen("127.0.0.2"),
    })
    .await
    .unwrap();
    // A silent peer: OPEN, one KEEPALIVE, then nothing.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut s: TcpStream = sock.connect(b.listen_addrs()[0]).await.unwrap();
    let mut cfg = crate::fsm::PeerConfig::new(
        Asn(65001),
        Asn(65002),
        crate::wire::RouterId("192.0.2.1".parse().unwrap()),
    );
    cfg.hold_time = crate::wire::HoldTime(3);
    let open = crate::fsm::negotiate::local_open(&cfg);
    let ctx = SessionContext::default();
    s.write_all(&Message::Open(open).encode(&ctx).unwrap())
        .await
        .unwrap();
    s.write_all(&Message::Keepalive.encode(&ctx).unwrap())
        .await
        .unwrap();
    wait_peer(
        &b,
        "127.0.0.1",
        Duration::from_secs(5),
        "established",
        |p| p.state == State::Established,
    )
    .await;
    let started = Instant::now();
    let p = wait_peer(&b, "127.0.0.1", Duration::from_secs(8), "hold timer", |p| {
        p.state != State::Established
    })
    .await;
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(
        p.last_error.contains("hold timer expired after 3 s"),
        "{}",
        p.last_error
    );
    b.shutdown("done").await.unwrap();
}

/// 1,000,000 prefixes flow from A to B while the A-B session (hold 3 s)
/// and a second session C-B (hold 3 s, idle) must stay up: neither
/// ingesting nor sending may starve keepalives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_prefixes_do_not_starve_keepalives() {
    const N: u32 = 1_000_000;
    let mut a_cfg = speaker(65001, "192.0.2.1");
    a_cfg.originate = prefixes(N);
    let b_cfg = speaker(65002, "192.0.2.2");
    let mut pa = peer("127.0.0.1", 65001, 0);
    pa.passive = true;
    pa.hold_time = 3;
    let mut pc = peer("127.0.0.3", 65003, 0);
    pc.passive = true;
    pc.hold_time = 3;
    let (b, _) = start(RuntimeConfig {
        speaker: b_cfg,
        peers: vec![pa, pc],
        listen: listen("127.0.0.2"),
    })
    .await
    .unwrap();
    let port = b.listen_addrs()[0].port();
    let mut pb_from_c = peer("127.0.0.2", 65002, port);
    pb_from_c.hold_time = 3;
    pb_from_c.transport.source_address = Some(ip("127.0.0.3"));
    let (c, _) = start(RuntimeConfig {
        speaker: speaker(65003, "192.0.2.3"),
        peers: vec![pb_from_c],
        listen: Vec::new(),
    })
    .await
    .unwrap();
    wait_peer(&b, "127.0.0.3", Duration::from_secs(10), "C up", |p| {
        p.state == State::Established
    })
    .await;
    let mut pb = peer("127.0.0.2", 65002, port);
    pb.hold_time = 3;
    pb.transport.source_address = Some(ip("127.0.0.1"));
    let t0 = Instant::now();
    let (a, _) = start(RuntimeConfig {
        speaker: a_cfg,
        peers: vec![pb],
        listen: Vec::new(),
    })
    .await
    .unwrap();
    let p = wait_peer(
        &b,
        "127.0.0.1",
        Duration::from_secs(180),
        "1M routes at B",
        |p| p.prefixes_accepted == u64::from(N) || p.established_count > 1,
    )
    .await;
    let took = t0.elapsed();
    eprintln!("{N} prefixes from A to B in {took:?}");
    assert_eq!(p.established_count, 1, "A-B flapped: {}", p.last_error);
    assert_eq!(p.state, State::Established);
    // Let a few hold times pass after the flood too.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let p = peer_status(&b, "127.0.0.1").await;
    assert_eq!(
        (p.state, p.established_count),
        (State::Established, 1),
        "{}",
        p.last_error
    );
    let pc = peer_status(&b, "127.0.0.3").await;
    assert_eq!(
        (pc.state, pc.established_count),
        (State::Established, 1),
        "{}",
        pc.last_error
    );
    assert_eq!(
        pc.prefixes_advertised,
        u64::from(N),
        "B passed them on to C"
    );
    let at_a = peer_status(&a, "127.0.0.2").await;
    assert_eq!(at_a.established_count, 1, "{}", at_a.last_error);
    a.shutdown("done").await.unwrap();
    b.shutdown("done").await.unwrap();
    c.shutdown("done").await.unwrap();
}
