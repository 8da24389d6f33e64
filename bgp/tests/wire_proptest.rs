//! Property tests: every message type round-trips through encode and
//! decode under every kind of session context, and no input (random bytes,
//! or valid messages with bits flipped, cut short or with lengths
//! fiddled) makes the decoder panic: it returns a message or a typed error.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use tortie_bgp::wire::{
    decode_message, frame, messages, pack_announcements, pack_withdrawals, AddPathFamily,
    AddPathMode, Afi, Aggregator, AsPath, AsSegment, Asn, Capability, Community, ErrorCode,
    ExtendedCommunity, Family, FamilySet, Frame, GracefulRestart, GracefulRestartFamily, HoldTime,
    LargeCommunity, Message, MpReach, MpUnreach, NextHop, NlriEntry, NlriSet, Notification, Open,
    Origin, PathAttributes, Prefix, RouteRefresh, RouteRefreshSubtype, RouterId, Safi, SegmentType,
    SessionContext, UnknownAttribute, Update,
};

const FAMILIES: [Family; 4] = [
    Family::IPV4_UNICAST,
    Family::IPV4_MULTICAST,
    Family::IPV6_UNICAST,
    Family::IPV6_MULTICAST,
];

fn family_set() -> impl Strategy<Value = FamilySet> {
    proptest::array::uniform4(any::<bool>()).prop_map(|bits| {
        let mut s = FamilySet::EMPTY;
        for (f, on) in FAMILIES.iter().zip(bits) {
            if on {
                s.insert(*f);
            }
        }
        s
    })
}

/// A context whose receive and send ADD-PATH sets agree, so what we send
/// is what we read back.
fn context() -> impl Strategy<Value = SessionContext> {
    (any::<bool>(), any::<bool>(), family_set()).prop_map(|(four, ext, ap)| SessionContext {
        four_octet_as: four,
        extended_message: ext,
        add_path_receive: ap,
        add_path_send: ap,
    })
}

fn prefix(afi: Afi) -> BoxedStrategy<Prefix> {
    if afi == Afi::IPV6 {
        (any::<u128>(), 0u8..=128)
            .prop_map(|(a, l)| Prefix::v6(Ipv6Addr::from(a), l).expect("len <= 128"))
            .boxed()
    } else {
        (any::<u32>(), 0u8..=32)
            .prop_map(|(a, l)| Prefix::v4(Ipv4Addr::from(a), l).expect("len <= 32"))
            .boxed()
    }
}

fn nlri_set(family: Family, ctx: SessionContext, max: usize) -> impl Strategy<Value = NlriSet> {
    let add_path = ctx.receives_path_ids(family);
    proptest::collection::vec((prefix(family.afi), any::<u32>()), 0..max).prop_map(move |v| {
        NlriSet::from_entries(
            family,
            add_path,
            v.into_iter().map(|(prefix, id)| NlriEntry {
                path_id: add_path.then_some(id),
                prefix,
            }),
        )
        .expect("prefixes of the family")
    })
}

fn asn(four: bool) -> BoxedStrategy<Asn> {
    // AS 0 is malformed on the wire (RFC 7607).
    if four {
        (1u32..).prop_map(Asn).boxed()
    } else {
        (1u16..).prop_map(|a| Asn(u32::from(a))).boxed()
    }
}

fn as_path(four: bool, confed: bool) -> impl Strategy<Value = AsPath> {
    let kind = if confed {
        prop_oneof![
            Just(SegmentType::Sequence),
            Just(SegmentType::Set),
            Just(SegmentType::ConfedSequence),
            Just(SegmentType::ConfedSet)
        ]
        .boxed()
    } else {
        prop_oneof![Just(SegmentType::Sequence), Just(SegmentType::Set)].boxed()
    };
    proptest::collection::vec(
        (kind, proptest::collection::vec(asn(four), 1..8))
            .prop_map(|(kind, asns)| AsSegment { kind, asns }),
        0..4,
    )
    .prop_map(|segments| AsPath { segments })
}

fn aggregator(four: bool) -> impl Strategy<Value = Aggregator> {
    (asn(four), any::<u32>()).prop_map(|(asn, a)| Aggregator {
        asn,
        address: Ipv4Addr::from(a),
    })
}

fn unknown_code() -> impl Strategy<Value = u8> {
    prop_oneof![11u8..=13, 19u8..=31, 33u8..=255]
}

fn attributes(four: bool) -> impl Strategy<Value = PathAttributes> {
    let origin = proptest::option::of(prop_oneof![
        Just(Origin::Igp),
        Just(Origin::Egp),
        Just(Origin::Incomplete)
    ]);
    let ipv4 = any::<u32>().prop_map(Ipv4Addr::from);
    let as4 = if four {
        Just((None, None)).boxed()
    } else {
        (
            proptest::option::of(as_path(true, false)),
            proptest::option::of(aggregator(true)),
        )
            .boxed()
    };
    let unknown = proptest::collection::btree_map(
        unknown_code(),
        (
            prop_oneof![Just(0xc0u8), Just(0xe0u8)],
            proptest::collection::vec(any::<u8>(), 0..300),
        ),
        0..3,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(type_code, (flags, value))| UnknownAttribute {
                flags,
                type_code,
                value,
            })
            .collect::<Vec<_>>()
    });
    (
        (
            origin,
            proptest::option::of(as_path(four, true)),
            proptest::option::of(ipv4.clone()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            any::<bool>(),
            proptest::option::of(aggregator(four)),
        ),
        (
            proptest::collection::vec(any::<u32>().prop_map(Community), 0..5),
            proptest::option::of(ipv4.clone()),
            proptest::collection::vec(ipv4, 0..4),
            proptest::collection::vec(any::<[u8; 8]>().prop_map(ExtendedCommunity), 0..4),
            as4,
            proptest::collection::vec(
                any::<(u32, u32, u32)>().prop_map(|(g, a, b)| LargeCommunity {
                    global_admin: g,
                    local1: a,
                    local2: b,
                }),
                0..4,
            ),
            unknown,
        ),
    )
        .prop_map(
            |(
                (origin, as_path, next_hop, med, lp, atomic, aggregator),
                (
                    communities,
                    originator_id,
                    cluster_list,
                    ext,
                    (as4_path, as4_aggregator),
                    large,
                    unknown,
                ),
            )| PathAttributes {
                origin,
                as_path,
                next_hop,
                multi_exit_disc: med,
                local_pref: lp,
                atomic_aggregate: atomic,
                aggregator,
                communities,
                originator_id,
                cluster_list,
                extended_communities: ext,
                as4_path,
                as4_aggregator,
                large_communities: large,
                unknown,
            },
        )
}

fn next_hop() -> impl Strategy<Value = NextHop> {
    prop_oneof![
        any::<u32>().prop_map(|a| NextHop::V4(Ipv4Addr::from(a))),
        (any::<u128>(), proptest::option::of(any::<u128>())).prop_map(|(g, l)| NextHop::V6 {
            global: Ipv6Addr::from(g),
            link_local: l.map(Ipv6Addr::from),
        }),
    ]
}

fn family() -> impl Strategy<Value = Family> {
    proptest::sample::select(FAMILIES.to_vec())
}

fn update(ctx: SessionContext) -> impl Strategy<Value = Update> {
    let v4 = Family::IPV4_UNICAST;
    let mp_reach = proptest::option::of((family(), next_hop()).prop_flat_map(move |(f, nh)| {
        nlri_set(f, ctx, 12).prop_map(move |nlri| MpReach { next_hop: nh, nlri })
    }));
    let mp_unreach = proptest::option::of(family().prop_flat_map(move |f| {
        nlri_set(f, ctx, 12).prop_map(|withdrawn| MpUnreach { withdrawn })
    }));
    (
        nlri_set(v4, ctx, 12),
        attributes(ctx.four_octet_as),
        nlri_set(v4, ctx, 12),
        mp_reach,
        mp_unreach,
    )
        .prop_map(|(withdrawn, mut attributes, nlri, mp_reach, mp_unreach)| {
            // Announcements need the mandatory attributes, or the decoder
            // (rightly) reports treat-as-withdraw.
            let announces =
                !nlri.is_empty() || mp_reach.as_ref().is_some_and(|r| !r.nlri.is_empty());
            if announces {
                attributes.origin.get_or_insert(Origin::Igp);
                attributes.as_path.get_or_insert_with(AsPath::default);
                if !nlri.is_empty() {
                    attributes
                        .next_hop
                        .get_or_insert(Ipv4Addr::new(192, 0, 2, 1));
                }
            }
            Update {
                withdrawn,
                attributes,
                nlri,
                mp_reach,
                mp_unreach,
                ..Update::default()
            }
        })
}

fn known_family_numbers() -> impl Strategy<Value = Family> {
    (any::<u16>(), any::<u8>()).prop_map(|(a, s)| Family::new(Afi(a), Safi(s)))
}

fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        known_family_numbers().prop_map(Capability::Multiprotocol),
        Just(Capability::RouteRefresh),
        Just(Capability::EnhancedRouteRefresh),
        Just(Capability::ExtendedMessage),
        (1u32..).prop_map(|a| Capability::FourOctetAs(Asn(a))),
        (
            any::<bool>(),
            any::<bool>(),
            0u16..4096,
            proptest::collection::vec((known_family_numbers(), any::<bool>()), 0..4)
        )
            .prop_map(
                |(r, n, t, fams)| Capability::GracefulRestart(GracefulRestart {
                    restart_state: r,
                    notification: n,
                    restart_time: t,
                    families: fams
                        .into_iter()
                        .map(|(family, f)| GracefulRestartFamily {
                            family,
                            forwarding_preserved: f
                        })
                        .collect(),
                })
            ),
        proptest::collection::vec(
            (
                known_family_numbers(),
                prop_oneof![
                    Just(AddPathMode::Receive),
                    Just(AddPathMode::Send),
                    Just(AddPathMode::Both)
                ]
            )
                .prop_map(|(family, mode)| AddPathFamily { family, mode }),
            0..4
        )
        .prop_map(Capability::AddPath),
        (
            any::<u8>().prop_filter("unknown code", |c| ![1, 2, 6, 64, 65, 69, 70].contains(c)),
            proptest::collection::vec(any::<u8>(), 0..24)
        )
            .prop_map(|(code, value)| Capability::Unknown { code, value }),
    ]
}

fn open() -> impl Strategy<Value = Open> {
    (
        1u16..,
        prop_oneof![Just(0u16), 3u16..],
        1u32..,
        proptest::collection::vec(capability(), 0..40),
    )
        .prop_map(|(my_as, hold, id, capabilities)| Open {
            version: 4,
            my_as,
            hold_time: HoldTime(hold),
            router_id: RouterId(Ipv4Addr::from(id)),
            capabilities,
        })
}

fn notification() -> impl Strategy<Value = Notification> {
    (
        any::<u8>(),
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(c, s, data)| Notification::new(ErrorCode::from(c), s, data))
}

fn route_refresh() -> impl Strategy<Value = RouteRefresh> {
    (known_family_numbers(), any::<u8>()).prop_map(|(family, s)| RouteRefresh {
        family,
        subtype: RouteRefreshSubtype::from(s),
    })
}

fn message(ctx: SessionContext) -> impl Strategy<Value = Message> {
    prop_oneof![
        open().prop_map(Message::Open),
        update(ctx).prop_map(Message::Update),
        notification().prop_map(Message::Notification),
        Just(Message::Keepalive),
        route_refresh().prop_map(Message::RouteRefresh),
    ]
}

fn ctx_and_message() -> impl Strategy<Value = (SessionContext, Message)> {
    context().prop_flat_map(|ctx| message(ctx).prop_map(move |m| (ctx, m)))
}

/// Decode every way the runtime would, and insist on no panic; when a
/// message comes out, it must encode again and decode without panic.
fn exercise(bytes: &[u8], ctx: &SessionContext) {
    let _ = frame(bytes, ctx);
    // Flattening stops at the first error, as the runtime does.
    for m in messages(bytes, ctx).flatten() {
        if let Ok(again) = m.encode(ctx) {
            let _ = decode_message(&again, ctx);
        }
    }
    if let Ok(m) = decode_message(bytes, ctx) {
        if let Message::Update(u) = &m {
            // Walk everything the RIB would walk.
            let _ = u.announced_entries().count() + u.withdrawn_entries().count();
            let mut a = u.attributes.clone();
            a.reconcile_as4();
        }
        if let Ok(again) = m.encode(ctx) {
            let _ = decode_message(&again, ctx);
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Truncate(usize),
    SetU16(usize, u16),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::SetByte(i, v)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u16>()).prop_map(|(i, v)| Mutation::SetU16(i, v)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len().max(1);
    match m {
        Mutation::FlipBit(i, b) => {
            if let Some(x) = bytes.get_mut(i % n) {
                *x ^= 1 << b;
            }
        }
        Mutation::SetByte(i, v) => {
            if let Some(x) = bytes.get_mut(i % n) {
                *x = *v;
            }
        }
        Mutation::Truncate(i) => bytes.truncate(i % n),
        Mutation::SetU16(i, v) => {
            let i = i % n;
            if let Some(s) = bytes.get_mut(i..i + 2) {
                s.copy_from_slice(&v.to_be_bytes());
            }
        }
        Mutation::Insert(i, v) => {
            let i = i % n;
            bytes.splice(i..i, v.iter().copied());
        }
    }
}

/// Make the header length agree with the buffer again, so the mutation
/// reaches the body decoder instead of stopping at the header check.
fn fix_length(bytes: &mut [u8]) {
    if let Ok(len) = u16::try_from(bytes.len()) {
        if let Some(s) = bytes.get_mut(16..18) {
            s.copy_from_slice(&len.to_be_bytes());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip((ctx, msg) in ctx_and_message()) {
        let bytes = msg.encode(&ctx).expect("generated messages fit");
        prop_assert!(bytes.len() <= ctx.max_message_len());
        let decoded = decode_message(&bytes, &ctx).expect("our own bytes decode");
        prop_assert_eq!(&decoded, &msg);
        // And the bytes are stable.
        prop_assert_eq!(decoded.encode(&ctx).expect("re-encodes"), bytes);
    }

    #[test]
    fn random_bytes_never_panic(ctx in context(), bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        exercise(&bytes, &ctx);
    }

    #[test]
    fn random_bodies_never_panic(
        ctx in context(),
        ty in 1u8..=5,
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = vec![0xff; 16];
        bytes.extend_from_slice(&u16::try_from(19 + body.len()).expect("short").to_be_bytes());
        bytes.push(ty);
        bytes.extend_from_slice(&body);
        exercise(&bytes, &ctx);
    }

    #[test]
    fn mutated_messages_never_panic(
        (ctx, msg) in ctx_and_message(),
        muts in proptest::collection::vec(mutation(), 1..4),
        fix in any::<bool>(),
    ) {
        let mut bytes = msg.encode(&ctx).expect("generated messages fit");
        for m in &muts {
            apply(&mut bytes, m);
        }
        if fix {
            fix_length(&mut bytes);
        }
        exercise(&bytes, &ctx);
    }

    #[test]
    fn random_update_bodies_with_valid_framing_never_panic(
        ctx in context(),
        withdrawn in proptest::collection::vec(any::<u8>(), 0..40),
        attrs in proptest::collection::vec(
            (any::<u8>(), 0u8..40, proptest::collection::vec(any::<u8>(), 0..40)),
            0..6,
        ),
        nlri in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        // Well-formed lengths, random content: reaches every attribute
        // decoder with plausible flags.
        let mut a = Vec::new();
        for (flags_sel, code, value) in &attrs {
            let flags = [0x40u8, 0x80, 0xc0, 0xe0, 0x50, 0x90][usize::from(*flags_sel) % 6];
            let code = if *code >= 33 { 32 } else { *code };
            a.push(flags);
            a.push(code);
            if flags & 0x10 != 0 {
                a.extend_from_slice(&u16::try_from(value.len()).expect("short").to_be_bytes());
            } else {
                a.push(u8::try_from(value.len()).expect("short"));
            }
            a.extend_from_slice(value);
        }
        let mut body = Vec::new();
        body.extend_from_slice(&u16::try_from(withdrawn.len()).expect("short").to_be_bytes());
        body.extend_from_slice(&withdrawn);
        body.extend_from_slice(&u16::try_from(a.len()).expect("short").to_be_bytes());
        body.extend_from_slice(&a);
        body.extend_from_slice(&nlri);
        let mut bytes = vec![0xff; 16];
        bytes.extend_from_slice(&u16::try_from(19 + body.len()).expect("short").to_be_bytes());
        bytes.push(2);
        bytes.extend_from_slice(&body);
        exercise(&bytes, &ctx);
    }
}

#[test]
fn community_and_prefix_types_are_small() {
    assert_eq!(std::mem::size_of::<Community>(), 4);
    assert!(std::mem::size_of::<Prefix>() <= 20);
}

/// A plain reference reader of an NLRI field (RFC 4271 §4.3, RFC 7911 §3),
/// written for clarity, to check the optimised decoder against.
fn reference_nlri(mut b: &[u8], ipv6: bool, add_path: bool) -> Option<Vec<NlriEntry>> {
    let max = if ipv6 { 128 } else { 32 };
    let mut out = Vec::new();
    while !b.is_empty() {
        let mut path_id = None;
        if add_path {
            let id = b.get(..4)?;
            path_id = Some(u32::from_be_bytes([id[0], id[1], id[2], id[3]]));
            b = &b[4..];
        }
        let len = *b.first()?;
        if len > max {
            return None;
        }
        let n = usize::from(len).div_ceil(8);
        let octets = b.get(1..1 + n)?;
        let mut full = [0u8; 16];
        full[..n].copy_from_slice(octets);
        let prefix = if ipv6 {
            Prefix::v6(Ipv6Addr::from(full), len).ok()?
        } else {
            Prefix::v4(Ipv4Addr::new(full[0], full[1], full[2], full[3]), len).ok()?
        };
        out.push(NlriEntry { path_id, prefix });
        b = &b[1 + n..];
    }
    Some(out)
}

/// Split a packed stream into message lengths.
fn frame_lengths(mut stream: &[u8], ctx: &SessionContext) -> Vec<usize> {
    let mut lens = Vec::new();
    while let Ok(Frame::Complete { length, .. }) = frame(stream, ctx) {
        lens.push(length);
        stream = &stream[length..];
    }
    assert!(stream.is_empty(), "packer left a partial message");
    lens
}

fn routes(family: Family, ctx: SessionContext) -> impl Strategy<Value = Vec<NlriEntry>> {
    let with_ids = ctx.sends_path_ids(family);
    proptest::collection::vec((prefix(family.afi), any::<u32>()), 0..3000).prop_map(move |v| {
        v.into_iter()
            .map(|(prefix, id)| NlriEntry {
                path_id: with_ids.then_some(id),
                prefix,
            })
            .collect()
    })
}

fn ctx_family_routes() -> impl Strategy<Value = (SessionContext, Family, Vec<NlriEntry>)> {
    (context(), family()).prop_flat_map(|(ctx, f)| routes(f, ctx).prop_map(move |r| (ctx, f, r)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn nlri_decoder_matches_reference(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ipv6 in any::<bool>(),
        add_path in any::<bool>(),
        small_lengths in any::<bool>(),
    ) {
        // Bias length octets into range half of the time so valid fields
        // are common, not just errors.
        let mut bytes = bytes;
        if small_lengths {
            for b in bytes.iter_mut() {
                *b %= if ipv6 { 129 } else { 33 };
            }
        }
        let family = if ipv6 { Family::IPV6_UNICAST } else { Family::IPV4_UNICAST };
        let ours = NlriSet::decode(family, add_path, &bytes).ok().map(|s| s.iter().collect::<Vec<_>>());
        prop_assert_eq!(ours, reference_nlri(&bytes, ipv6, add_path));
    }

    #[test]
    fn packer_round_trips_densely((ctx, family, routes) in ctx_family_routes(), attrs in attributes(true)) {
        let mut attrs = attrs;
        attrs.origin.get_or_insert(Origin::Igp);
        attrs.as_path.get_or_insert_with(AsPath::default);
        // Keep the attributes small enough to leave room for NLRI.
        attrs.unknown.clear();
        let ctx = SessionContext { four_octet_as: true, ..ctx };
        let next_hop = if family.is_ipv6() {
            NextHop::V6 { global: Ipv6Addr::LOCALHOST, link_local: None }
        } else {
            NextHop::V4(Ipv4Addr::new(192, 0, 2, 1))
        };
        let mut out = Vec::new();
        let n = pack_announcements(&attrs, family, next_hop, routes.iter().copied(), &ctx, &mut out)
            .expect("packs");
        let lens = frame_lengths(&out, &ctx);
        prop_assert_eq!(lens.len(), n);
        let mut got = Vec::new();
        for m in messages(&out, &ctx) {
            let Ok(Message::Update(u)) = m else { panic!("{m:?}") };
            prop_assert_eq!(u.treat_as_withdraw, None);
            prop_assert!(u.discarded.is_empty());
            got.extend(u.announced_entries().map(|(f, e)| { assert_eq!(f, family); e }));
        }
        prop_assert_eq!(&got, &routes);
        // Dense: a message other than the last could not take the next route.
        let add_path = ctx.sends_path_ids(family);
        let mut next = 0usize;
        for (i, len) in lens.iter().enumerate() {
            prop_assert!(*len <= ctx.max_message_len());
            let count = messages(&out, &ctx).nth(i).and_then(|m| m.ok()).map(|m| match m {
                Message::Update(u) => u.announced_entries().len(),
                _ => 0,
            }).unwrap_or(0);
            next += count;
            if let Some(e) = routes.get(next) {
                prop_assert!(len + e.wire_len(add_path) > ctx.max_message_len(), "message {} not full", i);
            }
        }

        out.clear();
        let n = pack_withdrawals(family, routes.iter().copied(), &ctx, &mut out).expect("packs");
        prop_assert_eq!(frame_lengths(&out, &ctx).len(), n);
        let got: Vec<NlriEntry> = messages(&out, &ctx)
            .flat_map(|m| match m {
                Ok(Message::Update(u)) => u.withdrawn_entries().map(|(_, e)| e).collect::<Vec<_>>(),
                other => panic!("{other:?}"),
            })
            .collect();
        prop_assert_eq!(&got, &routes);
    }
}
