//! Streams and the bare baseline walker shared by the codec benchmark.
//!
//! The streams are built by hand here, byte by byte, so the decode
//! benchmark does not depend on the encoder it also measures: a full
//! table of densely packed UPDATEs (RFC 4271 §4.3, at most 4096 octets
//! each, one attribute set per message) as a peer sends it after OPEN.

use std::net::Ipv4Addr;

/// IPv4 /24 prefixes in the IPv4 stream (a full Internet table and more).
pub const V4_PREFIXES: u32 = 1_000_000;
/// IPv6 /48 prefixes in the IPv6 stream.
pub const V6_PREFIXES: u32 = 100_000;
/// RFC 4271 §4.1: the largest message without RFC 8654.
pub const MAX_MESSAGE: usize = 4096;

/// The i-th IPv4 /24: 16.0.0.0/24, 16.0.1.0/24, ... (1M of them fit below
/// 32.0.0.0/8).
pub fn v4_prefix(i: u32) -> (Ipv4Addr, u8) {
    (Ipv4Addr::from((16u32 << 24) + (i << 8)), 24)
}

/// The first six octets of the i-th IPv6 /48: fd00:iiii:iiii::/48.
pub fn v6_prefix_octets(i: u32) -> [u8; 6] {
    let [a, b, c, d] = i.to_be_bytes();
    [0xfd, 0x00, a, b, c, d]
}

/// ORIGIN IGP, AS_PATH 65001 65002 (4-octet), MED 10, COMMUNITIES
/// 65001:100: the attributes shared by every message (NEXT_HOP or
/// MP_REACH added per family). Type codes ascending.
const ORIGIN: [u8; 4] = [0x40, 1, 1, 0];
const AS_PATH: [u8; 13] = [0x40, 2, 10, 2, 2, 0, 0, 0xfd, 0xe9, 0, 0, 0xfd, 0xea];
const NEXT_HOP: [u8; 7] = [0x40, 3, 4, 192, 0, 2, 1];
const MED: [u8; 7] = [0x80, 4, 4, 0, 0, 0, 10];
const COMMUNITIES: [u8; 7] = [0xc0, 8, 4, 0xfd, 0xe9, 0, 100];
/// MP_REACH_NLRI next hop for the IPv6 stream: 2001:db8::1.
pub const V6_NEXT_HOP: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

fn header(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&[0, 0, 2]);
    start
}

fn patch16(out: &mut [u8], at: usize, value: usize) {
    let v = u16::try_from(value).unwrap_or(u16::MAX).to_be_bytes();
    if let Some(slot) = out.get_mut(at..at + 2) {
        slot.copy_from_slice(&v);
    }
}

/// The IPv4 stream: UPDATEs with ORIGIN, AS_PATH, NEXT_HOP, MED,
/// COMMUNITIES and as many 4-octet /24 NLRI as fit in 4096 octets.
/// Returns the bytes and the number of messages.
pub fn v4_stream() -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(V4_PREFIXES as usize * 4 + 100_000);
    let mut messages = 0;
    let mut i = 0;
    while i < V4_PREFIXES {
        let start = header(&mut out);
        out.extend_from_slice(&[0, 0]); // no withdrawn routes
        let attrs = [&ORIGIN[..], &AS_PATH, &NEXT_HOP, &MED, &COMMUNITIES].concat();
        out.extend_from_slice(&u16::try_from(attrs.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&attrs);
        while i < V4_PREFIXES && out.len() - start + 4 <= MAX_MESSAGE {
            let (addr, len) = v4_prefix(i);
            out.push(len);
            out.extend_from_slice(&addr.octets()[..3]);
            i += 1;
        }
        let len = out.len() - start;
        patch16(&mut out, start + 16, len);
        messages += 1;
    }
    (out, messages)
}

/// The IPv6 stream: UPDATEs with MP_REACH_NLRI (extended length; next
/// hop 2001:db8::1) holding as many /48 as fit in 4096 octets, then
/// ORIGIN, AS_PATH, MED and COMMUNITIES. Returns the bytes and the number of
/// messages.
pub fn v6_stream() -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(V6_PREFIXES as usize * 7 + 20_000);
    let mut messages = 0;
    let mut i = 0;
    while i < V6_PREFIXES {
        let start = header(&mut out);
        out.extend_from_slice(&[0, 0]);
        let attr_len_at = out.len();
        out.extend_from_slice(&[0, 0]);
        // MP_REACH_NLRI first (RFC 7606 §5.1): Optional + Extended
        // Length, type 14, 2-octet length; IPv6 unicast, 16-octet next hop.
        out.extend_from_slice(&[0x90, 14, 0, 0]);
        let mp_len_at = out.len() - 2;
        out.extend_from_slice(&[0, 2, 1, 16]);
        out.extend_from_slice(&V6_NEXT_HOP);
        out.push(0);
        // Leave room for the attributes that follow the NLRI.
        let tail = ORIGIN.len() + AS_PATH.len() + MED.len() + COMMUNITIES.len();
        while i < V6_PREFIXES && out.len() - start + 7 + tail <= MAX_MESSAGE {
            out.push(48);
            out.extend_from_slice(&v6_prefix_octets(i));
            i += 1;
        }
        let mp_end = out.len();
        patch16(&mut out, mp_len_at, mp_end - mp_len_at - 2);
        for a in [&ORIGIN[..], &AS_PATH, &MED, &COMMUNITIES] {
            out.extend_from_slice(a);
        }
        let end = out.len();
        patch16(&mut out, attr_len_at, end - attr_len_at - 2);
        patch16(&mut out, start + 16, end - start);
        messages += 1;
    }
    (out, messages)
}

/// The limit a codec can approach: frame each message, skip the withdrawn
/// routes and the attributes, and walk the IPv4 NLRI, folding every
/// prefix into a checksum. No allocation, no validation beyond bounds,
/// no dependency. Returns (prefixes, checksum), or None on a malformed
/// stream.
pub fn bare_walk(mut buf: &[u8]) -> Option<(u64, u64)> {
    let (mut count, mut sum) = (0u64, 0u64);
    while let Some((hdr, _)) = buf.split_first_chunk::<19>() {
        let len = usize::from(u16::from_be_bytes([hdr[16], hdr[17]]));
        let (msg, rest) = buf.split_at_checked(len)?;
        buf = rest;
        if hdr[18] != 2 {
            continue;
        }
        let body = msg.get(19..)?;
        let (wd_len, body) = body.split_first_chunk::<2>()?;
        let body = body.get(usize::from(u16::from_be_bytes(*wd_len))..)?;
        let (attr_len, body) = body.split_first_chunk::<2>()?;
        let mut nlri = body.get(usize::from(u16::from_be_bytes(*attr_len))..)?;
        while let Some((&plen, rest)) = nlri.split_first() {
            if plen > 32 {
                return None;
            }
            let n = usize::from(plen).div_ceil(8);
            let (addr, rest) = rest.split_at_checked(n)?;
            // Shift the octets in rather than copy: no memcpy per prefix.
            let mut a = 0u32;
            for &b in addr {
                a = (a << 8) | u32::from(b);
            }
            let a = a.checked_shl(8 * (4 - n as u32)).unwrap_or(0);
            sum = sum.wrapping_add(u64::from(a) ^ u64::from(plen));
            count += 1;
            nlri = rest;
        }
    }
    Some((count, sum))
}
