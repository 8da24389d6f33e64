//! Frames and decodes arbitrary bytes as a BGP byte stream, the way a
//! session reads its socket, under one of a few negotiated contexts.
//!
//! Input: one selector byte (the context, see [`context`]), then the
//! stream. Properties checked on every input:
//!
//! - nothing panics (framing, decoding, the NLRI iterators, AS4
//!   reconciliation, encoding);
//! - the framer never claims more bytes than it was given, and
//!   `messages()` stops exactly where `frame()` does;
//! - a message that decodes with no RFC 7606 outcome and re-encodes
//!   decodes again to the same message (encode may refuse: a valid input
//!   can exceed a limit once canonicalised, e.g. an OPEN's parameters).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tortie_bgp::wire::{
    decode_message, frame, messages, Family, FamilySet, Frame, Message, SessionContext,
};

/// The contexts a session can decode under. Seeds made from the captures
/// use the one their session negotiated (see `fuzz/make_seeds.py`).
fn context(selector: u8) -> SessionContext {
    let all = FamilySet::EMPTY
        .with(Family::IPV4_UNICAST)
        .with(Family::IPV6_UNICAST)
        .with(Family::IPV4_MULTICAST)
        .with(Family::IPV6_MULTICAST);
    match selector % 5 {
        // Before OPEN, and a 2-octet AS session.
        0 => SessionContext::default(),
        // 4-octet AS, no ADD-PATH.
        1 => SessionContext::four_octet(),
        // 4-octet AS and ADD-PATH both ways on every family.
        2 => SessionContext {
            add_path_receive: all,
            add_path_send: all,
            ..SessionContext::four_octet()
        },
        // 4-octet AS and RFC 8654 extended messages.
        4 => SessionContext {
            extended_message: true,
            ..SessionContext::four_octet()
        },
        // 2-octet AS, ADD-PATH on IPv4 only, extended messages.
        _ => SessionContext {
            extended_message: true,
            add_path_receive: FamilySet::EMPTY.with(Family::IPV4_UNICAST),
            add_path_send: FamilySet::EMPTY.with(Family::IPV4_UNICAST),
            ..SessionContext::default()
        },
    }
}

/// Touches everything a RIB would read, so lazy parsing cannot hide a
/// panic.
fn walk(msg: &Message) -> usize {
    let Message::Update(u) = msg else {
        return 0;
    };
    let mut n = u.announced_entries().count() + u.withdrawn_entries().count();
    n += usize::from(u.end_of_rib_family().is_some());
    let mut attrs = u.attributes.clone();
    attrs.reconcile_as4();
    n += attrs.as_path.map_or(0, |p| p.path_len());
    n
}

fn round_trip(msg: &Message, ctx: &SessionContext) {
    if let Message::Update(u) = msg {
        // RFC 7606 outcomes are not carried by the encoding.
        if u.treat_as_withdraw.is_some() || !u.discarded.is_empty() {
            return;
        }
    }
    let Ok(bytes) = msg.encode(ctx) else {
        return;
    };
    match decode_message(&bytes, ctx) {
        Ok(again) => assert_eq!(&again, msg, "re-encoded message decodes differently"),
        Err(e) => panic!("re-encoded message does not decode: {e}; {msg:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let ctx = context(selector);

    let mut rest = stream;
    let mut decoded = 0usize;
    while let Ok(Frame::Complete { length, .. }) = frame(rest, &ctx) {
        let Some((raw, tail)) = rest.split_at_checked(length) else {
            panic!("framer claimed {length} octets of {}", rest.len());
        };
        if let Ok(msg) = decode_message(raw, &ctx) {
            walk(&msg);
            round_trip(&msg, &ctx);
        }
        decoded += 1;
        rest = tail;
    }

    // The iterator must agree with the loop above up to the first error.
    let mut it = messages(stream, &ctx);
    let mut n = 0usize;
    for m in it.by_ref() {
        n += 1;
        if m.is_err() {
            break;
        }
    }
    assert!(
        n <= decoded + 1,
        "messages() yielded {n}, frame() found {decoded}"
    );
    assert!(it.remaining().len() <= stream.len());
});
