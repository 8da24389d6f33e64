//! Golden tests: the codec against byte streams captured from real BIRD 2
//! and GoBGP sessions (`tests/data/*/<from>-to-<to>.bin`, recorded by
//! `tests/data/capture.sh`; `tests/data/README.md` says what each holds).
//!
//! For every stream: frame and decode every message with the context the
//! two OPENs of that capture negotiate, require no error and no RFC 7606
//! outcome, re-encode with the sender's context and compare byte for byte
//! (see [`reencode_exception`] for where the peers' encodings are not the
//! codec's canonical one), then check facts each scenario is known to
//! hold. A failure names the file, the message index and its offset.
//!
//! The captures are raw recordings, not blessed output: to change them,
//! run `capture.sh` again (as root) and update the facts here.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use tortie_bgp::wire::{
    decode_message, frame, AddPathMode, Aggregator, Asn, Capability, CeaseSubcode, Community,
    ErrorCode, ExtendedCommunity, Family, Frame, LargeCommunity, Message, Notification, Open,
    Prefix, SessionContext, AS_TRANS,
};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// One message of a stream: where it starts, its bytes, what it decoded to.
struct Decoded {
    offset: usize,
    raw: Vec<u8>,
    msg: Message,
}

/// One direction of one session.
struct Stream {
    /// `<scenario>/<from>-to-<to>.bin`, for failure messages.
    file: String,
    /// Context of the receiver (decoding).
    recv: SessionContext,
    /// Context of the sender (encoding).
    send: SessionContext,
    messages: Vec<Decoded>,
}

impl Stream {
    fn at(&self, i: usize) -> String {
        let offset = self.messages.get(i).map_or(0, |d| d.offset);
        format!("{} message #{i} (offset {offset})", self.file)
    }

    fn open(&self) -> &Open {
        match self.messages.first().map(|d| &d.msg) {
            Some(Message::Open(o)) => o,
            other => panic!("{}: first message is not an OPEN: {other:?}", self.file),
        }
    }
}

/// Splits a stream into messages with the codec's framer.
fn split(file: &str, bytes: &[u8], ctx: &SessionContext) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = bytes.get(offset..).unwrap_or_default();
        let i = out.len();
        match frame(rest, ctx) {
            Ok(Frame::Complete { length, .. }) => {
                let raw = rest
                    .get(..length)
                    .unwrap_or_else(|| panic!("{file} message #{i}: framed past the end"));
                out.push((offset, raw.to_vec()));
                offset += length;
            }
            Ok(Frame::Incomplete { needed }) => {
                panic!(
                    "{file} message #{i} (offset {offset}): truncated, {needed} more octets needed"
                )
            }
            Err(e) => panic!("{file} message #{i} (offset {offset}): framing failed: {e}"),
        }
    }
    out
}

/// The first message of a stream, decoded as before any negotiation.
fn first_open(file: &str, bytes: &[u8]) -> Open {
    let pre = SessionContext::default();
    let raw = match frame(bytes, &pre) {
        Ok(Frame::Complete { length, .. }) => bytes.get(..length).unwrap_or_default(),
        other => panic!("{file} message #0: cannot frame the OPEN: {other:?}"),
    };
    match decode_message(raw, &pre) {
        Ok(Message::Open(o)) => o,
        other => panic!("{file} message #0: expected an OPEN, got {other:?}"),
    }
}

/// Loads and decodes every stream of a scenario, keyed by `<from>-to-<to>`.
fn load(scenario: &str) -> BTreeMap<String, Stream> {
    let dir = data_dir().join(scenario);
    let mut raw: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        if path.extension().is_some_and(|x| x == "bin") {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_else(|| panic!("{}: bad file name", path.display()))
                .to_string();
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            raw.insert(stem, bytes);
        }
    }
    assert!(!raw.is_empty(), "{}: no .bin streams", dir.display());

    let opens: BTreeMap<String, Open> = raw
        .iter()
        .map(|(name, bytes)| {
            (
                name.clone(),
                first_open(&format!("{scenario}/{name}.bin"), bytes),
            )
        })
        .collect();

    let mut streams = BTreeMap::new();
    for (name, bytes) in &raw {
        let file = format!("{scenario}/{name}.bin");
        let (from, to) = name
            .split_once("-to-")
            .unwrap_or_else(|| panic!("{file}: name is not <from>-to-<to>"));
        let reverse = format!("{to}-to-{from}");
        let (Some(sender), Some(receiver)) = (opens.get(name), opens.get(&reverse)) else {
            panic!("{file}: no reverse stream {reverse}.bin to negotiate with");
        };
        let recv = SessionContext::negotiate(receiver, sender);
        let send = SessionContext::negotiate(sender, receiver);
        // The two ends must agree on what travels in this direction.
        assert_eq!(recv.four_octet_as, send.four_octet_as, "{file}");
        assert_eq!(recv.extended_message, send.extended_message, "{file}");
        assert_eq!(recv.add_path_receive, send.add_path_send, "{file}");

        let mut messages = Vec::new();
        for (i, (offset, raw)) in split(&file, bytes, &recv).into_iter().enumerate() {
            // OPEN is decoded before anything is negotiated.
            let ctx = if i == 0 {
                SessionContext::default()
            } else {
                recv
            };
            let msg = decode_message(&raw, &ctx).unwrap_or_else(|e| {
                panic!(
                    "{file} message #{i} (offset {offset}): decode failed: {e} \
                     (would send {:?}); bytes {}",
                    e.notification,
                    hex::encode(&raw)
                )
            });
            messages.push(Decoded { offset, raw, msg });
        }
        streams.insert(
            name.clone(),
            Stream {
                file,
                recv,
                send,
                messages,
            },
        );
    }
    streams
}

/// Where a peer's encoding of a message is valid but not the codec's
/// canonical one, so byte equality cannot be asked for; returns why. The
/// codec's canonical form, per message kind:
///
/// - OPEN: every capability in one Optional Parameter (as BIRD and GoBGP
///   send them; RFC 5492 §4 also allows one parameter per capability).
/// - UPDATE: MP_REACH_NLRI first, then MP_UNREACH_NLRI (RFC 7606 §5.1),
///   then the other attributes in ascending type code; MP_REACH_NLRI
///   always with Extended Length (2-octet length), every other attribute
///   with it only when its value exceeds 255 octets (RFC 4271 §4.3).
///   BIRD's UPDATEs are canonical; GoBGP sends AGGREGATOR before NEXT_HOP
///   and MP_REACH_NLRI after the other attributes with a 1-octet length.
/// - KEEPALIVE, NOTIFICATION, ROUTE-REFRESH: always canonical.
///
/// Anything else must re-encode byte for byte. The exceptions are decided
/// from the captured bytes here, not by asking the codec.
fn reencode_exception(raw: &[u8]) -> Option<&'static str> {
    match raw.get(18) {
        Some(1) if capability_parameters(raw) > 1 => {
            Some("OPEN spreads capabilities over several Optional Parameters")
        }
        Some(2) => update_layout_issue(raw),
        _ => None,
    }
}

/// How many Optional Parameters of an OPEN carry capabilities (RFC 5492
/// §4; RFC 4271 §4.2 layout, non-extended).
fn capability_parameters(raw: &[u8]) -> usize {
    let Some(&opt_len) = raw.get(28) else {
        return 0;
    };
    let mut params = raw.get(29..29 + usize::from(opt_len)).unwrap_or_default();
    let mut count = 0;
    while let [ptype, plen, rest @ ..] = params {
        count += usize::from(*ptype == 2);
        params = rest.get(usize::from(*plen)..).unwrap_or_default();
    }
    count
}

/// Walks an UPDATE's path attributes (RFC 4271 §4.3) and says how their
/// layout departs from the canonical one, if it does.
fn update_layout_issue(raw: &[u8]) -> Option<&'static str> {
    const MP_REACH: u8 = 14;
    const MP_UNREACH: u8 = 15;
    let body = raw.get(19..)?;
    let (wd, body) = body.split_first_chunk::<2>()?;
    let body = body.get(usize::from(u16::from_be_bytes(*wd))..)?;
    let (al, body) = body.split_first_chunk::<2>()?;
    let mut attrs = body.get(..usize::from(u16::from_be_bytes(*al)))?;
    // Canonical rank: MP_REACH, MP_UNREACH, then type code.
    let rank = |code: u8| match code {
        MP_REACH => 0u16,
        MP_UNREACH => 1,
        c => 2 + u16::from(c),
    };
    let (mut last, mut issue) = (None, None);
    while let [flags, code, rest @ ..] = attrs {
        let extended = flags & 0x10 != 0;
        let (len, rest) = if extended {
            let (l, r) = rest.split_first_chunk::<2>()?;
            (usize::from(u16::from_be_bytes(*l)), r)
        } else {
            let (l, r) = rest.split_first()?;
            (usize::from(*l), r)
        };
        if last.is_some_and(|l| rank(*code) <= l) {
            return Some("UPDATE path attributes not in canonical order");
        }
        last = Some(rank(*code));
        if *code == MP_REACH && !extended {
            issue = Some("UPDATE MP_REACH_NLRI with a 1-octet length");
        } else if *code != MP_REACH && extended && len <= 255 {
            issue = Some("UPDATE uses Extended Length for an attribute under 256 octets");
        }
        attrs = rest.get(len..)?;
    }
    issue
}

/// Checks every message of a stream: no RFC 7606 outcome, and it
/// re-encodes to the captured bytes (or, where the peer's encoding is not
/// canonical, to bytes that decode to the same message). Returns one line
/// per failing message, so a run shows them all.
fn check_stream(s: &Stream, outcome: &mut BTreeMap<&'static str, usize>) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, d) in s.messages.iter().enumerate() {
        let at = s.at(i);
        if let Message::Update(u) = &d.msg {
            if u.treat_as_withdraw.is_some() || !u.discarded.is_empty() {
                failures.push(format!(
                    "{at}: unexpected RFC 7606 outcome: treat-as-withdraw {:?}, discarded {:?}",
                    u.treat_as_withdraw, u.discarded
                ));
                continue;
            }
        }
        let ctx = if i == 0 {
            SessionContext::default()
        } else {
            s.send
        };
        let again = match d.msg.encode(&ctx) {
            Ok(bytes) => bytes,
            Err(e) => {
                failures.push(format!("{at}: re-encoding failed: {e}"));
                continue;
            }
        };
        if again == d.raw {
            *outcome.entry("byte-identical").or_default() += 1;
            continue;
        }
        let Some(why) = reencode_exception(&d.raw) else {
            failures.push(format!(
                "{at}: re-encoding differs\n  captured {}\n  encoded  {}",
                hex::encode(&d.raw),
                hex::encode(&again)
            ));
            continue;
        };
        *outcome.entry(why).or_default() += 1;
        // Not canonical on the wire: the codec's bytes must still carry
        // exactly the same message.
        let recv = if i == 0 {
            SessionContext::default()
        } else {
            s.recv
        };
        match decode_message(&again, &recv) {
            Ok(back) if back == d.msg => {}
            Ok(back) => failures.push(format!(
                "{at}: re-encoding changed the message:\n  was {:?}\n  now {back:?}",
                d.msg
            )),
            Err(e) => failures.push(format!("{at}: re-encoded bytes do not decode: {e}")),
        }
    }
    failures
}

/// What a stream carried, gathered for the per-scenario assertions.
#[derive(Debug, Default)]
struct Facts {
    kinds: BTreeMap<String, usize>,
    announced: BTreeMap<Family, BTreeSet<Prefix>>,
    withdrawn: BTreeMap<Family, BTreeSet<Prefix>>,
    /// Every announced or withdrawn entry carried a path identifier.
    all_path_ids: bool,
    any_path_id: bool,
    end_of_rib: BTreeSet<Family>,
    refresh: Vec<Family>,
    notifications: Vec<Notification>,
    communities: BTreeSet<Community>,
    /// Prefixes announced with NO_EXPORT.
    no_export: BTreeSet<Prefix>,
    large: BTreeSet<LargeCommunity>,
    extended: BTreeSet<ExtendedCommunity>,
    meds: BTreeSet<u32>,
    local_prefs: BTreeSet<u32>,
    originators: BTreeSet<Ipv4Addr>,
    cluster_lists: BTreeSet<Vec<Ipv4Addr>>,
    as_paths: BTreeSet<String>,
    as4_paths: BTreeSet<String>,
    /// AS paths after RFC 6793 reconciliation.
    reconciled: BTreeSet<String>,
    /// (AGGREGATOR, AS4_AGGREGATOR) pairs.
    aggregators: BTreeSet<(Option<AggregatorKey>, Option<AggregatorKey>)>,
    next_hops: BTreeSet<IpAddr>,
}

/// An aggregator as (AS, address), orderable for sets.
type AggregatorKey = (u32, Ipv4Addr);

fn agg(a: Option<Aggregator>) -> Option<AggregatorKey> {
    a.map(|a| (a.asn.0, a.address))
}

fn facts(s: &Stream) -> Facts {
    let mut f = Facts {
        all_path_ids: true,
        ..Facts::default()
    };
    for d in &s.messages {
        *f.kinds.entry(d.msg.message_type().to_string()).or_default() += 1;
        match &d.msg {
            Message::Update(u) => {
                if let Some(family) = u.end_of_rib_family() {
                    f.end_of_rib.insert(family);
                    continue;
                }
                for (family, e) in u.announced_entries() {
                    f.all_path_ids &= e.path_id.is_some();
                    f.any_path_id |= e.path_id.is_some();
                    f.announced.entry(family).or_default().insert(e.prefix);
                    if u.attributes.communities.contains(&Community::NO_EXPORT) {
                        f.no_export.insert(e.prefix);
                    }
                }
                for (family, e) in u.withdrawn_entries() {
                    f.all_path_ids &= e.path_id.is_some();
                    f.any_path_id |= e.path_id.is_some();
                    f.withdrawn.entry(family).or_default().insert(e.prefix);
                }
                let a = &u.attributes;
                f.communities.extend(a.communities.iter().copied());
                f.large.extend(a.large_communities.iter().copied());
                f.extended.extend(a.extended_communities.iter().copied());
                f.meds.extend(a.multi_exit_disc);
                f.local_prefs.extend(a.local_pref);
                f.originators.extend(a.originator_id);
                if !a.cluster_list.is_empty() {
                    f.cluster_lists.insert(a.cluster_list.clone());
                }
                if let Some(p) = &a.as_path {
                    f.as_paths.insert(p.to_string());
                }
                if let Some(p) = &a.as4_path {
                    f.as4_paths.insert(p.to_string());
                }
                if a.aggregator.is_some() || a.as4_aggregator.is_some() {
                    f.aggregators
                        .insert((agg(a.aggregator), agg(a.as4_aggregator)));
                }
                f.next_hops.extend(a.next_hop.map(IpAddr::V4));
                if let Some(r) = &u.mp_reach {
                    match r.next_hop {
                        tortie_bgp::wire::NextHop::V4(a) => f.next_hops.insert(IpAddr::V4(a)),
                        tortie_bgp::wire::NextHop::V6 { global, .. } => {
                            f.next_hops.insert(IpAddr::V6(global))
                        }
                    };
                }
                if u.has_announcements() && !s.recv.four_octet_as {
                    let mut merged = a.clone();
                    merged.reconcile_as4();
                    if let Some(p) = &merged.as_path {
                        f.reconciled.insert(p.to_string());
                    }
                }
            }
            Message::RouteRefresh(r) => f.refresh.push(r.family),
            Message::Notification(n) => f.notifications.push(n.clone()),
            Message::Open(_) | Message::Keepalive => {}
        }
    }
    f
}

fn prefix(s: &str) -> Prefix {
    s.parse()
        .unwrap_or_else(|e| panic!("test prefix {s}: {e:?}"))
}

fn prefixes(fmt: impl Fn(u32) -> String, range: std::ops::RangeInclusive<u32>) -> BTreeSet<Prefix> {
    range.map(|i| prefix(&fmt(i))).collect()
}

fn stream<'a>(streams: &'a BTreeMap<String, Stream>, name: &str) -> &'a Stream {
    streams
        .get(name)
        .unwrap_or_else(|| panic!("no stream {name}.bin (have {:?})", streams.keys()))
}

fn has_cap(open: &Open, pred: impl Fn(&Capability) -> bool) -> bool {
    open.capabilities.iter().any(pred)
}

fn ext_route_target_as4(asn: u32, value: u16) -> ExtendedCommunity {
    // RFC 5668: type 0x02 (4-octet AS specific, transitive), subtype 0x02.
    let a = asn.to_be_bytes();
    let v = value.to_be_bytes();
    ExtendedCommunity([0x02, 0x02, a[0], a[1], a[2], a[3], v[0], v[1]])
}

fn assert_admin_shutdown(s: &Stream, f: &Facts, text: Option<&str>) {
    let [n] = f.notifications.as_slice() else {
        panic!(
            "{}: expected one NOTIFICATION, got {:?}",
            s.file, f.notifications
        );
    };
    assert_eq!(n.code, ErrorCode::Cease, "{}", s.file);
    assert_eq!(
        n.subcode,
        CeaseSubcode::AdministrativeShutdown as u8,
        "{}",
        s.file
    );
    assert_eq!(n.shutdown_communication(), text, "{}", s.file);
    assert!(
        matches!(
            s.messages.last().map(|d| &d.msg),
            Some(Message::Notification(_))
        ),
        "{}: the NOTIFICATION is not the last message",
        s.file
    );
}

#[test]
fn every_captured_message_decodes_cleanly_and_reencodes() {
    let mut total = 0;
    let mut failures = Vec::new();
    let mut outcome = BTreeMap::new();
    for scenario in ["ebgp-mp", "as4-trans", "ibgp-rr", "ext-msg"] {
        for s in load(scenario).values() {
            failures.extend(check_stream(s, &mut outcome));
            total += s.messages.len();
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} captured messages failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(total > 100, "only {total} messages in the captures");
    println!("{total} captured messages re-encoded: {outcome:#?}");
    // The exceptions must stay exceptions.
    let identical = outcome.get("byte-identical").copied().unwrap_or(0);
    assert!(
        identical * 2 > total,
        "only {identical} of {total} byte-identical"
    );
}

/// Scenario 1: eBGP between 4-octet ASNs, IPv4 + IPv6, ADD-PATH, GR,
/// route refresh, withdrawals, shutdown communication.
#[test]
fn ebgp_mp_facts() {
    let streams = load("ebgp-mp");
    let bird = stream(&streams, "bird-to-gobgp");
    let gobgp = stream(&streams, "gobgp-to-bird");
    let v4 = Family::IPV4_UNICAST;
    let v6 = Family::IPV6_UNICAST;

    // OPENs and what they negotiate.
    let bo = bird.open();
    assert_eq!(
        bo.my_as, AS_TRANS.0 as u16,
        "{}: 4-octet AS sends AS_TRANS",
        bird.file
    );
    assert_eq!(bo.asn(), Asn(4_200_000_001));
    assert_eq!(bo.hold_time.0, 90);
    assert_eq!(bo.router_id.0, Ipv4Addr::new(192, 0, 2, 1));
    assert!(has_cap(bo, |c| *c == Capability::Multiprotocol(v4)));
    assert!(has_cap(bo, |c| *c == Capability::Multiprotocol(v6)));
    assert!(has_cap(bo, |c| *c == Capability::RouteRefresh));
    assert!(has_cap(bo, |c| *c == Capability::EnhancedRouteRefresh));
    assert!(has_cap(bo, |c| *c == Capability::ExtendedMessage));
    assert!(has_cap(bo, |c| matches!(c, Capability::GracefulRestart(g)
        if g.restart_time == 120 && g.families.len() == 2)));
    assert!(has_cap(bo, |c| matches!(c, Capability::AddPath(l)
        if l.len() == 2 && l.iter().all(|a| a.mode == AddPathMode::Both))));
    assert!(
        has_cap(bo, |c| matches!(c, Capability::Unknown { code: 71, .. })),
        "LLGR kept as unknown"
    );

    let go = gobgp.open();
    assert_eq!(go.asn(), Asn(4_200_000_002));
    assert!(
        !has_cap(go, |c| *c == Capability::ExtendedMessage),
        "GoBGP 3.10 has no RFC 8654"
    );
    assert!(
        has_cap(go, |c| matches!(c, Capability::Unknown { code: 73, .. })),
        "FQDN kept as unknown"
    );

    for s in [bird, gobgp] {
        assert!(s.recv.four_octet_as, "{}", s.file);
        assert!(!s.recv.extended_message, "{}", s.file);
        assert!(
            s.recv.receives_path_ids(v4) && s.recv.receives_path_ids(v6),
            "{}",
            s.file
        );
    }

    // BIRD -> GoBGP.
    let f = facts(bird);
    assert_eq!(f.kinds.get("OPEN"), Some(&1));
    assert!(
        f.all_path_ids && f.any_path_id,
        "{}: ADD-PATH ids on every NLRI",
        bird.file
    );
    let mut want4 = prefixes(|i| format!("10.244.{i}.0/24"), 1..=40);
    want4.extend(prefixes(|i| format!("10.244.{i}.0/24"), 200..=204));
    assert_eq!(f.announced.get(&v4), Some(&want4), "{}", bird.file);
    let want6 = prefixes(|i| format!("fd00:1:{i:x}::/48"), 1..=20);
    assert_eq!(f.announced.get(&v6), Some(&want6), "{}", bird.file);
    assert_eq!(
        f.withdrawn.get(&v4),
        Some(&prefixes(|i| format!("10.244.{i}.0/24"), 200..=204)),
        "{}",
        bird.file
    );
    assert_eq!(f.end_of_rib, BTreeSet::from([v4, v6]), "{}", bird.file);
    assert_eq!(f.refresh, vec![v4, v6], "{}: `birdc reload in`", bird.file);
    assert!(f.communities.contains(&Community::new(65000, 100)));
    assert!(
        f.communities.contains(&Community::new(65535, 666)),
        "BLACKHOLE"
    );
    assert_eq!(
        f.no_export,
        BTreeSet::from([prefix("10.244.1.0/24"), prefix("fd00:1:1::/48")]),
        "{}",
        bird.file
    );
    assert_eq!(
        f.large,
        BTreeSet::from([LargeCommunity {
            global_admin: 4_200_000_001,
            local1: 1,
            local2: 2
        }])
    );
    assert!(
        f.extended
            .contains(&ext_route_target_as4(4_200_000_001, 100)),
        "{:?}",
        f.extended
    );
    assert_eq!(f.meds, BTreeSet::from([10, 20]));
    assert_eq!(f.as_paths, BTreeSet::from(["4200000001".to_string()]));
    let nh6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    assert!(
        f.next_hops.contains(&nh6),
        "{}: {:?}",
        bird.file,
        f.next_hops
    );
    assert_admin_shutdown(bird, &f, Some("maintenance"));

    // GoBGP -> BIRD.
    let f = facts(gobgp);
    assert!(f.all_path_ids, "{}", gobgp.file);
    assert_eq!(
        f.announced.get(&v4),
        Some(&prefixes(|i| format!("10.245.{i}.0/24"), 1..=30)),
        "{}",
        gobgp.file
    );
    assert_eq!(
        f.announced.get(&v6),
        Some(&prefixes(|i| format!("fd00:2:{i:x}::/48"), 1..=15)),
        "{}",
        gobgp.file
    );
    assert_eq!(
        f.withdrawn.get(&v4),
        Some(&prefixes(|i| format!("10.245.{i}.0/24"), 1..=5)),
        "{}",
        gobgp.file
    );
    assert_eq!(
        f.withdrawn.get(&v6),
        Some(&BTreeSet::from([prefix("fd00:2:1::/48")]))
    );
    assert!(
        f.end_of_rib.contains(&v4) && f.end_of_rib.contains(&v6),
        "{}",
        gobgp.file
    );
    assert!(f.communities.contains(&Community::NO_EXPORT));
    assert!(f.communities.contains(&Community::new(65000, 200)));
    assert!(f.large.contains(&LargeCommunity {
        global_admin: 4_200_000_002,
        local1: 6,
        local2: 15
    }));
    assert_eq!(
        f.extended,
        (0..3)
            .map(|n| ExtendedCommunity::route_target(65000, n))
            .collect(),
        "{}",
        gobgp.file
    );
    assert_eq!(f.meds, BTreeSet::from([0, 1, 2, 5]));
    assert!(f.notifications.is_empty());
}

/// Scenario 2: a 2-octet-only BIRD; GoBGP must use AS_TRANS, AS4_PATH and
/// AS4_AGGREGATOR, which reconcile to the 4-octet path (RFC 6793).
#[test]
fn as4_trans_facts() {
    let streams = load("as4-trans");
    let bird = stream(&streams, "bird-to-gobgp");
    let gobgp = stream(&streams, "gobgp-to-bird");
    assert!(!has_cap(bird.open(), |c| matches!(
        c,
        Capability::FourOctetAs(_)
    )));
    assert!(has_cap(gobgp.open(), |c| *c == Capability::FourOctetAs(Asn(65002))));
    assert!(!bird.recv.four_octet_as && !gobgp.recv.four_octet_as);

    let f = facts(gobgp);
    assert_eq!(
        f.announced.get(&Family::IPV4_UNICAST).map(BTreeSet::len),
        Some(11)
    );
    assert_eq!(
        f.as_paths,
        BTreeSet::from([
            "65002 23456 65010 23456".to_string(),
            "65002 23456".to_string()
        ]),
        "{}",
        gobgp.file
    );
    assert_eq!(
        f.as4_paths,
        BTreeSet::from([
            "65002 4200000010 65010 4200000011".to_string(),
            "65002 4200000020".to_string()
        ]),
        "{}",
        gobgp.file
    );
    assert_eq!(
        f.reconciled,
        BTreeSet::from([
            "65002 4200000010 65010 4200000011".to_string(),
            "65002 4200000020".to_string()
        ]),
        "{}: RFC 6793 §4.2.3",
        gobgp.file
    );
    let addr = Ipv4Addr::new(198, 51, 100, 7);
    assert_eq!(
        f.aggregators,
        BTreeSet::from([(Some((AS_TRANS.0, addr)), Some((4_200_000_020, addr)))]),
        "{}",
        gobgp.file
    );

    let f = facts(bird);
    assert_eq!(
        f.announced.get(&Family::IPV4_UNICAST),
        Some(&prefixes(|i| format!("10.244.{i}.0/24"), 1..=10))
    );
    assert_eq!(f.communities, BTreeSet::from([Community::new(65001, 1)]));
    assert_eq!(f.as_paths, BTreeSet::from(["65001".to_string()]));
    assert!(f.as4_paths.is_empty());
    assert_admin_shutdown(bird, &f, None);
}

/// Scenario 3: iBGP through GoBGP as route reflector.
#[test]
fn ibgp_rr_facts() {
    let streams = load("ibgp-rr");
    let rr = Ipv4Addr::new(192, 0, 2, 2);
    for (client, other, other_pref) in [("bird1", "bird3", 103), ("bird3", "bird1", 101)] {
        let up = stream(&streams, &format!("{client}-to-gobgp"));
        let down = stream(&streams, &format!("gobgp-to-{client}"));
        let own_pref = if client == "bird1" { 101 } else { 103 };

        let f = facts(up);
        assert_eq!(
            f.local_prefs,
            BTreeSet::from([own_pref, 100]),
            "{}",
            up.file
        );
        assert_eq!(
            f.as_paths,
            BTreeSet::from([String::new()]),
            "{}: iBGP, empty AS_PATH",
            up.file
        );
        assert!(
            f.originators.is_empty() && f.cluster_lists.is_empty(),
            "{}",
            up.file
        );
        assert_eq!(
            f.announced.get(&Family::IPV4_UNICAST).map(BTreeSet::len),
            Some(8)
        );
        assert_eq!(
            f.announced.get(&Family::IPV6_UNICAST).map(BTreeSet::len),
            Some(4)
        );
        assert_admin_shutdown(up, &f, None);

        let f = facts(down);
        let other_id = if other == "bird1" {
            Ipv4Addr::new(192, 0, 2, 1)
        } else {
            Ipv4Addr::new(192, 0, 2, 3)
        };
        assert!(
            f.originators.contains(&other_id),
            "{}: {:?}",
            down.file,
            f.originators
        );
        assert!(f.cluster_lists.contains(&vec![rr]), "{}", down.file);
        assert!(f.local_prefs.contains(&other_pref), "{}", down.file);
        assert!(
            f.local_prefs.contains(&300),
            "{}: GoBGP's own route",
            down.file
        );
        assert!(f
            .announced
            .get(&Family::IPV4_UNICAST)
            .is_some_and(|s| s.contains(&prefix("10.247.0.0/24"))));
        assert_eq!(
            f.announced.get(&Family::IPV6_UNICAST).map(BTreeSet::len),
            Some(4),
            "{}",
            down.file
        );
    }
}

/// Scenario 4: BIRD to BIRD with RFC 8654 extended messages negotiated;
/// one UPDATE carries 1200 communities and is longer than 4096 octets.
#[test]
fn ext_msg_facts() {
    let streams = load("ext-msg");
    let a = stream(&streams, "bird-a-to-bird-b");
    let b = stream(&streams, "bird-b-to-bird-a");
    for s in [a, b] {
        assert!(
            has_cap(s.open(), |c| *c == Capability::ExtendedMessage),
            "{}",
            s.file
        );
        assert!(
            s.recv.extended_message && s.recv.four_octet_as,
            "{}",
            s.file
        );
        assert_eq!(s.recv.max_message_len(), 65535, "{}", s.file);
    }

    let big: Vec<usize> = a
        .messages
        .iter()
        .enumerate()
        .filter(|(_, d)| d.raw.len() > 4096)
        .map(|(i, _)| i)
        .collect();
    let [i] = big.as_slice() else {
        panic!(
            "{}: expected one message over 4096 octets, got {big:?}",
            a.file
        );
    };
    let at = a.at(*i);
    let Some(Decoded {
        raw,
        msg: Message::Update(u),
        ..
    }) = a.messages.get(*i)
    else {
        panic!("{at}: the long message is not an UPDATE");
    };
    let announced: Vec<Prefix> = u.announced_entries().map(|(_, e)| e.prefix).collect();
    assert_eq!(announced, vec![prefix("10.99.0.0/24")], "{at}");
    let want: Vec<Community> = (1..=1200).map(|n| Community::new(65000, n)).collect();
    assert_eq!(u.attributes.communities, want, "{at}");
    // Without RFC 8654 the same bytes are a framing error (RFC 4271 §6.1).
    assert!(
        frame(raw, &SessionContext::four_octet()).is_err(),
        "{at}: a {}-octet message must not frame without extended messages",
        raw.len()
    );

    let f = facts(a);
    assert_eq!(
        f.announced.get(&Family::IPV4_UNICAST).map(BTreeSet::len),
        Some(301),
        "{}",
        a.file
    );
    assert_eq!(
        f.announced.get(&Family::IPV6_UNICAST),
        Some(&prefixes(|i| format!("fd00:1:{i:x}::/48"), 1..=100)),
        "{}",
        a.file
    );
    assert_admin_shutdown(a, &f, None);
    let f = facts(b);
    assert!(f.announced.is_empty(), "{}: b exports nothing", b.file);
    assert_eq!(
        f.end_of_rib,
        BTreeSet::from([Family::IPV4_UNICAST, Family::IPV6_UNICAST])
    );
}
