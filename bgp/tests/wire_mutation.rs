//! Mutation run over the golden captures (`tests/data/*/*.bin`, BIRD and
//! GoBGP sessions): every captured message, with bits flipped, octets
//! replaced or inserted, lengths fiddled or the buffer cut short, must
//! decode to a message or a typed error, never panic; and whatever decodes
//! cleanly must re-encode to bytes that decode to the same message.
//!
//! A fixed-seed xorshift keeps the run deterministic, so a failure here is
//! reproducible by running the test again. The same harness ran 20M
//! iterations with overflow checks during development.

use std::fs;
use std::path::Path;

use tortie_bgp::wire::{decode_message, Family, FamilySet, Message, SessionContext};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Every message of every captured stream, split on the header length.
fn captured_messages() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut out = Vec::new();
    let Ok(dirs) = fs::read_dir(&root) else {
        return out;
    };
    let mut files: Vec<_> = dirs
        .flatten()
        .filter(|d| d.path().is_dir())
        .flat_map(|d| fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|f| f.path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    for f in files {
        let data = fs::read(&f).expect("capture readable");
        let mut rest = &data[..];
        while let Some(hdr) = rest.get(..19) {
            let len = usize::from(u16::from_be_bytes([hdr[16], hdr[17]]));
            let Some(msg) = rest.get(..len) else { break };
            out.push(msg.to_vec());
            rest = &rest[len.max(19)..];
        }
    }
    out
}

/// Octets that steer decoders into interesting branches: small lengths,
/// flag combinations, MP attribute codes, prefix lengths at the limits.
const INTERESTING: [u8; 16] = [
    0, 1, 2, 3, 4, 0x40, 0x80, 0xc0, 0x90, 14, 15, 255, 32, 33, 128, 129,
];

fn mutate(m: &mut Vec<u8>, rng: &mut XorShift) {
    for _ in 0..1 + rng.below(4) {
        let n = m.len().max(1);
        let body = |rng: &mut XorShift| 19 + rng.below(n.saturating_sub(19));
        match rng.below(6) {
            0 => {
                let i = rng.below(n);
                let bit = rng.below(8);
                if let Some(b) = m.get_mut(i) {
                    *b ^= 1 << bit;
                }
            }
            1 => {
                let i = rng.below(n);
                let v = rng.next() as u8;
                if let Some(b) = m.get_mut(i) {
                    *b = v;
                }
            }
            2 => {
                let i = rng.below(n);
                m.truncate(i);
            }
            3 => {
                let i = body(rng);
                let v = (rng.below(300) as u16).to_be_bytes();
                if let Some(s) = m.get_mut(i..i + 2) {
                    s.copy_from_slice(&v);
                }
            }
            4 => {
                let i = rng.below(n).min(m.len());
                for _ in 0..rng.below(8) {
                    let v = rng.next() as u8;
                    m.insert(i, v);
                }
            }
            _ => {
                let i = body(rng);
                let v = INTERESTING[rng.below(INTERESTING.len())];
                if let Some(b) = m.get_mut(i) {
                    *b = v;
                }
            }
        }
    }
    // Half the time make the header agree with the buffer, so the mutation
    // reaches the body decoders instead of the header check.
    if rng.below(2) == 0 {
        if let (Ok(len), Some(s)) = (u16::try_from(m.len()), m.get_mut(16..18)) {
            s.copy_from_slice(&len.to_be_bytes());
        }
    }
}

#[test]
fn mutated_captures_never_panic_and_reencode_faithfully() {
    let seeds = captured_messages();
    assert!(
        !seeds.is_empty(),
        "no golden captures found under tests/data"
    );
    let both = FamilySet::EMPTY
        .with(Family::IPV4_UNICAST)
        .with(Family::IPV6_UNICAST);
    let contexts = [
        SessionContext::default(),
        SessionContext::four_octet(),
        SessionContext {
            four_octet_as: true,
            extended_message: true,
            add_path_receive: both,
            add_path_send: both,
        },
    ];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let (mut decoded, mut rejected) = (0u32, 0u32);
    for _ in 0..200_000 {
        let mut m = seeds[rng.below(seeds.len())].clone();
        mutate(&mut m, &mut rng);
        let ctx = &contexts[rng.below(contexts.len())];
        let Ok(msg) = decode_message(&m, ctx) else {
            rejected += 1;
            continue;
        };
        decoded += 1;
        if let Message::Update(u) = &msg {
            let _ = u.announced_entries().count() + u.withdrawn_entries().count();
            let mut a = u.attributes.clone();
            a.reconcile_as4();
        }
        let clean = match &msg {
            Message::Update(u) => u.treat_as_withdraw.is_none() && u.discarded.is_empty(),
            _ => true,
        };
        if let Ok(bytes) = msg.encode(ctx) {
            let again = decode_message(&bytes, ctx)
                .unwrap_or_else(|e| panic!("re-encoded {} does not decode: {e}", hex(&m)));
            if clean {
                assert_eq!(again, msg, "input {}", hex(&m));
            }
        }
    }
    println!("{decoded} mutated messages decoded, {rejected} rejected with a typed error");
    assert!(
        decoded > 10_000,
        "mutations too destructive to test decoding"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
