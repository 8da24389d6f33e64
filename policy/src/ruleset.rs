//! The ruleset IR: what the compiler produces and the renderers, `diff` and
//! `explain` consume.
//!
//! One filter table per address family (chains in a `BTreeMap`, so order is
//! deterministic) plus the ipsets of both families. A chain never embeds a
//! pod IP: pod membership lives only in sets, so a pod relabelled or added
//! changes sets and leaves chains alone. Rules are a small, closed set of
//! iptables matches so `explain` can evaluate them exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::naming::Direction;

/// Address family of a ruleset or set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub(crate) fn digit(self) -> char {
        match self {
            Family::V4 => '4',
            Family::V6 => '6',
        }
    }

    /// The `family` argument of `ipset create`.
    pub fn ipset_family(self) -> &'static str {
        match self {
            Family::V4 => "inet",
            Family::V6 => "inet6",
        }
    }
}

/// Transport protocol of a NetworkPolicy port (the API's TCP, UDP, SCTP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// Parses the API spelling ("TCP", "UDP", "SCTP"; case-sensitive as the API).
    pub fn from_api(s: &str) -> Option<Protocol> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The builtin chains tortie hooks into, each with one jump to its own chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BuiltinChain {
    Forward,
    Input,
    Output,
}

impl BuiltinChain {
    pub const ALL: [BuiltinChain; 3] = [
        BuiltinChain::Forward,
        BuiltinChain::Input,
        BuiltinChain::Output,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BuiltinChain::Forward => "FORWARD",
            BuiltinChain::Input => "INPUT",
            BuiltinChain::Output => "OUTPUT",
        }
    }

    /// tortie's chain the builtin chain jumps to.
    pub fn target(self) -> &'static str {
        match self {
            BuiltinChain::Forward => "TORT-FORWARD",
            BuiltinChain::Input => "TORT-INPUT",
            BuiltinChain::Output => "TORT-OUTPUT",
        }
    }

    /// Arguments for `iptables -w -t filter -C <these>` to check the jump exists.
    pub fn check_args(self) -> [&'static str; 3] {
        [self.name(), "-j", self.target()]
    }
}

/// Interface match: exact name, or a prefix (`tort+` in iptables syntax).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Iface {
    Exact(String),
    Prefix(String),
}

impl Iface {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Iface::Exact(n) => n == name,
            Iface::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for Iface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Iface::Exact(n) => f.write_str(n),
            Iface::Prefix(p) => write!(f, "{p}+"),
        }
    }
}

/// Conntrack states tortie matches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CtState {
    New,
    Established,
    Related,
    Invalid,
}

impl CtState {
    pub fn as_str(self) -> &'static str {
        match self {
            CtState::New => "NEW",
            CtState::Established => "ESTABLISHED",
            CtState::Related => "RELATED",
            CtState::Invalid => "INVALID",
        }
    }
}

/// Which packet address a set match looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Addr {
    Src,
    Dst,
}

impl Addr {
    pub fn as_str(self) -> &'static str {
        match self {
            Addr::Src => "src",
            Addr::Dst => "dst",
        }
    }
}

/// One iptables match. All matches of a rule must hold (AND).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Match {
    InIface(Iface),
    OutIface(Iface),
    CtState(Vec<CtState>),
    /// `-p <proto>`, optionally with `--dport first[:last]`.
    Proto {
        protocol: Protocol,
        ports: Option<(u16, u16)>,
    },
    /// `-m set --match-set <set> src|dst` on a `hash:ip`/`hash:net` set.
    Set {
        set: String,
        addr: Addr,
    },
    /// `-m set --match-set <set> dst,dst` on a `hash:ip,port` set: the
    /// destination address and (protocol, destination port) of the packet.
    DstIpPortSet {
        set: String,
    },
    /// `-m mark --mark value/mask`.
    Mark {
        value: u32,
        mask: u32,
    },
}

/// What a rule does when it matches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Accept,
    Drop,
    Return,
    /// `-j CHAIN`: call, come back on RETURN / end of chain.
    Jump(String),
    /// `-g CHAIN`: RETURN from CHAIN returns to our caller.
    Goto(String),
    /// `-j MARK --set-xmark value/mask`, then continue.
    SetMark {
        value: u32,
        mask: u32,
    },
}

/// Why a rule exists, for `explain` and the rendered comment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Note {
    /// Rule `index` of the ingress/egress list of policy `namespace/name`.
    PolicyRule {
        namespace: String,
        name: String,
        direction: Direction,
        index: usize,
    },
    /// Jump from a workload chain to a selecting policy's chain.
    PolicyJump { namespace: String, name: String },
    /// The workload is isolated and nothing allowed the packet.
    DefaultDeny {
        namespace: String,
        pod: String,
        direction: Direction,
    },
    /// No policy isolates the workload in this direction.
    NotIsolated {
        namespace: String,
        pod: String,
        direction: Direction,
    },
    /// A `tort` interface without a known pod, or one not yet dispatched.
    UnknownInterface { interface: Option<String> },
    /// Conntrack: replies of allowed flows, or INVALID drops.
    Conntrack,
    /// The pod's own node may always reach it (NetworkPolicy API).
    HostToPod,
    /// Plain plumbing (dispatch, mark reset, mark check).
    Plumbing,
}

/// One rule: matches, action, why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub action: Action,
    pub note: Note,
}

/// A user chain in the filter table.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Chain {
    pub rules: Vec<Rule>,
}

/// tortie's part of one family's filter table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// All chains tortie owns in this family, by name.
    pub chains: BTreeMap<String, Chain>,
}

/// Type of an ipset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetKind {
    /// Pod IPs of a peer selector.
    HashIp,
    /// An ipBlock: cidr entries and `nomatch` entries for its excepts.
    HashNet,
    /// (pod IP, protocol:port) of a named port.
    HashIpPort,
}

impl SetKind {
    pub fn ipset_type(self) -> &'static str {
        match self {
            SetKind::HashIp => "hash:ip",
            SetKind::HashNet => "hash:net",
            SetKind::HashIpPort => "hash:ip,port",
        }
    }
}

/// One ipset member.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetEntry {
    Ip(IpAddr),
    /// `nomatch`: an excepted range inside the block; the most specific
    /// entry wins in a `hash:net` lookup, so a packet in it does not match.
    Net {
        net: IpNet,
        nomatch: bool,
    },
    IpPort {
        ip: IpAddr,
        protocol: Protocol,
        port: u16,
    },
}

/// An ipset with its full desired membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpSet {
    pub family: Family,
    pub kind: SetKind,
    /// Human text of what the set holds (selector / cidr / port name), used
    /// in goldens and `explain`; never rendered into the kernel.
    pub describe: String,
    pub entries: BTreeSet<SetEntry>,
}

/// The compiled dataplane for one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub v4: Table,
    pub v6: Table,
    /// Sets of both families, by name (names carry the family digit).
    pub sets: BTreeMap<String, IpSet>,
}

impl Ruleset {
    pub fn table(&self, family: Family) -> &Table {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    pub fn table_mut(&mut self, family: Family) -> &mut Table {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    /// The sets of one family, by name.
    pub fn sets_of(&self, family: Family) -> impl Iterator<Item = (&String, &IpSet)> {
        self.sets.iter().filter(move |(_, s)| s.family == family)
    }
}

/// The bit tortie's policy chains set on a packet they allow; a workload
/// chain checks it after each policy chain returns. Bit 16, clear of
/// kube-proxy's 0x4000/0x8000.
pub const ACCEPT_MARK: u32 = 0x0001_0000;
