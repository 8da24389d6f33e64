//! Unit tests for the message header, framing, OPEN and capabilities,
//! KEEPALIVE, NOTIFICATION and ROUTE-REFRESH, against hand-assembled bytes
//! whose fields are commented.

use std::net::Ipv4Addr;

use tortie_bgp::wire::{
    decode_message, frame, messages, AddPathFamily, AddPathMode, Afi, Asn, Capability,
    CeaseSubcode, DecodeErrorKind, ErrorCode, Family, Frame, GracefulRestart,
    GracefulRestartFamily, HeaderSubcode, HoldTime, Message, MessageType, Notification, Open,
    OpenSubcode, RouteRefresh, RouteRefreshSubtype, RouterId, Safi, SessionContext, AS_TRANS,
};

fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&u16::try_from(19 + body.len()).expect("fits").to_be_bytes());
    v.push(ty);
    v.extend_from_slice(body);
    v
}

fn ctx() -> SessionContext {
    SessionContext::default()
}

#[test]
fn keepalive_round_trip() {
    let bytes = msg(4, &[]);
    assert_eq!(decode_message(&bytes, &ctx()), Ok(Message::Keepalive));
    assert_eq!(Message::Keepalive.encode(&ctx()), Ok(bytes));
}

#[test]
fn keepalive_with_body_is_bad_length() {
    let bytes = msg(4, &[0]);
    let err = decode_message(&bytes, &ctx()).expect_err("keepalive must be 19 octets");
    assert_eq!(err.kind, DecodeErrorKind::BadLength { length: 20 });
    assert_eq!(
        err.notification,
        Notification::header(HeaderSubcode::BadMessageLength, vec![0, 20])
    );
}

#[test]
fn bad_marker_is_connection_not_synchronized() {
    let mut bytes = msg(4, &[]);
    bytes[3] = 0;
    let err = frame(&bytes, &ctx()).expect_err("marker");
    assert_eq!(err.kind, DecodeErrorKind::BadMarker);
    assert_eq!(err.notification.code, ErrorCode::MessageHeader);
    assert_eq!(
        err.notification.subcode,
        HeaderSubcode::ConnectionNotSynchronized as u8
    );
    // Detected before the header is complete.
    assert!(frame(&bytes[..5], &ctx()).is_err());
}

#[test]
fn bad_type_carries_the_type() {
    let bytes = msg(9, &[]);
    let err = frame(&bytes, &ctx()).expect_err("type");
    assert_eq!(err.kind, DecodeErrorKind::BadType { type_code: 9 });
    assert_eq!(
        err.notification,
        Notification::header(HeaderSubcode::BadMessageType, vec![9])
    );
}

#[test]
fn framing_needs_more_then_completes() {
    let bytes = msg(4, &[]);
    assert_eq!(
        frame(&bytes[..10], &ctx()),
        Ok(Frame::Incomplete { needed: 9 })
    );
    let mut two = bytes.clone();
    two.extend_from_slice(&bytes[..3]);
    match frame(&two, &ctx()) {
        Ok(Frame::Complete { length, header }) => {
            assert_eq!(length, 19);
            assert_eq!(header.message_type, MessageType::Keepalive);
        }
        other => panic!("{other:?}"),
    }
    let mut it = messages(&two, &ctx());
    assert_eq!(it.next(), Some(Ok(Message::Keepalive)));
    assert_eq!(it.next(), None);
    assert_eq!(it.remaining().len(), 3);
}

#[test]
fn framing_incomplete_body() {
    let body = [0u8; 10];
    let bytes = msg(2, &body);
    assert_eq!(
        frame(&bytes[..20], &ctx()),
        Ok(Frame::Incomplete { needed: 9 })
    );
}

#[test]
fn length_limits_follow_extended_message() {
    // A 5000-octet UPDATE header: too long without RFC 8654, fine with it.
    let mut hdr = vec![0xff; 16];
    hdr.extend_from_slice(&5000u16.to_be_bytes());
    hdr.push(2);
    let err = frame(&hdr, &ctx()).expect_err("too long");
    assert_eq!(err.kind, DecodeErrorKind::BadLength { length: 5000 });
    assert_eq!(err.notification.data, 5000u16.to_be_bytes().to_vec());
    let ext = SessionContext {
        extended_message: true,
        ..ctx()
    };
    assert_eq!(
        frame(&hdr, &ext),
        Ok(Frame::Incomplete { needed: 5000 - 19 })
    );
    // OPEN stays within 4096 even then (RFC 8654 §3).
    hdr[18] = 1;
    assert!(frame(&hdr, &ext).is_err());
    // Below the header length.
    let mut short = vec![0xff; 16];
    short.extend_from_slice(&18u16.to_be_bytes());
    short.push(4);
    assert!(frame(&short, &ctx()).is_err());
    // Below the UPDATE minimum of 23.
    let mut short_update = vec![0xff; 16];
    short_update.extend_from_slice(&22u16.to_be_bytes());
    short_update.push(2);
    assert_eq!(
        frame(&short_update, &ctx()).expect_err("short").kind,
        DecodeErrorKind::BadLength { length: 22 }
    );
}

/// OPEN from AS 65001, hold 90, id 192.0.2.1, with the given parameters.
fn open_body(my_as: u16, hold: u16, params: &[u8]) -> Vec<u8> {
    let mut b = vec![4];
    b.extend_from_slice(&my_as.to_be_bytes());
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&[192, 0, 2, 1]);
    b.push(u8::try_from(params.len()).expect("short params"));
    b.extend_from_slice(params);
    b
}

#[test]
fn open_with_capabilities_decodes() {
    let params = [
        2, 6, 1, 4, 0, 1, 0, 1, // MP ipv4 unicast
        2, 6, 1, 4, 0, 2, 0, 1, // MP ipv6 unicast
        2, 2, 2, 0, // route refresh
        2, 2, 70, 0, // enhanced route refresh
        2, 6, 65, 4, 0, 0, 0xfd, 0xe9, // 4-octet AS 65001
        2, 8, 64, 6, 0xc0, 120, 0, 1, 1, 0x80, // GR R+N, 120 s, v4 F
        2, 6, 69, 4, 0, 1, 1, 3, // ADD-PATH v4 unicast both
        2, 2, 6, 0, // extended message
        2, 5, 99, 3, 1, 2, 3, // unknown capability 99
    ];
    let bytes = msg(1, &open_body(65001, 90, &params));
    let Ok(Message::Open(open)) = decode_message(&bytes, &ctx()) else {
        panic!("open");
    };
    assert_eq!(open.asn(), Asn(65001));
    assert_eq!(open.hold_time, HoldTime(90));
    assert_eq!(open.router_id, RouterId(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(
        open.capabilities,
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::Multiprotocol(Family::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::EnhancedRouteRefresh,
            Capability::FourOctetAs(Asn(65001)),
            Capability::GracefulRestart(GracefulRestart {
                restart_state: true,
                notification: true,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    family: Family::IPV4_UNICAST,
                    forwarding_preserved: true,
                }],
            }),
            Capability::AddPath(vec![AddPathFamily {
                family: Family::IPV4_UNICAST,
                mode: AddPathMode::Both,
            }]),
            Capability::ExtendedMessage,
            Capability::Unknown {
                code: 99,
                value: vec![1, 2, 3],
            },
        ]
    );
    assert_eq!(
        open.multiprotocol_families(),
        vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]
    );
    assert_eq!(open.graceful_restart().map(|g| g.restart_time), Some(120));
    assert_eq!(open.capability(70), Some(&Capability::EnhancedRouteRefresh));
    assert_eq!(open.capability(71), None);
    // Unknown capabilities re-encode unchanged. We send all capabilities
    // in one parameter (as BIRD and GoBGP do), so the bytes differ from
    // this one-parameter-per-capability input, but decode the same.
    let again = Message::Open(open.clone()).encode(&ctx()).expect("encodes");
    assert_eq!(decode_message(&again, &ctx()), Ok(Message::Open(open)));
    let mut single = vec![2, 0];
    let mut rest = &params[..];
    while let [2, len, tail @ ..] = rest {
        let len = usize::from(*len);
        single.extend_from_slice(&tail[..len]);
        rest = &tail[len..];
    }
    single[1] = u8::try_from(single.len() - 2).expect("short");
    assert_eq!(again, msg(1, &open_body(65001, 90, &single)));
}

#[test]
fn open_multiprotocol_keeps_other_families_as_numbers() {
    let params = [2, 6, 1, 4, 0, 25, 0, 70]; // l2vpn evpn
    let bytes = msg(1, &open_body(65001, 90, &params));
    let Ok(Message::Open(open)) = decode_message(&bytes, &ctx()) else {
        panic!("open");
    };
    assert_eq!(
        open.capabilities,
        vec![Capability::Multiprotocol(Family::new(Afi(25), Safi(70)))]
    );
}

#[test]
fn open_hold_time_one_and_two_rejected() {
    for hold in [1u16, 2] {
        let bytes = msg(1, &open_body(65001, hold, &[]));
        let err = decode_message(&bytes, &ctx()).expect_err("hold time");
        assert_eq!(
            err.kind,
            DecodeErrorKind::UnacceptableHoldTime { hold_time: hold }
        );
        assert_eq!(
            err.notification,
            Notification::open(OpenSubcode::UnacceptableHoldTime, vec![])
        );
    }
    for hold in [0u16, 3] {
        let bytes = msg(1, &open_body(65001, hold, &[]));
        assert!(decode_message(&bytes, &ctx()).is_ok());
    }
}

#[test]
fn open_rejects_version_identifier_and_as_zero() {
    let mut body = open_body(65001, 90, &[]);
    body[0] = 3;
    let err = decode_message(&msg(1, &body), &ctx()).expect_err("version");
    assert_eq!(err.kind, DecodeErrorKind::UnsupportedVersion { version: 3 });
    assert_eq!(err.notification.data, vec![0, 4]);

    let mut body = open_body(65001, 90, &[]);
    body[5..9].copy_from_slice(&[0, 0, 0, 0]);
    let err = decode_message(&msg(1, &body), &ctx()).expect_err("id");
    assert_eq!(
        err.notification.subcode,
        OpenSubcode::BadBgpIdentifier as u8
    );

    let body = open_body(0, 90, &[]);
    let err = decode_message(&msg(1, &body), &ctx()).expect_err("as 0");
    assert_eq!(err.notification.subcode, OpenSubcode::BadPeerAs as u8);
}

#[test]
fn open_unsupported_parameter_and_bad_lengths() {
    let bytes = msg(1, &open_body(65001, 90, &[1, 2, 0, 0])); // auth param
    let err = decode_message(&bytes, &ctx()).expect_err("param");
    assert_eq!(
        err.kind,
        DecodeErrorKind::UnsupportedOptionalParameter { param_type: 1 }
    );
    assert_eq!(
        err.notification.subcode,
        OpenSubcode::UnsupportedOptionalParameter as u8
    );

    // Capability length runs past the parameter.
    let bytes = msg(1, &open_body(65001, 90, &[2, 3, 65, 4, 0]));
    assert!(decode_message(&bytes, &ctx()).is_err());
    // Opt Parm Len larger than the body.
    let mut body = open_body(65001, 90, &[2, 2, 2, 0]);
    body[9] = 9;
    assert!(decode_message(&msg(1, &body), &ctx()).is_err());
    // 4-octet AS capability with 3 octets.
    let bytes = msg(1, &open_body(65001, 90, &[2, 5, 65, 3, 0, 0, 1]));
    let err = decode_message(&bytes, &ctx()).expect_err("cap");
    assert_eq!(err.kind, DecodeErrorKind::MalformedCapability { code: 65 });
}

#[test]
fn open_as_trans_for_four_octet_as() {
    let open = Open::new(
        Asn(4_200_000_000),
        HoldTime(90),
        RouterId(Ipv4Addr::new(192, 0, 2, 1)),
        vec![Capability::RouteRefresh],
    );
    assert_eq!(open.my_as, AS_TRANS.0 as u16);
    assert_eq!(open.asn(), Asn(4_200_000_000));
    let bytes = Message::Open(open.clone()).encode(&ctx()).expect("encodes");
    // My AS on the wire is 23456.
    assert_eq!(&bytes[20..22], &23456u16.to_be_bytes());
    assert_eq!(decode_message(&bytes, &ctx()), Ok(Message::Open(open)));

    let small = Open::new(
        Asn(65001),
        HoldTime(90),
        RouterId(Ipv4Addr::new(192, 0, 2, 1)),
        vec![],
    );
    assert_eq!(small.my_as, 65001);
}

#[test]
fn open_rfc9072_extended_parameters() {
    // Enough unknown capabilities to pass 255 octets of parameters.
    let caps: Vec<Capability> = (0..40u8)
        .map(|i| Capability::Unknown {
            code: 200 + (i % 50),
            value: vec![i; 6],
        })
        .collect();
    let open = Open {
        version: 4,
        my_as: 65001,
        hold_time: HoldTime(90),
        router_id: RouterId(Ipv4Addr::new(192, 0, 2, 1)),
        capabilities: caps,
    };
    let bytes = Message::Open(open.clone()).encode(&ctx()).expect("encodes");
    // Non-Ext OP Len 255, Non-Ext OP Type 255.
    assert_eq!(bytes[28], 255);
    assert_eq!(bytes[29], 255);
    assert_eq!(decode_message(&bytes, &ctx()), Ok(Message::Open(open)));

    // A small OPEN hand-written in the extended form also decodes.
    let mut body = vec![4, 0xfd, 0xe9, 0, 90, 192, 0, 2, 1];
    body.extend_from_slice(&[255, 255, 0, 7]); // ext len 7
    body.extend_from_slice(&[2, 0, 4, 65, 2, 0, 0]); // oops, wrong on purpose below
    let bytes = msg(1, &body);
    // Capability 65 with length 2 is malformed: the extended form was
    // still parsed far enough to find it.
    assert_eq!(
        decode_message(&bytes, &ctx()).expect_err("malformed").kind,
        DecodeErrorKind::MalformedCapability { code: 65 }
    );
    let mut body = vec![4, 0xfd, 0xe9, 0, 90, 192, 0, 2, 1];
    body.extend_from_slice(&[255, 255, 0, 5]);
    body.extend_from_slice(&[2, 0, 2, 2, 0]); // route refresh
    let Ok(Message::Open(o)) = decode_message(&msg(1, &body), &ctx()) else {
        panic!("extended open");
    };
    assert_eq!(o.capabilities, vec![Capability::RouteRefresh]);
}

#[test]
fn negotiate_context() {
    let id = RouterId(Ipv4Addr::new(192, 0, 2, 1));
    let local = Open::new(
        Asn(65001),
        HoldTime(90),
        id,
        vec![
            Capability::ExtendedMessage,
            Capability::AddPath(vec![AddPathFamily {
                family: Family::IPV4_UNICAST,
                mode: AddPathMode::Receive,
            }]),
        ],
    );
    let remote = Open::new(
        Asn(65002),
        HoldTime(90),
        id,
        vec![Capability::AddPath(vec![AddPathFamily {
            family: Family::IPV4_UNICAST,
            mode: AddPathMode::Both,
        }])],
    );
    let c = SessionContext::negotiate(&local, &remote);
    assert!(c.four_octet_as);
    assert!(!c.extended_message);
    assert!(c.receives_path_ids(Family::IPV4_UNICAST));
    assert!(!c.sends_path_ids(Family::IPV4_UNICAST));
    assert!(!c.receives_path_ids(Family::IPV6_UNICAST));
}

#[test]
fn notification_shutdown_communication() {
    let n = Notification::shutdown(
        CeaseSubcode::AdministrativeShutdown,
        "maintenance, back at 10:00",
    );
    let bytes = Message::Notification(n.clone())
        .encode(&ctx())
        .expect("encodes");
    let Ok(Message::Notification(d)) = decode_message(&bytes, &ctx()) else {
        panic!("notification");
    };
    assert_eq!(d, n);
    assert_eq!(
        d.shutdown_communication(),
        Some("maintenance, back at 10:00")
    );
    assert_eq!(
        d.to_string(),
        "Cease / Administrative Shutdown: \"maintenance, back at 10:00\""
    );

    // Long messages are cut at a character boundary within 255 octets.
    let long = "é".repeat(200);
    let n = Notification::shutdown(CeaseSubcode::AdministrativeReset, &long);
    assert_eq!(n.data[0], 254);
    assert_eq!(n.shutdown_communication().map(str::len), Some(254));

    // A bad length or bad UTF-8 still decodes, without a communication.
    let bytes = msg(3, &[6, 2, 10, b'a']);
    let Ok(Message::Notification(d)) = decode_message(&bytes, &ctx()) else {
        panic!("notification");
    };
    assert_eq!(d.shutdown_communication(), None);
    let bytes = msg(3, &[6, 2, 2, 0xff, 0xfe]);
    let Ok(Message::Notification(d)) = decode_message(&bytes, &ctx()) else {
        panic!("notification");
    };
    assert_eq!(d.shutdown_communication(), None);
}

#[test]
fn notification_names() {
    let n = Notification::update(tortie_bgp::wire::UpdateSubcode::MalformedAsPath, vec![]);
    assert_eq!(n.to_string(), "UPDATE Message Error / Malformed AS_PATH");
    let n = Notification::new(ErrorCode::from(42), 7u8, vec![1]);
    assert_eq!(n.code, ErrorCode::Other(42));
    assert_eq!(
        n.to_string(),
        "error code 42 / subcode 7 (1 octets of data)"
    );
    assert_eq!(u8::from(ErrorCode::Cease), 6);
}

#[test]
fn route_refresh_subtypes() {
    for (st, v) in [
        (RouteRefreshSubtype::Normal, 0u8),
        (RouteRefreshSubtype::BeginningOfRefresh, 1),
        (RouteRefreshSubtype::EndOfRefresh, 2),
    ] {
        let bytes = msg(5, &[0, 2, v, 1]);
        let rr = RouteRefresh {
            family: Family::IPV6_UNICAST,
            subtype: st,
        };
        assert_eq!(
            decode_message(&bytes, &ctx()),
            Ok(Message::RouteRefresh(rr))
        );
        assert_eq!(Message::RouteRefresh(rr).encode(&ctx()), Ok(bytes));
    }
    let bytes = msg(5, &[0, 1, 7, 1]);
    assert_eq!(
        decode_message(&bytes, &ctx()),
        Ok(Message::RouteRefresh(RouteRefresh {
            family: Family::IPV4_UNICAST,
            subtype: RouteRefreshSubtype::Other(7),
        }))
    );
    // RFC 7313 §5: wrong length is a ROUTE-REFRESH Message Error.
    let bytes = msg(5, &[0, 1, 1, 1, 0]);
    let err = decode_message(&bytes, &ctx()).expect_err("length");
    assert_eq!(err.notification.code, ErrorCode::RouteRefresh);
    assert_eq!(err.notification.subcode, 1);
    assert_eq!(err.notification.data, bytes, "data is the complete message");
}
