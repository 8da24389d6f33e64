//! Unit tests for UPDATE, path attributes, NLRI, RFC 7606 outcomes, the
//! RFC 6793 AS4 merge, End-of-RIB and the UPDATE packer.

use std::net::{Ipv4Addr, Ipv6Addr};

use tortie_bgp::wire::{
    decode_message, frame, merge_as4_path, messages, pack_announcements, pack_withdrawals,
    Aggregator, AsPath, AsSegment, Asn, AttributeIssue, Community, DecodeErrorKind,
    ExtendedCommunity, Family, FamilySet, Frame, LargeCommunity, Message, MpReach, MpUnreach,
    NextHop, NlriEntry, NlriSet, Origin, PathAttributes, Prefix, Rfc7606Action, SegmentType,
    SessionContext, UnknownAttribute, Update, UpdateSubcode, AS_TRANS,
};

fn msg(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&u16::try_from(19 + body.len()).expect("fits").to_be_bytes());
    v.push(2);
    v.extend_from_slice(body);
    v
}

fn update_bytes(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&u16::try_from(withdrawn.len()).expect("fits").to_be_bytes());
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&u16::try_from(attrs.len()).expect("fits").to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    msg(&b)
}

fn decode(bytes: &[u8], ctx: &SessionContext) -> Update {
    match decode_message(bytes, ctx) {
        Ok(Message::Update(u)) => u,
        other => panic!("expected an UPDATE, got {other:?}"),
    }
}

fn four() -> SessionContext {
    SessionContext::four_octet()
}

fn two() -> SessionContext {
    SessionContext::default()
}

/// ORIGIN IGP, AS_PATH (4-octet) 65001 65002, NEXT_HOP 192.0.2.1.
const MANDATORY_4: &[u8] = &[
    0x40, 1, 1, 0, // ORIGIN IGP
    0x40, 2, 10, 2, 2, 0, 0, 0xfd, 0xe9, 0, 0, 0xfd, 0xea, // AS_PATH SEQ 65001 65002
    0x40, 3, 4, 192, 0, 2, 1, // NEXT_HOP
];

fn p(s: &str) -> Prefix {
    s.parse().expect("prefix")
}

fn entries(set: &NlriSet) -> Vec<Prefix> {
    set.iter().map(|e| e.prefix).collect()
}

#[test]
fn plain_ipv4_update_round_trips_bytes() {
    let mut attrs = MANDATORY_4.to_vec();
    attrs.extend_from_slice(&[0x80, 4, 4, 0, 0, 0, 100]); // MED 100
    attrs.extend_from_slice(&[0x40, 5, 4, 0, 0, 0, 200]); // LOCAL_PREF 200
    attrs.extend_from_slice(&[0xc0, 8, 8, 0xfd, 0xe9, 0, 1, 0xff, 0xff, 0xff, 0x01]);
    let nlri = [8, 10, 24, 192, 0, 2, 32, 198, 51, 100, 7];
    let withdrawn = [16, 172, 16];
    let bytes = update_bytes(&withdrawn, &attrs, &nlri);
    let u = decode(&bytes, &four());
    assert_eq!(u.treat_as_withdraw, None);
    assert!(u.discarded.is_empty());
    assert_eq!(entries(&u.withdrawn), vec![p("172.16.0.0/16")]);
    assert_eq!(
        entries(&u.nlri),
        vec![p("10.0.0.0/8"), p("192.0.2.0/24"), p("198.51.100.7/32")]
    );
    let a = &u.attributes;
    assert_eq!(a.origin, Some(Origin::Igp));
    assert_eq!(
        a.as_path,
        Some(AsPath::from_sequence([Asn(65001), Asn(65002)]))
    );
    assert_eq!(a.next_hop, Some(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(a.multi_exit_disc, Some(100));
    assert_eq!(a.local_pref, Some(200));
    assert_eq!(
        a.communities,
        vec![Community::new(65001, 1), Community::NO_EXPORT]
    );
    assert_eq!(Community::NO_EXPORT.to_string(), "NO_EXPORT");
    assert_eq!(Message::Update(u).encode(&four()), Ok(bytes));
}

#[test]
fn two_octet_as_path_and_aggregator() {
    let attrs = [
        0x40, 1, 1, 2, // ORIGIN INCOMPLETE
        0x40, 2, 6, 2, 2, 0xfd, 0xe9, 0x5b, 0xa0, // SEQ 65001 23456
        0x40, 3, 4, 192, 0, 2, 1, // NEXT_HOP
        0xc0, 7, 6, 0xfd, 0xe9, 192, 0, 2, 9, // AGGREGATOR 65001 192.0.2.9
    ];
    let bytes = update_bytes(&[], &attrs, &[24, 10, 1, 2]);
    let u = decode(&bytes, &two());
    assert_eq!(
        u.attributes.as_path,
        Some(AsPath::from_sequence([Asn(65001), AS_TRANS]))
    );
    assert_eq!(
        u.attributes.aggregator,
        Some(Aggregator {
            asn: Asn(65001),
            address: Ipv4Addr::new(192, 0, 2, 9)
        })
    );
    // The same bytes on a 4-octet session: AS_PATH does not parse
    // (treat-as-withdraw) and AGGREGATOR has the wrong length (discard).
    let u = decode(&bytes, &four());
    assert_eq!(u.treat_as_withdraw.map(|f| f.type_code), Some(2));
    assert_eq!(u.discarded.len(), 1);
    assert_eq!(u.discarded[0].type_code, 7);
    assert_eq!(u.discarded[0].action, Rfc7606Action::AttributeDiscard);
}

#[test]
fn zero_length_as_path_segment_is_treat_as_withdraw() {
    let attrs = [
        0x40, 1, 1, 0, //
        0x40, 2, 2, 2, 0, // SEQ of length 0
        0x40, 3, 4, 192, 0, 2, 1,
    ];
    let u = decode(&update_bytes(&[], &attrs, &[24, 10, 1, 2]), &four());
    let f = u.treat_as_withdraw.expect("treat-as-withdraw");
    assert_eq!((f.type_code, f.issue), (2, AttributeIssue::Value));
    assert_eq!(u.attributes.as_path, None);
    let w: Vec<_> = u.withdrawn_entries().map(|(_, e)| e.prefix).collect();
    assert_eq!(w, vec![p("10.1.2.0/24")]);
    assert_eq!(u.announced_entries().count(), 0);
    // Unknown segment type, and a segment running past the attribute.
    for bad in [
        [0x40, 2, 6, 9, 1, 0, 0, 0xfd, 0xe9],
        [0x40, 2, 6, 2, 2, 0, 0, 0xfd, 0xe9],
    ] {
        let mut attrs = vec![0x40, 1, 1, 0];
        attrs.extend_from_slice(&bad);
        attrs.extend_from_slice(&[0x40, 3, 4, 192, 0, 2, 1]);
        let u = decode(&update_bytes(&[], &attrs, &[24, 10, 1, 2]), &four());
        assert_eq!(u.treat_as_withdraw.map(|f| f.type_code), Some(2));
    }
}

#[test]
fn prefix_too_long_is_invalid_network_field() {
    let err = decode_message(
        &update_bytes(&[], MANDATORY_4, &[33, 10, 0, 0, 0, 0]),
        &four(),
    )
    .expect_err("len 33");
    assert!(matches!(
        err.kind,
        DecodeErrorKind::InvalidNetworkField { .. }
    ));
    assert_eq!(
        err.notification.subcode,
        UpdateSubcode::InvalidNetworkField as u8
    );
    // In withdrawn routes too.
    assert!(decode_message(&update_bytes(&[40, 1, 2, 3, 4, 5], &[], &[]), &four()).is_err());
    // IPv6 /129 in MP_REACH.
    let mut mp = vec![0x80, 14, 0, 0, 2, 1, 16];
    mp.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets());
    mp.push(0);
    mp.extend_from_slice(&[129]);
    mp.extend_from_slice(&[0x20; 17]);
    mp[2] = u8::try_from(mp.len() - 3).expect("fits");
    let mut attrs = vec![0x40, 1, 1, 0, 0x40, 2, 0];
    attrs.extend_from_slice(&mp);
    assert!(decode_message(&update_bytes(&[], &attrs, &[]), &four()).is_err());
}

#[test]
fn nlri_trailing_bytes_are_an_error() {
    // /24 needs three octets; only two follow.
    let err = decode_message(&update_bytes(&[], MANDATORY_4, &[24, 10, 1]), &four())
        .expect_err("runs past");
    assert!(matches!(
        err.kind,
        DecodeErrorKind::InvalidNetworkField { .. }
    ));
    // A message buffer longer than its header says.
    let mut bytes = update_bytes(&[], &[], &[]);
    bytes.push(0);
    assert!(decode_message(&bytes, &four()).is_err());
}

#[test]
fn host_bits_are_ignored_and_cleared() {
    let u = decode(&update_bytes(&[], MANDATORY_4, &[20, 10, 1, 0xff]), &four());
    assert_eq!(entries(&u.nlri), vec![p("10.1.240.0/20")]);
}

#[test]
fn flags_contradicting_the_type() {
    // ORIGIN sent as optional: treat-as-withdraw.
    let attrs = [
        0xc0, 1, 1, 0, //
        0x40, 2, 0, //
        0x40, 3, 4, 192, 0, 2, 1,
    ];
    let u = decode(&update_bytes(&[], &attrs, &[24, 10, 1, 2]), &four());
    let f = u.treat_as_withdraw.expect("taw");
    assert_eq!(f.type_code, 1);
    assert_eq!(f.issue, AttributeIssue::Flags { flags: 0xc0 });
    // AGGREGATOR sent as non-transitive: discarded.
    let mut attrs = MANDATORY_4.to_vec();
    attrs.extend_from_slice(&[0x80, 7, 8, 0, 0, 0xfd, 0xe9, 192, 0, 2, 9]);
    let u = decode(&update_bytes(&[], &attrs, &[24, 10, 1, 2]), &four());
    assert_eq!(u.treat_as_withdraw, None);
    assert_eq!(u.attributes.aggregator, None);
    assert_eq!(u.discarded[0].type_code, 7);
    // MP_UNREACH sent as transitive: session reset.
    let attrs = [0xc0, 15, 3, 0, 2, 1];
    let err = decode_message(&update_bytes(&[], &attrs, &[]), &four()).expect_err("reset");
    assert_eq!(
        err.notification.subcode,
        UpdateSubcode::AttributeFlagsError as u8
    );
    // The Partial bit on a well-known attribute is tolerated.
    let mut attrs = MANDATORY_4.to_vec();
    attrs[0] = 0x60;
    let u = decode(&update_bytes(&[], &attrs, &[24, 10, 1, 2]), &four());
    assert_eq!(u.treat_as_withdraw, None);
}

#[test]
fn duplicate_attributes() {
    let mut attrs = MANDATORY_4.to_vec();
    attrs.extend_from_slice(&[0x40, 1, 1, 2]); // second ORIGIN
    let u = decode(&update_bytes(&[], &attrs, &[24, 10, 1, 2]), &four());
    assert_eq!(u.attributes.origin, Some(Origin::Igp));
    assert_eq!(u.discarded.len(), 1);
    assert_eq!(u.discarded[0].issue, AttributeIssue::Duplicate);
    assert_eq!(u.treat_as_withdraw, None);

    let mp = [0x80, 15, 3, 0, 2, 1];
    let mut attrs = mp.to_vec();
    attrs.extend_from_slice(&mp);
    let err = decode_message(&update_bytes(&[], &attrs, &[]), &four()).expect_err("dup mp");
    assert!(matches!(
        err.kind,
        DecodeErrorKind::MalformedAttributeList { .. }
    ));
}

#[test]
fn mp_reach_unknown_afi_resets() {
    let attrs = [
        0x40, 1, 1, 0, 0x40, 2, 0, 0x80, 14, 9, 0, 9, 1, 4, 192, 0, 2, 1, 0,
    ];
    let err = decode_message(&update_bytes(&[], &attrs, &[]), &four()).expect_err("afi 9");
    assert_eq!(
        err.kind,
        DecodeErrorKind::UnsupportedFamily { afi: 9, safi: 1 }
    );
    assert_eq!(
        err.notification.subcode,
        UpdateSubcode::OptionalAttributeError as u8
    );
    // Next-hop length 5 is malformed too.
    let attrs = [0x80, 14, 10, 0, 1, 1, 5, 192, 0, 2, 1, 1, 0];
    assert!(decode_message(&update_bytes(&[], &attrs, &[]), &four()).is_err());
}

#[test]
fn mp_reach_ipv6_global_and_link_local() {
    let global = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let ll = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    let mut mp = vec![0x90, 14, 0, 0, 0, 2, 1, 32];
    mp.extend_from_slice(&global.octets());
    mp.extend_from_slice(&ll.octets());
    mp.push(0);
    mp.extend_from_slice(&[64, 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0]);
    let len = u16::try_from(mp.len() - 4).expect("fits");
    mp[2..4].copy_from_slice(&len.to_be_bytes());
    let mut attrs = vec![0x40, 1, 1, 0, 0x40, 2, 0];
    attrs.extend_from_slice(&mp);
    let bytes = update_bytes(&[], &attrs, &[]);
    let u = decode(&bytes, &four());
    assert_eq!(u.treat_as_withdraw, None);
    let r = u.mp_reach.clone().expect("mp_reach");
    assert_eq!(
        r.next_hop,
        NextHop::V6 {
            global,
            link_local: Some(ll)
        }
    );
    assert_eq!(r.family(), Family::IPV6_UNICAST);
    assert_eq!(entries(&r.nlri), vec![p("2001:db8:1::/64")]);
    // Re-encoded with a 1-octet length this time; decodes to the same.
    let again = Message::Update(u.clone()).encode(&four()).expect("encodes");
    assert_eq!(decode(&again, &four()), u);
    // MP_REACH with NLRI but no AS_PATH: treat-as-withdraw.
    let mut attrs = vec![0x40, 1, 1, 0];
    attrs.extend_from_slice(&mp);
    let u = decode(&update_bytes(&[], &attrs, &[]), &four());
    let f = u.treat_as_withdraw.expect("missing AS_PATH");
    assert_eq!((f.type_code, f.issue), (2, AttributeIssue::Missing));
    assert_eq!(u.withdrawn_entries().count(), 1);
}

#[test]
fn missing_mandatory_attributes() {
    // No NEXT_HOP with IPv4 NLRI.
    let attrs = [0x40, 1, 1, 0, 0x40, 2, 0];
    let u = decode(&update_bytes(&[], &attrs, &[24, 10, 1, 2]), &four());
    let f = u.treat_as_withdraw.expect("missing NEXT_HOP");
    assert_eq!((f.type_code, f.issue), (3, AttributeIssue::Missing));
    // Withdraw-only: nothing is mandatory.
    let u = decode(&update_bytes(&[24, 10, 1, 2], &[], &[]), &four());
    assert_eq!(u.treat_as_withdraw, None);
}

#[test]
fn attribute_overrunning_the_field_resets() {
    let mut attrs = MANDATORY_4.to_vec();
    attrs.extend_from_slice(&[0x80, 4, 9, 0, 0]); // MED claims 9 octets
    let err = decode_message(&update_bytes(&[], &attrs, &[]), &four()).expect_err("overrun");
    assert!(matches!(
        err.kind,
        DecodeErrorKind::MalformedAttributeList { .. }
    ));
    assert_eq!(
        err.notification.subcode,
        UpdateSubcode::MalformedAttributeList as u8
    );
    // A truncated attribute header.
    let err = decode_message(&update_bytes(&[], &[0x40], &[]), &four()).expect_err("header");
    assert!(matches!(
        err.kind,
        DecodeErrorKind::MalformedAttributeList { .. }
    ));
    // Withdrawn length larger than the message.
    let mut body = vec![0, 50, 24, 10, 1, 2, 0, 0];
    body.truncate(8);
    assert!(decode_message(&msg(&body), &four()).is_err());
    // Total attribute length larger than what is left.
    assert!(decode_message(&msg(&[0, 0, 0, 9, 0x40, 1, 1, 0]), &four()).is_err());
}

#[test]
fn per_attribute_length_errors() {
    // (attribute, expected action)
    let cases: Vec<(Vec<u8>, u8, Rfc7606Action)> = vec![
        (
            vec![0x40, 3, 5, 192, 0, 2, 1, 1],
            3,
            Rfc7606Action::TreatAsWithdraw,
        ),
        (vec![0x80, 4, 3, 0, 0, 1], 4, Rfc7606Action::TreatAsWithdraw),
        (vec![0x40, 5, 2, 0, 1], 5, Rfc7606Action::TreatAsWithdraw),
        (vec![0x40, 6, 1, 0], 6, Rfc7606Action::AttributeDiscard),
        (vec![0xc0, 8, 3, 0, 0, 1], 8, Rfc7606Action::TreatAsWithdraw),
        (vec![0xc0, 8, 0], 8, Rfc7606Action::TreatAsWithdraw),
        (vec![0x80, 9, 3, 1, 2, 3], 9, Rfc7606Action::TreatAsWithdraw),
        (vec![0x80, 10, 0], 10, Rfc7606Action::TreatAsWithdraw),
        (
            vec![0xc0, 16, 7, 0, 2, 0, 0, 0, 0, 1],
            16,
            Rfc7606Action::TreatAsWithdraw,
        ),
        (
            vec![0xc0, 32, 11, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0],
            32,
            Rfc7606Action::TreatAsWithdraw,
        ),
    ];
    for (attr, code, action) in cases {
        // Replace NEXT_HOP when the case is NEXT_HOP itself.
        let mut attrs = MANDATORY_4[..17].to_vec();
        if code != 3 {
            attrs.extend_from_slice(&MANDATORY_4[17..]);
        }
        attrs.extend_from_slice(&attr);
        let u = decode(&update_bytes(&[], &attrs, &[24, 10, 1, 2]), &four());
        let got = match action {
            Rfc7606Action::TreatAsWithdraw => u.treat_as_withdraw,
            _ => u.discarded.first().copied(),
        };
        let f = got.unwrap_or_else(|| panic!("attribute {code}: no fault in {u:?}"));
        assert_eq!((f.type_code, f.action), (code, action), "attribute {code}");
    }
    // Invalid ORIGIN value.
    let mut attrs = MANDATORY_4.to_vec();
    attrs[3] = 3;
    let u = decode(&update_bytes(&[], &attrs, &[24, 10, 1, 2]), &four());
    assert_eq!(
        u.treat_as_withdraw.map(|f| (f.type_code, f.issue)),
        Some((1, AttributeIssue::Value))
    );
}

#[test]
fn extended_length_attributes() {
    // COMMUNITIES with the Extended Length bit and a small length.
    let mut attrs = MANDATORY_4.to_vec();
    attrs.extend_from_slice(&[0xd0, 8, 0, 4, 0xff, 0xff, 0xff, 0x02]);
    let u = decode(&update_bytes(&[], &attrs, &[24, 10, 1, 2]), &four());
    assert_eq!(u.attributes.communities, vec![Community::NO_ADVERTISE]);
    // 100 communities need the 2-octet length on the way out.
    let mut u = u;
    u.attributes.communities = (0..100).map(|i| Community::new(65001, i)).collect();
    let bytes = Message::Update(u.clone()).encode(&four()).expect("encodes");
    assert!(
        bytes.windows(4).any(|w| w == [0xd0, 8, 0x01, 0x90]),
        "COMMUNITIES with 400-octet length"
    );
    assert_eq!(decode(&bytes, &four()), u);
}

#[test]
fn unknown_attributes() {
    let mut attrs = MANDATORY_4.to_vec();
    attrs.extend_from_slice(&[0xc0, 99, 2, 7, 7]); // optional transitive
    attrs.extend_from_slice(&[0x80, 98, 1, 1]); // optional non-transitive
    let bytes = update_bytes(&[], &attrs, &[24, 10, 1, 2]);
    let u = decode(&bytes, &four());
    let kept = UnknownAttribute {
        flags: 0xc0,
        type_code: 99,
        value: vec![7, 7],
    };
    assert_eq!(u.attributes.unknown, vec![kept.clone()]);
    assert_eq!(kept.propagated().flags, 0xe0);
    assert_eq!(u.discarded.len(), 1);
    assert_eq!(
        u.discarded[0].issue,
        AttributeIssue::UnrecognizedNonTransitive
    );
    // Re-encoded at its place, unchanged.
    let again = Message::Update(u.clone()).encode(&four()).expect("encodes");
    assert!(again.windows(5).any(|w| w == [0xc0, 99, 2, 7, 7]));
    // Unknown well-known: reset with the attribute as data.
    let mut attrs = MANDATORY_4.to_vec();
    attrs.extend_from_slice(&[0x40, 97, 1, 5]);
    let err = decode_message(&update_bytes(&[], &attrs, &[]), &four()).expect_err("wk");
    assert_eq!(
        err.kind,
        DecodeErrorKind::UnrecognizedWellKnownAttribute { type_code: 97 }
    );
    assert_eq!(err.notification.data, vec![0x40, 97, 1, 5]);
}

fn seq(asns: &[u32]) -> AsSegment {
    AsSegment {
        kind: SegmentType::Sequence,
        asns: asns.iter().map(|&a| Asn(a)).collect(),
    }
}

fn seg(kind: SegmentType, asns: &[u32]) -> AsSegment {
    AsSegment {
        kind,
        asns: asns.iter().map(|&a| Asn(a)).collect(),
    }
}

fn path(segs: Vec<AsSegment>) -> AsPath {
    AsPath { segments: segs }
}

#[test]
fn as4_path_merge() {
    const T: u32 = 23456;
    // A 2-octet speaker prepended 65001 in front of a 4-octet path.
    let as_path = path(vec![seq(&[65001, T, T, 65002])]);
    let as4 = path(vec![seq(&[4_200_000_000, 4_200_000_001, 65002])]);
    assert_eq!(
        merge_as4_path(&as_path, &as4),
        path(vec![seq(&[65001, 4_200_000_000, 4_200_000_001, 65002])])
    );
    // AS4_PATH longer than AS_PATH: ignored.
    let short = path(vec![seq(&[65001])]);
    assert_eq!(merge_as4_path(&short, &as4), short);
    // Equal lengths: AS4_PATH wins entirely.
    let as_path = path(vec![seq(&[T, T, 65002])]);
    assert_eq!(merge_as4_path(&as_path, &as4), as4);
    // An AS_SET counts one.
    let as_path = path(vec![
        seq(&[65010]),
        seg(SegmentType::Set, &[1, 2, 3]),
        seq(&[T]),
    ]);
    let as4 = path(vec![seq(&[4_200_000_000])]);
    assert_eq!(
        merge_as4_path(&as_path, &as4),
        path(vec![
            seq(&[65010]),
            seg(SegmentType::Set, &[1, 2, 3]),
            seq(&[4_200_000_000])
        ])
    );
    // A leading confederation segment is kept.
    let as_path = path(vec![
        seg(SegmentType::ConfedSequence, &[64512]),
        seq(&[65001, T]),
    ]);
    let as4 = path(vec![seq(&[4_200_000_000])]);
    assert_eq!(
        merge_as4_path(&as_path, &as4),
        path(vec![
            seg(SegmentType::ConfedSequence, &[64512]),
            seq(&[65001, 4_200_000_000])
        ])
    );
}

#[test]
fn reconcile_as4_aggregator_rules() {
    let mut a = PathAttributes {
        as_path: Some(path(vec![seq(&[65001, 23456])])),
        aggregator: Some(Aggregator {
            asn: AS_TRANS,
            address: Ipv4Addr::new(192, 0, 2, 9),
        }),
        as4_path: Some(path(vec![seq(&[4_200_000_000])])),
        as4_aggregator: Some(Aggregator {
            asn: Asn(4_200_000_000),
            address: Ipv4Addr::new(192, 0, 2, 9),
        }),
        ..PathAttributes::default()
    };
    let mut b = a.clone();
    a.reconcile_as4();
    assert_eq!(a.as_path, Some(path(vec![seq(&[65001, 4_200_000_000])])));
    assert_eq!(a.aggregator.map(|g| g.asn), Some(Asn(4_200_000_000)));
    assert_eq!((a.as4_path, a.as4_aggregator), (None, None));
    // AGGREGATOR with a real 2-octet AS: the AS4 attributes are ignored.
    b.aggregator = Some(Aggregator {
        asn: Asn(65005),
        address: Ipv4Addr::new(192, 0, 2, 9),
    });
    b.reconcile_as4();
    assert_eq!(b.as_path, Some(path(vec![seq(&[65001, 23456])])));
    assert_eq!(b.aggregator.map(|g| g.asn), Some(Asn(65005)));
}

#[test]
fn two_octet_session_sends_as_trans_and_as4_path() {
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(path(vec![
            seg(SegmentType::ConfedSequence, &[64512]),
            seq(&[65001, 4_200_000_000]),
        ])),
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
        aggregator: Some(Aggregator {
            asn: Asn(4_200_000_000),
            address: Ipv4Addr::new(192, 0, 2, 9),
        }),
        ..PathAttributes::default()
    };
    let u = Update {
        attributes: attrs.clone(),
        nlri: NlriSet::from_prefixes(Family::IPV4_UNICAST, [p("10.0.0.0/8")]).expect("v4"),
        ..Update::default()
    };
    let bytes = Message::Update(u).encode(&two()).expect("encodes");
    let got = decode(&bytes, &two());
    assert_eq!(
        got.attributes.as_path,
        Some(path(vec![
            seg(SegmentType::ConfedSequence, &[64512]),
            seq(&[65001, 23456])
        ]))
    );
    // AS4_PATH carries no confederation segments (RFC 6793 §3).
    assert_eq!(
        got.attributes.as4_path,
        Some(path(vec![seq(&[65001, 4_200_000_000])]))
    );
    let mut merged = got.attributes.clone();
    merged.reconcile_as4();
    assert_eq!(merged.as_path, attrs.as_path);
    assert_eq!(merged.aggregator, attrs.aggregator);
    // On a 4-octet session received AS4_* are discarded.
    let mut attrs4 = MANDATORY_4.to_vec();
    attrs4.extend_from_slice(&[0xc0, 17, 6, 2, 1, 0, 0, 0, 1]);
    let u = decode(&update_bytes(&[], &attrs4, &[24, 10, 1, 2]), &four());
    assert_eq!(u.attributes.as4_path, None);
    assert_eq!(u.discarded[0].issue, AttributeIssue::UnexpectedAs4);
    // AS4_PATH with a confederation segment on a 2-octet session: discard.
    let mut attrs2 = vec![
        0x40, 1, 1, 0, 0x40, 2, 4, 2, 1, 0xfd, 0xe9, 0x40, 3, 4, 192, 0, 2, 1,
    ];
    attrs2.extend_from_slice(&[0xc0, 17, 6, 3, 1, 0, 0, 0, 1]);
    let u = decode(&update_bytes(&[], &attrs2, &[24, 10, 1, 2]), &two());
    assert_eq!(u.attributes.as4_path, None);
    assert_eq!(u.discarded[0].type_code, 17);
    assert_eq!(u.treat_as_withdraw, None);
}

#[test]
fn end_of_rib_markers() {
    let v4 = update_bytes(&[], &[], &[]);
    let u = decode(&v4, &four());
    assert_eq!(u.end_of_rib_family(), Some(Family::IPV4_UNICAST));
    assert_eq!(
        Message::Update(Update::end_of_rib(Family::IPV4_UNICAST)).encode(&four()),
        Ok(v4)
    );
    let v6 = update_bytes(&[], &[0x80, 15, 3, 0, 2, 1], &[]);
    let u = decode(&v6, &four());
    assert_eq!(u.end_of_rib_family(), Some(Family::IPV6_UNICAST));
    assert_eq!(
        Message::Update(Update::end_of_rib(Family::IPV6_UNICAST)).encode(&four()),
        Ok(v6)
    );
    let not = decode(&update_bytes(&[24, 10, 1, 2], &[], &[]), &four());
    assert_eq!(not.end_of_rib_family(), None);
}

#[test]
fn add_path_identifiers() {
    let ctx = SessionContext {
        four_octet_as: true,
        add_path_receive: FamilySet::EMPTY
            .with(Family::IPV4_UNICAST)
            .with(Family::IPV6_UNICAST),
        add_path_send: FamilySet::EMPTY
            .with(Family::IPV4_UNICAST)
            .with(Family::IPV6_UNICAST),
        ..SessionContext::default()
    };
    let nlri = [0, 0, 0, 7, 24, 10, 1, 2, 0, 0, 0, 9, 24, 10, 1, 2];
    let bytes = update_bytes(&[], MANDATORY_4, &nlri);
    let u = decode(&bytes, &ctx);
    let ids: Vec<_> = u.nlri.iter().map(|e| e.path_id).collect();
    assert_eq!(ids, vec![Some(7), Some(9)]);
    assert_eq!(Message::Update(u.clone()).encode(&ctx), Ok(bytes.clone()));
    // Without ADD-PATH the same bytes read as different prefixes: the
    // context decides the layout, nothing on the wire does.
    let misread = decode_message(&bytes, &four());
    assert!(!matches!(misread, Ok(Message::Update(ref m)) if m.nlri.len() == 2));
    // Encoding for a peer without ADD-PATH drops the ids.
    let plain = Message::Update(u).encode(&four()).expect("encodes");
    let u = decode(&plain, &four());
    assert_eq!(u.nlri.len(), 2);
    assert!(u.nlri.iter().all(|e| e.path_id.is_none()));
    // MP_UNREACH with path ids.
    let w = Update {
        mp_unreach: Some(MpUnreach {
            withdrawn: NlriSet::from_entries(
                Family::IPV6_UNICAST,
                true,
                [NlriEntry {
                    path_id: Some(3),
                    prefix: p("2001:db8::/32"),
                }],
            )
            .expect("v6"),
        }),
        ..Update::default()
    };
    let bytes = Message::Update(w.clone()).encode(&ctx).expect("encodes");
    assert_eq!(decode(&bytes, &ctx), w);
}

#[test]
fn communities_and_extended_accessors() {
    let rt = ExtendedCommunity::route_target(65001, 42);
    assert_eq!((rt.type_high(), rt.subtype()), (0, 2));
    assert!(rt.is_transitive());
    let nt = ExtendedCommunity([0x40, 0, 0, 0, 0, 0, 0, 0]);
    assert!(!nt.is_transitive());
    let c = Community::new(65001, 100);
    assert_eq!((c.asn(), c.value()), (65001, 100));
    assert_eq!(c.to_string(), "65001:100");
    assert_eq!(Community::BLACKHOLE.name(), Some("BLACKHOLE"));
    let l = LargeCommunity {
        global_admin: 4_200_000_000,
        local1: 1,
        local2: 2,
    };
    assert_eq!(l.to_string(), "4200000000:1:2");
}

fn split(stream: &[u8], ctx: &SessionContext) -> Vec<Update> {
    let mut it = messages(stream, ctx);
    let out: Vec<Update> = it
        .by_ref()
        .map(|m| match m {
            Ok(Message::Update(u)) => u,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(it.remaining().is_empty());
    out
}

fn v4_routes(n: u32, len: u8) -> Vec<NlriEntry> {
    (0..n)
        .map(|i| {
            NlriEntry::new(Prefix::v4(Ipv4Addr::from((10 << 24) + (i << 8)), len).expect("v4"))
        })
        .collect()
}

fn v6_routes(n: u32) -> Vec<NlriEntry> {
    (0..n)
        .map(|i| {
            let a = (0x2001_0db8_u128 << 96) | (u128::from(i) << 64);
            NlriEntry::new(Prefix::v6(Ipv6Addr::from(a), 64).expect("v6"))
        })
        .collect()
}

/// Every message but the last is full: one more prefix would not fit.
fn assert_dense(stream: &[u8], ctx: &SessionContext, entry_len: usize) {
    let mut rest = stream;
    let mut lens = Vec::new();
    while let Ok(Frame::Complete { length, .. }) = frame(rest, ctx) {
        lens.push(length);
        rest = &rest[length..];
    }
    let max = ctx.max_message_len();
    for (i, l) in lens.iter().enumerate() {
        assert!(*l <= max);
        if i + 1 < lens.len() {
            assert!(l + entry_len > max, "message {i} of {l} octets is not full");
        }
    }
}

#[test]
fn packer_ipv4_announcements_and_withdrawals() {
    let ctx = four();
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence([Asn(65001)])),
        communities: vec![Community::NO_EXPORT],
        ..PathAttributes::default()
    };
    let routes = v4_routes(10_000, 24);
    let mut out = Vec::new();
    let n = pack_announcements(
        &attrs,
        Family::IPV4_UNICAST,
        NextHop::V4(Ipv4Addr::new(192, 0, 2, 1)),
        routes.iter().copied(),
        &ctx,
        &mut out,
    )
    .expect("packs");
    let updates = split(&out, &ctx);
    assert_eq!(updates.len(), n);
    assert_dense(&out, &ctx, 4);
    let got: Vec<NlriEntry> = updates.iter().flat_map(|u| u.nlri.iter()).collect();
    assert_eq!(got, routes);
    for u in &updates {
        assert_eq!(u.treat_as_withdraw, None);
        assert_eq!(u.attributes.next_hop, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(u.attributes.communities, attrs.communities);
    }
    // ~1000 /24s per 4096-octet message.
    assert_eq!(n, 10);

    let mut out = Vec::new();
    let n = pack_withdrawals(Family::IPV4_UNICAST, routes.iter().copied(), &ctx, &mut out)
        .expect("packs");
    let updates = split(&out, &ctx);
    assert_eq!(updates.len(), n);
    assert_dense(&out, &ctx, 4);
    let got: Vec<NlriEntry> = updates.iter().flat_map(|u| u.withdrawn.iter()).collect();
    assert_eq!(got, routes);

    // Extended messages: about 16 times fewer.
    let ext = SessionContext {
        extended_message: true,
        ..ctx
    };
    let mut out = Vec::new();
    let n = pack_announcements(
        &attrs,
        Family::IPV4_UNICAST,
        NextHop::V4(Ipv4Addr::new(192, 0, 2, 1)),
        routes.iter().copied(),
        &ext,
        &mut out,
    )
    .expect("packs");
    assert_eq!(n, 1);
    assert_eq!(
        split(&out, &ext).first().map(|u| u.nlri.len()),
        Some(10_000)
    );
}

#[test]
fn packer_ipv6_announcements_and_withdrawals() {
    let ctx = four();
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence([Asn(65001)])),
        ..PathAttributes::default()
    };
    let nh = NextHop::V6 {
        global: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
        link_local: Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
    };
    let routes = v6_routes(5_000);
    let mut out = Vec::new();
    let n = pack_announcements(
        &attrs,
        Family::IPV6_UNICAST,
        nh,
        routes.iter().copied(),
        &ctx,
        &mut out,
    )
    .expect("packs");
    let updates = split(&out, &ctx);
    assert_eq!(updates.len(), n);
    assert_dense(&out, &ctx, 9);
    let got: Vec<NlriEntry> = updates
        .iter()
        .flat_map(|u| {
            assert_eq!(u.treat_as_withdraw, None);
            let r: &MpReach = u.mp_reach.as_ref().expect("mp_reach");
            assert_eq!(r.next_hop, nh);
            r.nlri.iter()
        })
        .collect();
    assert_eq!(got, routes);

    let mut out = Vec::new();
    let n = pack_withdrawals(Family::IPV6_UNICAST, routes.iter().copied(), &ctx, &mut out)
        .expect("packs");
    let updates = split(&out, &ctx);
    assert_eq!(updates.len(), n);
    assert_dense(&out, &ctx, 9);
    let got: Vec<NlriEntry> = updates
        .iter()
        .flat_map(|u| u.mp_unreach.as_ref().expect("mp_unreach").withdrawn.iter())
        .collect();
    assert_eq!(got, routes);

    // A v4 prefix in a v6 batch is refused; nothing to pack is 0 messages.
    let mut out = Vec::new();
    assert!(pack_withdrawals(Family::IPV6_UNICAST, v4_routes(1, 24), &ctx, &mut out).is_err());
    let mut out = Vec::new();
    assert_eq!(
        pack_withdrawals(Family::IPV6_UNICAST, Vec::new(), &ctx, &mut out),
        Ok(0)
    );
}

#[test]
fn packer_with_add_path() {
    let ctx = SessionContext {
        four_octet_as: true,
        add_path_send: FamilySet::EMPTY.with(Family::IPV4_UNICAST),
        add_path_receive: FamilySet::EMPTY.with(Family::IPV4_UNICAST),
        ..SessionContext::default()
    };
    let routes: Vec<NlriEntry> = v4_routes(3_000, 24)
        .into_iter()
        .enumerate()
        .map(|(i, e)| NlriEntry {
            path_id: Some(u32::try_from(i).expect("small")),
            ..e
        })
        .collect();
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::default()),
        ..PathAttributes::default()
    };
    let mut out = Vec::new();
    pack_announcements(
        &attrs,
        Family::IPV4_UNICAST,
        NextHop::V4(Ipv4Addr::new(192, 0, 2, 1)),
        routes.iter().copied(),
        &ctx,
        &mut out,
    )
    .expect("packs");
    assert_dense(&out, &ctx, 8);
    let got: Vec<NlriEntry> = split(&out, &ctx)
        .iter()
        .flat_map(|u| u.nlri.iter())
        .collect();
    assert_eq!(got, routes);
}

#[test]
fn prefix_type() {
    let x = p("10.1.2.3/8");
    assert_eq!(x.to_string(), "10.0.0.0/8");
    assert!(Prefix::v4(Ipv4Addr::LOCALHOST, 33).is_err());
    assert!(Prefix::v6(Ipv6Addr::LOCALHOST, 129).is_err());
    assert!("10.0.0.0".parse::<Prefix>().is_err());
    let net: ipnet::IpNet = p("2001:db8::/32").into();
    assert_eq!(Prefix::from(net), p("2001:db8::/32"));
    assert!(std::mem::size_of::<NlriEntry>() <= 28);
}

#[test]
fn as_zero_is_malformed() {
    // AS_PATH SEQ 0: treat-as-withdraw (RFC 7607 §2).
    let attrs = [
        0x40, 1, 1, 0, //
        0x40, 2, 6, 2, 1, 0, 0, 0, 0, //
        0x40, 3, 4, 192, 0, 2, 1,
    ];
    let u = decode(&update_bytes(&[], &attrs, &[24, 10, 1, 2]), &four());
    assert_eq!(
        u.treat_as_withdraw.map(|f| (f.type_code, f.issue)),
        Some((2, AttributeIssue::Value))
    );
    // AGGREGATOR AS 0: discarded.
    let mut attrs = MANDATORY_4.to_vec();
    attrs.extend_from_slice(&[0xc0, 7, 8, 0, 0, 0, 0, 192, 0, 2, 9]);
    let u = decode(&update_bytes(&[], &attrs, &[24, 10, 1, 2]), &four());
    assert_eq!(u.treat_as_withdraw, None);
    assert_eq!(u.attributes.aggregator, None);
    assert_eq!(u.discarded[0].type_code, 7);
}

#[test]
fn mp_reach_is_encoded_first() {
    // RFC 7606 §5.1: MP_REACH_NLRI first (2-octet length, as BIRD sends
    // it), then the other attributes in ascending order.
    let u = Update {
        attributes: PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            local_pref: Some(100),
            ..PathAttributes::default()
        },
        mp_reach: Some(MpReach {
            next_hop: NextHop::V6 {
                global: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
                link_local: None,
            },
            nlri: NlriSet::from_prefixes(Family::IPV6_UNICAST, [p("fd00::/64")]).expect("v6"),
        }),
        ..Update::default()
    };
    let bytes = Message::Update(u.clone()).encode(&four()).expect("encodes");
    // header (19), withdrawn length (2), attribute length (2), then:
    assert_eq!(&bytes[23..25], &[0x90, 14]);
    let origin_at = bytes
        .windows(4)
        .position(|w| w == [0x40, 1, 1, 0])
        .expect("ORIGIN");
    assert!(origin_at > 25);
    assert_eq!(decode(&bytes, &four()), u);
}

#[test]
fn unknown_attributes_are_canonical() {
    // Out of type order, with the unused low flag bits set: decoded in
    // type order with those bits cleared, so decode(encode(x)) == x.
    let mut attrs = MANDATORY_4.to_vec();
    attrs.extend_from_slice(&[0xcd, 99, 1, 1]);
    attrs.extend_from_slice(&[0xe0, 12, 1, 2]);
    let u = decode(&update_bytes(&[], &attrs, &[24, 10, 1, 2]), &four());
    let codes: Vec<(u8, u8)> = u
        .attributes
        .unknown
        .iter()
        .map(|a| (a.type_code, a.flags))
        .collect();
    assert_eq!(codes, vec![(12, 0xe0), (99, 0xc0)]);
    let again = Message::Update(u.clone()).encode(&four()).expect("encodes");
    assert_eq!(decode(&again, &four()), u);
}
