//! AS_PATH and AS4_PATH values (RFC 4271 §4.3 and §5.1.2, RFC 5065
//! confederation segments, RFC 6793 4-octet AS) and the RFC 6793 §4.2.3
//! merge that rebuilds the 4-octet path on 2-octet sessions.
//!
//! Wire decoding and encoding of these live with the other attributes in
//! [`super::attribute`]; this module holds the values and the logic on them.

use std::fmt;

use super::open::Asn;

/// AS_PATH segment type (RFC 4271 §4.3, RFC 5065 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentType {
    /// 1: unordered set of ASes.
    Set,
    /// 2: ordered sequence of ASes.
    Sequence,
    /// 3: ordered confederation member ASes (RFC 5065).
    ConfedSequence,
    /// 4: unordered confederation member ASes (RFC 5065).
    ConfedSet,
}

impl SegmentType {
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Set),
            2 => Some(Self::Sequence),
            3 => Some(Self::ConfedSequence),
            4 => Some(Self::ConfedSet),
            _ => None,
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Self::Set => 1,
            Self::Sequence => 2,
            Self::ConfedSequence => 3,
            Self::ConfedSet => 4,
        }
    }

    /// Whether this is a confederation segment.
    pub fn is_confed(self) -> bool {
        matches!(self, Self::ConfedSequence | Self::ConfedSet)
    }
}

/// One AS_PATH segment.
///
/// ```text
/// +-----------------+------------------+-------------------------+
/// | segment type (1)| segment length(1)| ASes (2 or 4 octets each)|
/// +-----------------+------------------+-------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsSegment {
    /// Segment type.
    pub kind: SegmentType,
    /// The ASes; one segment holds at most 255 on the wire, the encoder
    /// splits longer ones, and skips empty ones.
    pub asns: Vec<Asn>,
}

/// AS_PATH or AS4_PATH (RFC 4271 §5.1.2, RFC 6793).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    /// Segments in order, leftmost (most recent) first.
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// A path made of one AS_SEQUENCE (empty path if `asns` is empty).
    pub fn from_sequence(asns: impl IntoIterator<Item = Asn>) -> Self {
        let asns: Vec<Asn> = asns.into_iter().collect();
        if asns.is_empty() {
            return Self::default();
        }
        Self {
            segments: vec![AsSegment {
                kind: SegmentType::Sequence,
                asns,
            }],
        }
    }

    /// Path length for route selection (RFC 4271 §9.1.2.2 a): each AS in
    /// a sequence counts 1, an AS_SET counts 1, confederation segments 0.
    pub fn path_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentType::Sequence => s.asns.len(),
                SegmentType::Set => usize::from(!s.asns.is_empty()),
                SegmentType::ConfedSequence | SegmentType::ConfedSet => 0,
            })
            .sum()
    }

    /// Whether `asn` appears anywhere (loop detection, RFC 4271 §9.1.2).
    pub fn contains(&self, asn: Asn) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// The leftmost AS of the first AS_SEQUENCE, if the path starts with
    /// one (the neighbour AS, RFC 4271 §9.1.2.2 c).
    pub fn first_asn(&self) -> Option<Asn> {
        match self.segments.first() {
            Some(s) if s.kind == SegmentType::Sequence => s.asns.first().copied(),
            _ => None,
        }
    }

    /// Prepend `asn` (RFC 4271 §5.1.2 for eBGP export).
    pub fn prepend(&mut self, asn: Asn) {
        match self.segments.first_mut() {
            Some(s) if s.kind == SegmentType::Sequence && s.asns.len() < 255 => {
                s.asns.insert(0, asn);
            }
            _ => self.segments.insert(
                0,
                AsSegment {
                    kind: SegmentType::Sequence,
                    asns: vec![asn],
                },
            ),
        }
    }

    /// Whether any AS needs four octets.
    pub fn has_four_octet_asn(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.asns.iter().any(|a| !a.is_two_octet()))
    }
}

impl fmt::Display for AsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.segments {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let (open, close) = match s.kind {
                SegmentType::Sequence => ("", ""),
                SegmentType::Set => ("{", "}"),
                SegmentType::ConfedSequence => ("(", ")"),
                SegmentType::ConfedSet => ("[", "]"),
            };
            f.write_str(open)?;
            for (i, a) in s.asns.iter().enumerate() {
                if i > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{}", a.0)?;
            }
            f.write_str(close)?;
        }
        Ok(())
    }
}

/// Count of ASes in the sense of RFC 6793 §4.2.3 (same as path length).
fn as_count(p: &AsPath) -> usize {
    p.path_len()
}

/// Rebuild the 4-octet AS path from AS_PATH and AS4_PATH (RFC 6793
/// §4.2.3), for UPDATEs received on a 2-octet session.
///
/// If AS_PATH holds fewer ASes than AS4_PATH, AS4_PATH is ignored.
/// Otherwise the leading ASes of AS_PATH that AS4_PATH lacks (those added
/// by 2-octet-only speakers) are prepended to AS4_PATH, together with
/// confederation segments that lead or adjoin them.
pub fn merge_as4_path(as_path: &AsPath, as4_path: &AsPath) -> AsPath {
    let n = as_count(as_path);
    let n4 = as_count(as4_path);
    if n < n4 {
        return as_path.clone();
    }
    let mut need = n - n4;
    let mut out: Vec<AsSegment> = Vec::new();
    for seg in &as_path.segments {
        if need == 0 {
            // Leading or adjacent confederation segments come along.
            if seg.kind.is_confed() {
                out.push(seg.clone());
                continue;
            }
            break;
        }
        match seg.kind {
            SegmentType::Sequence => {
                let take = need.min(seg.asns.len());
                out.push(AsSegment {
                    kind: SegmentType::Sequence,
                    asns: seg.asns.iter().take(take).copied().collect(),
                });
                need -= take;
            }
            SegmentType::Set => {
                out.push(seg.clone());
                need -= 1;
            }
            SegmentType::ConfedSequence | SegmentType::ConfedSet => out.push(seg.clone()),
        }
    }
    for seg in &as4_path.segments {
        // Join two sequences at the seam so the path reads as one.
        if let Some(last) = out.last_mut() {
            if last.kind == SegmentType::Sequence
                && seg.kind == SegmentType::Sequence
                && last.asns.len() + seg.asns.len() <= 255
            {
                last.asns.extend_from_slice(&seg.asns);
                continue;
            }
        }
        out.push(seg.clone());
    }
    out.retain(|s| !s.asns.is_empty());
    AsPath { segments: out }
}
