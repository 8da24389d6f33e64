//! Our OPEN, the checks on the peer's OPEN (RFC 4271 §6.2, RFC 6286,
//! RFC 5492 §5) and what the two OPENs negotiate (RFC 4760, RFC 6793,
//! RFC 2918, RFC 7313, RFC 4724, RFC 7911, RFC 8654).
//!
//! Pure functions of the peer configuration and the two OPEN messages. The
//! codec already refuses what is wrong with an OPEN on its own (version,
//! hold time 1 or 2, identifier 0.0.0.0, AS 0); the checks are repeated
//! here because they are cheap and keep this module correct for OPENs built
//! by hand. What only configuration can decide (peer AS, iBGP identifier
//! clash, minimum hold time, required capabilities) is decided only here.

use std::fmt;
use std::time::Duration;

use crate::wire::capability::{
    code, AddPathFamily, AddPathMode, Capability, GracefulRestart, GracefulRestartFamily,
};
use crate::wire::context::{Family, SessionContext};
use crate::wire::notification::{Notification, OpenSubcode};
use crate::wire::open::{Asn, HoldTime, Open, RouterId};

use super::config::{PeerAs, PeerConfig};

/// The only BGP version we speak.
pub const BGP_VERSION: u8 = 4;

/// The legacy (pre-RFC 2918) route refresh capability code some routers
/// still send alongside or instead of code 2.
const ROUTE_REFRESH_CISCO: u8 = 128;

/// Families the codec parses; an MP capability for anything else is
/// ignored rather than negotiated, so we never accept NLRI we cannot read.
const SUPPORTED_FAMILIES: [Family; 4] = [
    Family::IPV4_UNICAST,
    Family::IPV4_MULTICAST,
    Family::IPV6_UNICAST,
    Family::IPV6_MULTICAST,
];

/// Builds the OPEN we send to this peer.
///
/// Capabilities, in a fixed order so OPENs are byte-stable for goldens:
/// one Multiprotocol per configured family, route refresh, enhanced route
/// refresh, 4-octet AS (always sent when our AS needs it), graceful
/// restart, ADD-PATH, extended message.
pub fn local_open(config: &PeerConfig) -> Open {
    let mut caps = Vec::new();
    let mut families = config.families.clone();
    families.sort();
    families.dedup();
    caps.extend(families.iter().copied().map(Capability::Multiprotocol));
    if config.route_refresh {
        caps.push(Capability::RouteRefresh);
    }
    if config.enhanced_route_refresh {
        caps.push(Capability::EnhancedRouteRefresh);
    }
    if config.four_octet_as || !config.local_as.is_two_octet() {
        caps.push(Capability::FourOctetAs(config.local_as));
    }
    if let Some(gr) = &config.graceful_restart {
        caps.push(Capability::GracefulRestart(GracefulRestart {
            restart_state: gr.restarting,
            notification: gr.notification,
            restart_time: gr.restart_time.min(0x0fff),
            families: families
                .iter()
                .map(|&family| GracefulRestartFamily {
                    family,
                    forwarding_preserved: gr.forwarding_preserved.contains(&family),
                })
                .collect(),
        }));
    }
    let add_path: Vec<AddPathFamily> = families
        .iter()
        .filter_map(|&family| {
            let recv = config.add_path_receive.contains(&family);
            let send = config.add_path_send.contains(&family);
            let mode = match (recv, send) {
                (true, true) => AddPathMode::Both,
                (true, false) => AddPathMode::Receive,
                (false, true) => AddPathMode::Send,
                (false, false) => return None,
            };
            Some(AddPathFamily { family, mode })
        })
        .collect();
    if !add_path.is_empty() {
        caps.push(Capability::AddPath(add_path));
    }
    if config.extended_message {
        caps.push(Capability::ExtendedMessage);
    }
    Open {
        version: BGP_VERSION,
        my_as: config.local_as.to_two_octet(),
        hold_time: config.hold_time,
        router_id: config.router_id,
        capabilities: caps,
    }
}

/// Why we refuse the peer's OPEN. Each maps to the NOTIFICATION that
/// RFC 4271 §6.2 (or RFC 5492 §5) prescribes, see
/// [`OpenError::notification`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The peer speaks another BGP version.
    #[error("peer speaks BGP version {version}, we support only version 4")]
    UnsupportedVersion {
        /// Version in the peer's OPEN.
        version: u8,
    },
    /// The peer's AS is not the configured one.
    #[error("peer says it is {received}, configured peer AS is {expected}")]
    BadPeerAs {
        /// AS the peer sent (from the 4-octet AS capability if present).
        received: Asn,
        /// What configuration accepts.
        expected: PeerAs,
    },
    /// Hold time 1 or 2, or below our configured minimum.
    #[error("peer proposes a hold time of {hold_time} s, we accept 0 or at least {min} s")]
    UnacceptableHoldTime {
        /// The peer's hold time, seconds.
        hold_time: u16,
        /// The smallest non-zero value we accept.
        min: u16,
    },
    /// Identifier 0.0.0.0, or our own on an iBGP session (RFC 6286 §2.2).
    #[error("peer's BGP identifier {id} is not acceptable: {why}")]
    BadBgpIdentifier {
        /// The peer's identifier.
        id: RouterId,
        /// Why.
        why: &'static str,
    },
    /// The peer lacks capabilities configured as required.
    #[error("peer does not advertise required capabilities {}", fmt_codes(.missing))]
    MissingCapabilities {
        /// Capability codes missing.
        missing: Vec<u8>,
        /// NOTIFICATION data: those capabilities as we advertise them.
        data: Vec<u8>,
    },
}

fn fmt_codes(codes: &[u8]) -> String {
    let names: Vec<String> = codes.iter().map(|c| capability_name(*c)).collect();
    names.join(", ")
}

/// A capability code for people: `"4-octet AS (65)"`.
pub fn capability_name(c: u8) -> String {
    let name = match c {
        code::MULTIPROTOCOL => "multiprotocol",
        code::ROUTE_REFRESH => "route refresh",
        code::EXTENDED_MESSAGE => "extended message",
        code::GRACEFUL_RESTART => "graceful restart",
        code::FOUR_OCTET_AS => "4-octet AS",
        code::ADD_PATH => "ADD-PATH",
        code::ENHANCED_ROUTE_REFRESH => "enhanced route refresh",
        _ => return format!("capability {c}"),
    };
    format!("{name} ({c})")
}

impl OpenError {
    /// The NOTIFICATION to send before closing.
    pub fn notification(&self) -> Notification {
        match self {
            // RFC 4271 §6.2: the data is the largest locally supported
            // version, as a 2-octet unsigned integer.
            OpenError::UnsupportedVersion { .. } => Notification::open(
                OpenSubcode::UnsupportedVersionNumber,
                u16::from(BGP_VERSION).to_be_bytes().to_vec(),
            ),
            OpenError::BadPeerAs { .. } => Notification::open(OpenSubcode::BadPeerAs, Vec::new()),
            OpenError::UnacceptableHoldTime { .. } => {
                Notification::open(OpenSubcode::UnacceptableHoldTime, Vec::new())
            }
            OpenError::BadBgpIdentifier { .. } => {
                Notification::open(OpenSubcode::BadBgpIdentifier, Vec::new())
            }
            OpenError::MissingCapabilities { data, .. } => {
                Notification::open(OpenSubcode::UnsupportedCapability, data.clone())
            }
        }
    }
}

/// The peer's graceful restart capability, restricted to the families the
/// session negotiated (RFC 4724 §3, RFC 8538).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGracefulRestart {
    /// R bit: the peer has just restarted (it will send End-of-RIB).
    pub restarting: bool,
    /// N bit: the peer also supports graceful restart after NOTIFICATIONs.
    pub notification: bool,
    /// How long to keep the peer's routes after its session drops.
    pub restart_time: Duration,
    /// Negotiated families the peer covers, with their F bits (forwarding
    /// state kept across its restart).
    pub families: Vec<GracefulRestartFamily>,
}

/// What two OPENs agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's real AS (from the 4-octet AS capability when present).
    pub peer_as: Asn,
    /// The peer's BGP Identifier.
    pub peer_id: RouterId,
    /// Same AS on both sides.
    pub ibgp: bool,
    /// The smaller of the two hold times; 0 = no hold timer, no keepalives.
    pub hold_time: HoldTime,
    /// Interval between our KEEPALIVEs (before jitter); `None` when the
    /// hold time is 0.
    pub keepalive: Option<Duration>,
    /// Families both sides advertised (sorted). A side without any
    /// Multiprotocol capability counts as IPv4 unicast only (RFC 4760 §8).
    pub families: Vec<Family>,
    /// Both sides speak 4-octet AS (RFC 6793).
    pub four_octet_as: bool,
    /// Both sides advertised route refresh (RFC 2918; the peer's legacy
    /// code 128 counts).
    pub route_refresh: bool,
    /// Both sides advertised enhanced route refresh (RFC 7313).
    pub enhanced_route_refresh: bool,
    /// Both sides advertised extended messages (RFC 8654): 65535 octets.
    pub extended_message: bool,
    /// Families we receive with ADD-PATH identifiers (sorted).
    pub add_path_receive: Vec<Family>,
    /// Families we send with ADD-PATH identifiers (sorted).
    pub add_path_send: Vec<Family>,
    /// We advertised graceful restart.
    pub local_graceful_restart: bool,
    /// We advertised the N bit (RFC 8538).
    pub local_graceful_notification: bool,
    /// The peer advertised graceful restart.
    pub peer_graceful_restart: Option<PeerGracefulRestart>,
    /// What the codec needs to decode and encode this session's messages.
    pub context: SessionContext,
}

impl Negotiated {
    /// The context to decode the peer's messages with.
    pub fn decode_context(&self) -> SessionContext {
        self.context
    }

    /// The context to encode our messages with (the same negotiated
    /// facts; ADD-PATH direction is already resolved inside it).
    pub fn encode_context(&self) -> SessionContext {
        self.context
    }

    /// Whether the peer's routes should be kept as stale when the session
    /// drops for `cause` (RFC 4724 §4.2, RFC 8538 §4): the peer must
    /// support graceful restart, and a NOTIFICATION (either way) only
    /// qualifies when both sides set the N bit and it is not a Hard Reset.
    pub fn retains_routes_after(&self, notification: Option<&Notification>) -> Option<Duration> {
        let gr = self.peer_graceful_restart.as_ref()?;
        if let Some(n) = notification {
            let hard_reset = n.code == crate::wire::notification::ErrorCode::Cease
                && n.subcode == u8::from(crate::wire::notification::CeaseSubcode::HardReset);
            if !(gr.notification && self.local_graceful_notification) || hard_reset {
                return None;
            }
        }
        Some(gr.restart_time)
    }
}

impl fmt::Display for Negotiated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fams: Vec<String> = self.families.iter().map(Family::to_string).collect();
        write!(
            f,
            "{} {} id {}, hold {} s, families [{}]",
            if self.ibgp { "iBGP" } else { "eBGP" },
            self.peer_as,
            self.peer_id,
            self.hold_time.0,
            fams.join(", ")
        )?;
        let flags = [
            (self.four_octet_as, "4-octet-as"),
            (self.route_refresh, "route-refresh"),
            (self.enhanced_route_refresh, "enhanced-route-refresh"),
            (self.extended_message, "extended-message"),
            (!self.add_path_receive.is_empty(), "add-path-rx"),
            (!self.add_path_send.is_empty(), "add-path-tx"),
            (self.peer_graceful_restart.is_some(), "graceful-restart"),
        ];
        for (on, name) in flags {
            if on {
                write!(f, ", {name}")?;
            }
        }
        Ok(())
    }
}

fn has(open: &Open, c: u8) -> bool {
    open.capabilities.iter().any(|cap| cap.code() == c)
}

/// The families an OPEN advertises: its Multiprotocol capabilities, or
/// IPv4 unicast when it has none (RFC 4760 §8 / RFC 4271 behaviour).
pub fn advertised_families(open: &Open) -> Vec<Family> {
    let mut fams: Vec<Family> = open
        .capabilities
        .iter()
        .filter_map(|c| match c {
            Capability::Multiprotocol(f) => Some(*f),
            _ => None,
        })
        .collect();
    if fams.is_empty() {
        fams.push(Family::IPV4_UNICAST);
    }
    fams.sort();
    fams.dedup();
    fams
}

/// Checks the peer's OPEN against our configuration and negotiates the
/// session with our own OPEN (`local`, as built by [`local_open`]).
///
/// Checks run in RFC 4271 §6.2 order (version, AS, hold time, identifier),
/// then RFC 5492 §5 required capabilities; the first failure wins.
pub fn negotiate(
    config: &PeerConfig,
    local: &Open,
    remote: &Open,
) -> Result<Negotiated, OpenError> {
    if remote.version != BGP_VERSION {
        return Err(OpenError::UnsupportedVersion {
            version: remote.version,
        });
    }
    let peer_as = remote.asn();
    if peer_as.0 == 0 || !config.peer_as.accepts(peer_as) {
        return Err(OpenError::BadPeerAs {
            received: peer_as,
            expected: config.peer_as.clone(),
        });
    }
    let min = config.min_hold_time.max(3);
    let peer_hold = remote.hold_time.0;
    if peer_hold != 0 && peer_hold < min {
        return Err(OpenError::UnacceptableHoldTime {
            hold_time: peer_hold,
            min,
        });
    }
    let ibgp = config.is_ibgp(peer_as);
    if remote.router_id.0.is_unspecified() {
        return Err(OpenError::BadBgpIdentifier {
            id: remote.router_id,
            why: "it is 0.0.0.0",
        });
    }
    if ibgp && remote.router_id == config.router_id {
        return Err(OpenError::BadBgpIdentifier {
            id: remote.router_id,
            why: "it equals ours on an iBGP session (RFC 6286)",
        });
    }
    let missing: Vec<u8> = config
        .required_capabilities
        .iter()
        .copied()
        .filter(|c| !has(remote, *c))
        .collect();
    if !missing.is_empty() {
        let mut data = Vec::new();
        for c in &missing {
            // RFC 5492 §5: list each capability as it would appear in OPEN.
            match local.capabilities.iter().find(|cap| cap.code() == *c) {
                Some(cap) if cap.value_len() <= 255 => {
                    data.push(*c);
                    data.push(u8::try_from(cap.value_len()).unwrap_or(u8::MAX));
                    cap.encode_value(&mut data);
                }
                _ => data.extend_from_slice(&[*c, 0]),
            }
        }
        return Err(OpenError::MissingCapabilities { missing, data });
    }

    let hold_time = HoldTime(local.hold_time.0.min(peer_hold));
    let keepalive = match hold_time.0 {
        0 => None,
        h => {
            let third = (h / 3).max(1);
            let k = match config.keepalive {
                Some(k) if k > 0 && k < third => k,
                _ => third,
            };
            Some(Duration::from_secs(u64::from(k)))
        }
    };

    let ours = advertised_families(local);
    let theirs = advertised_families(remote);
    let families: Vec<Family> = ours
        .iter()
        .copied()
        .filter(|f| theirs.contains(f) && SUPPORTED_FAMILIES.contains(f))
        .collect();

    let context = SessionContext::negotiate(local, remote);
    let add_path_receive = SUPPORTED_FAMILIES
        .iter()
        .copied()
        .filter(|f| families.contains(f) && context.receives_path_ids(*f))
        .collect();
    let add_path_send = SUPPORTED_FAMILIES
        .iter()
        .copied()
        .filter(|f| families.contains(f) && context.sends_path_ids(*f))
        .collect();

    let peer_graceful_restart = remote.capabilities.iter().find_map(|c| match c {
        Capability::GracefulRestart(gr) => Some(PeerGracefulRestart {
            restarting: gr.restart_state,
            notification: gr.notification,
            restart_time: Duration::from_secs(u64::from(gr.restart_time)),
            families: gr
                .families
                .iter()
                .copied()
                .filter(|f| families.contains(&f.family))
                .collect(),
        }),
        _ => None,
    });
    let local_gr = local.capabilities.iter().find_map(|c| match c {
        Capability::GracefulRestart(gr) => Some(gr),
        _ => None,
    });

    Ok(Negotiated {
        peer_as,
        peer_id: remote.router_id,
        ibgp,
        hold_time,
        keepalive,
        families,
        four_octet_as: context.four_octet_as,
        route_refresh: has(local, code::ROUTE_REFRESH)
            && (has(remote, code::ROUTE_REFRESH) || has(remote, ROUTE_REFRESH_CISCO)),
        enhanced_route_refresh: has(local, code::ENHANCED_ROUTE_REFRESH)
            && has(remote, code::ENHANCED_ROUTE_REFRESH),
        extended_message: context.extended_message,
        add_path_receive,
        add_path_send,
        local_graceful_restart: local_gr.is_some(),
        local_graceful_notification: local_gr.is_some_and(|g| g.notification),
        peer_graceful_restart,
        context,
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::wire::capability::AddPathMode;
    use crate::wire::notification::ErrorCode;

    fn rid(last: u8) -> RouterId {
        RouterId(Ipv4Addr::new(192, 0, 2, last))
    }

    fn cfg(local: u32, peer: u32, id: u8) -> PeerConfig {
        PeerConfig::new(Asn(local), Asn(peer), rid(id))
    }

    /// Negotiates `a`'s view of a session with `b`.
    fn pair(a: &PeerConfig, b: &PeerConfig) -> Result<Negotiated, OpenError> {
        negotiate(a, &local_open(a), &local_open(b))
    }

    fn open_subcode(e: &OpenError) -> (ErrorCode, u8, Vec<u8>) {
        let n = e.notification();
        (n.code, n.subcode, n.data)
    }

    #[test]
    fn plain_ebgp_session() {
        let a = cfg(65001, 65002, 1);
        let b = cfg(65002, 65001, 2);
        let n = pair(&a, &b).expect("negotiates");
        assert_eq!(n.peer_as, Asn(65002));
        assert_eq!(n.peer_id, rid(2));
        assert!(!n.ibgp);
        assert_eq!(n.hold_time, HoldTime(90));
        assert_eq!(n.keepalive, Some(Duration::from_secs(30)));
        assert_eq!(n.families, vec![Family::IPV4_UNICAST]);
        assert!(n.four_octet_as && n.route_refresh);
        assert!(!n.extended_message && !n.enhanced_route_refresh);
        assert!(n.context.four_octet_as);
    }

    #[test]
    fn hold_time_is_the_smaller_and_keepalive_a_third() {
        let mut a = cfg(65001, 65002, 1);
        let mut b = cfg(65002, 65001, 2);
        a.hold_time = HoldTime(30);
        b.hold_time = HoldTime(240);
        let n = pair(&a, &b).expect("negotiates");
        assert_eq!(n.hold_time, HoldTime(30));
        assert_eq!(n.keepalive, Some(Duration::from_secs(10)));
        // A configured keepalive wins only when smaller than a third.
        a.keepalive = Some(3);
        assert_eq!(
            pair(&a, &b).expect("ok").keepalive,
            Some(Duration::from_secs(3))
        );
        a.keepalive = Some(20);
        assert_eq!(
            pair(&a, &b).expect("ok").keepalive,
            Some(Duration::from_secs(10))
        );
        // Hold time 3: keepalive 1 s.
        a.hold_time = HoldTime(3);
        a.keepalive = None;
        assert_eq!(
            pair(&a, &b).expect("ok").keepalive,
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn hold_time_zero_on_either_side_disables_keepalives() {
        let mut a = cfg(65001, 65002, 1);
        let b = cfg(65002, 65001, 2);
        a.hold_time = HoldTime(0);
        let n = pair(&a, &b).expect("negotiates");
        assert_eq!((n.hold_time, n.keepalive), (HoldTime(0), None));
        let n = pair(&b, &a).expect("negotiates");
        assert_eq!((n.hold_time, n.keepalive), (HoldTime(0), None));
    }

    #[test]
    fn unacceptable_hold_times() {
        let a = cfg(65001, 65002, 1);
        for h in [1u16, 2] {
            let mut remote = local_open(&cfg(65002, 65001, 2));
            remote.hold_time = HoldTime(h);
            let e = negotiate(&a, &local_open(&a), &remote).expect_err("refused");
            assert_eq!(
                open_subcode(&e),
                (
                    ErrorCode::OpenMessage,
                    OpenSubcode::UnacceptableHoldTime as u8,
                    vec![]
                )
            );
        }
        // A configured minimum refuses short, non-zero hold times only.
        let mut strict = a.clone();
        strict.min_hold_time = 9;
        let mut remote = local_open(&cfg(65002, 65001, 2));
        remote.hold_time = HoldTime(6);
        let e = negotiate(&strict, &local_open(&strict), &remote).expect_err("refused");
        assert!(e.to_string().contains("at least 9 s"), "{e}");
        remote.hold_time = HoldTime(0);
        assert!(negotiate(&strict, &local_open(&strict), &remote).is_ok());
        remote.hold_time = HoldTime(9);
        assert!(negotiate(&strict, &local_open(&strict), &remote).is_ok());
    }

    #[test]
    fn bad_peer_as() {
        let a = cfg(65001, 65002, 1);
        let b = cfg(65003, 65001, 2);
        let e = pair(&a, &b).expect_err("refused");
        assert_eq!(
            open_subcode(&e),
            (ErrorCode::OpenMessage, OpenSubcode::BadPeerAs as u8, vec![])
        );
        assert_eq!(
            e.to_string(),
            "peer says it is AS65003, configured peer AS is AS65002"
        );
    }

    #[test]
    fn peer_as_any_and_range() {
        let mut a = cfg(65001, 1, 1);
        let b = cfg(65003, 65001, 2);
        a.peer_as = PeerAs::Any;
        assert_eq!(pair(&a, &b).expect("any").peer_as, Asn(65003));
        a.peer_as = PeerAs::Range(Asn(65000)..=Asn(65010));
        assert!(pair(&a, &b).is_ok());
        a.peer_as = PeerAs::Range(Asn(64512)..=Asn(64999));
        assert!(matches!(pair(&a, &b), Err(OpenError::BadPeerAs { .. })));
    }

    #[test]
    fn unsupported_version_carries_our_version() {
        let a = cfg(65001, 65002, 1);
        let mut remote = local_open(&cfg(65002, 65001, 2));
        remote.version = 5;
        let e = negotiate(&a, &local_open(&a), &remote).expect_err("refused");
        assert_eq!(
            open_subcode(&e),
            (
                ErrorCode::OpenMessage,
                OpenSubcode::UnsupportedVersionNumber as u8,
                vec![0, 4]
            )
        );
    }

    #[test]
    fn bgp_identifier_rules() {
        // 0.0.0.0 is never acceptable.
        let a = cfg(65001, 65002, 1);
        let mut remote = local_open(&cfg(65002, 65001, 2));
        remote.router_id = RouterId(Ipv4Addr::UNSPECIFIED);
        let e = negotiate(&a, &local_open(&a), &remote).expect_err("refused");
        assert_eq!(open_subcode(&e).1, OpenSubcode::BadBgpIdentifier as u8);
        // Our own identifier: an error on iBGP (RFC 6286 §2.2) ...
        let ibgp = cfg(65001, 65001, 1);
        let e = pair(&ibgp, &cfg(65001, 65001, 1)).expect_err("refused");
        assert_eq!(open_subcode(&e).1, OpenSubcode::BadBgpIdentifier as u8);
        // ... but allowed on eBGP.
        assert!(pair(&cfg(65001, 65002, 1), &cfg(65002, 65001, 1)).is_ok());
    }

    #[test]
    fn four_octet_as_on_one_side_only() {
        // We are AS 4200000001; the peer is an OLD speaker (no capability).
        let mut big = cfg(4_200_000_001, 65002, 1);
        big.four_octet_as = false; // forced on anyway: our AS needs it
        let open = local_open(&big);
        assert_eq!(open.my_as, 23456);
        assert!(open
            .capabilities
            .contains(&Capability::FourOctetAs(Asn(4_200_000_001))));

        let mut old = cfg(65002, 4_200_000_001, 2);
        old.four_octet_as = false;
        let old_open = local_open(&old);
        assert!(!old_open
            .capabilities
            .iter()
            .any(|c| c.code() == code::FOUR_OCTET_AS));

        // We see the old speaker's 2-octet AS; no 4-octet AS on the wire.
        let n = negotiate(&big, &open, &old_open).expect("negotiates");
        assert_eq!(n.peer_as, Asn(65002));
        assert!(!n.four_octet_as && !n.context.four_octet_as);
        // The old speaker sees AS_TRANS: if configured with our real AS it
        // refuses us, as RFC 6793 §4.2.1 makes it (Bad Peer AS) ...
        let e = negotiate(&old, &old_open, &open);
        // ... except that our OPEN also carries the capability, which an
        // implementation that reads it (like ours) honours.
        assert_eq!(e.expect("capability read").peer_as, Asn(4_200_000_001));
        let mut trans_only = open.clone();
        trans_only
            .capabilities
            .retain(|c| c.code() != code::FOUR_OCTET_AS);
        let e = negotiate(&old, &old_open, &trans_only).expect_err("AS_TRANS is not the peer AS");
        assert!(matches!(
            e,
            OpenError::BadPeerAs {
                received: Asn(23456),
                ..
            }
        ));
    }

    #[test]
    fn families_intersect_and_default_to_ipv4_unicast() {
        let mut a = cfg(65001, 65002, 1);
        let mut b = cfg(65002, 65001, 2);
        a.families = vec![Family::IPV6_UNICAST, Family::IPV4_UNICAST];
        b.families = vec![Family::IPV6_UNICAST, Family::IPV4_MULTICAST];
        assert_eq!(
            pair(&a, &b).expect("ok").families,
            vec![Family::IPV6_UNICAST]
        );
        // A peer with no MP capability at all is IPv4 unicast only.
        let mut remote = local_open(&b);
        remote
            .capabilities
            .retain(|c| c.code() != code::MULTIPROTOCOL);
        let n = negotiate(&a, &local_open(&a), &remote).expect("ok");
        assert_eq!(n.families, vec![Family::IPV4_UNICAST]);
        // Disjoint families still establish, with nothing to exchange.
        b.families = vec![Family::IPV4_MULTICAST];
        assert!(pair(&a, &b).expect("ok").families.is_empty());
    }

    #[test]
    fn add_path_directions() {
        let v4 = Family::IPV4_UNICAST;
        let v6 = Family::IPV6_UNICAST;
        let mut a = cfg(65001, 65002, 1);
        let mut b = cfg(65002, 65001, 2);
        a.families = vec![v4, v6];
        b.families = vec![v4, v6];
        a.add_path_receive = vec![v4, v6];
        a.add_path_send = vec![v6];
        b.add_path_send = vec![v4];
        b.add_path_receive = vec![v6];
        let open = local_open(&a);
        assert!(open.capabilities.contains(&Capability::AddPath(vec![
            AddPathFamily {
                family: v4,
                mode: AddPathMode::Receive
            },
            AddPathFamily {
                family: v6,
                mode: AddPathMode::Both
            },
        ])));
        let n = pair(&a, &b).expect("ok");
        // v4: we receive (peer sends). v6: we send (peer receives); we
        // would receive, but the peer does not send.
        assert_eq!(n.add_path_receive, vec![v4]);
        assert_eq!(n.add_path_send, vec![v6]);
        let m = pair(&b, &a).expect("ok");
        assert_eq!(m.add_path_receive, vec![v6]);
        assert_eq!(m.add_path_send, vec![v4]);
        assert!(n.context.receives_path_ids(v4) && m.context.sends_path_ids(v4));
    }

    #[test]
    fn extended_message_needs_both_sides() {
        let mut a = cfg(65001, 65002, 1);
        let mut b = cfg(65002, 65001, 2);
        a.extended_message = true;
        assert!(!pair(&a, &b).expect("ok").extended_message);
        assert_eq!(pair(&a, &b).expect("ok").context.max_message_len(), 4096);
        b.extended_message = true;
        let n = pair(&a, &b).expect("ok");
        assert!(n.extended_message);
        assert_eq!(n.context.max_message_len(), 65535);
    }

    #[test]
    fn route_refresh_and_enhanced() {
        let mut a = cfg(65001, 65002, 1);
        let mut b = cfg(65002, 65001, 2);
        a.enhanced_route_refresh = true;
        let n = pair(&a, &b).expect("ok");
        assert!(n.route_refresh && !n.enhanced_route_refresh);
        b.enhanced_route_refresh = true;
        assert!(pair(&a, &b).expect("ok").enhanced_route_refresh);
        b.route_refresh = false;
        assert!(!pair(&a, &b).expect("ok").route_refresh);
        // The legacy code 128 counts.
        let mut remote = local_open(&b);
        remote.capabilities.push(Capability::Unknown {
            code: 128,
            value: vec![],
        });
        assert!(
            negotiate(&a, &local_open(&a), &remote)
                .expect("ok")
                .route_refresh
        );
    }

    #[test]
    fn graceful_restart() {
        let v4 = Family::IPV4_UNICAST;
        let v6 = Family::IPV6_UNICAST;
        let mut a = cfg(65001, 65002, 1);
        let mut b = cfg(65002, 65001, 2);
        a.families = vec![v4];
        b.families = vec![v4, v6];
        b.graceful_restart = Some(super::super::config::GracefulRestartConfig {
            restart_time: 90,
            restarting: true,
            forwarding_preserved: vec![v4, v6],
            notification: true,
        });
        let n = pair(&a, &b).expect("ok");
        let gr = n.peer_graceful_restart.clone().expect("peer has GR");
        assert!(gr.restarting && gr.notification);
        assert_eq!(gr.restart_time, Duration::from_secs(90));
        // Only negotiated families, with their F bits.
        assert_eq!(
            gr.families,
            vec![GracefulRestartFamily {
                family: v4,
                forwarding_preserved: true
            }]
        );
        assert!(!n.local_graceful_restart);
        // Routes are retained after a TCP loss, not after a NOTIFICATION
        // unless both sides set N (we did not).
        assert_eq!(n.retains_routes_after(None), Some(Duration::from_secs(90)));
        let cease =
            Notification::cease(crate::wire::notification::CeaseSubcode::AdministrativeReset);
        assert_eq!(n.retains_routes_after(Some(&cease)), None);
        a.graceful_restart = Some(super::super::config::GracefulRestartConfig {
            notification: true,
            ..Default::default()
        });
        let n = pair(&a, &b).expect("ok");
        assert_eq!(
            n.retains_routes_after(Some(&cease)),
            Some(Duration::from_secs(90))
        );
        let hard = Notification::cease(crate::wire::notification::CeaseSubcode::HardReset);
        assert_eq!(n.retains_routes_after(Some(&hard)), None);
        // Without the peer's capability nothing is retained.
        assert_eq!(
            pair(&b, &a)
                .expect("ok")
                .peer_graceful_restart
                .map(|g| g.notification),
            Some(true)
        );
        let plain = cfg(65002, 65001, 2);
        assert_eq!(
            pair(&a, &plain).expect("ok").retains_routes_after(None),
            None
        );
    }

    #[test]
    fn required_capability_missing() {
        let mut a = cfg(65001, 65002, 1);
        a.required_capabilities = vec![code::FOUR_OCTET_AS, code::EXTENDED_MESSAGE];
        let mut b = cfg(65002, 65001, 2);
        b.four_octet_as = false;
        let e = pair(&a, &b).expect_err("refused");
        // We advertise 4-octet AS (listed with its value) but not extended
        // message (listed with an empty value).
        assert_eq!(
            open_subcode(&e),
            (
                ErrorCode::OpenMessage,
                OpenSubcode::UnsupportedCapability as u8,
                vec![65, 4, 0, 0, 0xfd, 0xe9, 6, 0]
            )
        );
        assert!(
            e.to_string()
                .contains("4-octet AS (65), extended message (6)"),
            "{e}"
        );
    }

    #[test]
    fn local_open_is_stable() {
        let mut a = cfg(65001, 65002, 1);
        a.families = vec![
            Family::IPV6_UNICAST,
            Family::IPV4_UNICAST,
            Family::IPV4_UNICAST,
        ];
        a.extended_message = true;
        let codes: Vec<u8> = local_open(&a)
            .capabilities
            .iter()
            .map(Capability::code)
            .collect();
        assert_eq!(codes, vec![1, 1, 2, 65, 6]);
    }

    fn arb_families() -> impl proptest::strategy::Strategy<Value = Vec<Family>> {
        proptest::sample::subsequence(SUPPORTED_FAMILIES.to_vec(), 0..=4)
    }

    proptest::proptest! {
        /// Both ends of a session agree on what was negotiated, with the
        /// ADD-PATH directions mirrored.
        #[test]
        fn both_ends_agree(
            fa in arb_families(), fb in arb_families(),
            rxa in arb_families(), txa in arb_families(),
            rxb in arb_families(), txb in arb_families(),
            flags in proptest::array::uniform8(proptest::bool::ANY),
            ha in proptest::prop_oneof![proptest::strategy::Just(0u16), 3u16..400],
            hb in proptest::prop_oneof![proptest::strategy::Just(0u16), 3u16..400],
        ) {
            let mut a = cfg(65001, 4_200_000_002, 1);
            let mut b = cfg(4_200_000_002, 65001, 2);
            a.families = fa;
            b.families = fb;
            a.add_path_receive = rxa;
            a.add_path_send = txa;
            b.add_path_receive = rxb;
            b.add_path_send = txb;
            a.four_octet_as = flags[0];
            a.extended_message = flags[1];
            b.extended_message = flags[2];
            a.route_refresh = flags[3];
            b.enhanced_route_refresh = flags[4];
            a.enhanced_route_refresh = flags[5];
            if flags[6] {
                a.graceful_restart = Some(Default::default());
            }
            if flags[7] {
                b.graceful_restart = Some(Default::default());
            }
            a.hold_time = HoldTime(ha);
            b.hold_time = HoldTime(hb);
            let na = pair(&a, &b);
            let nb = pair(&b, &a);
            // A cannot read B's 4-octet AS without the capability only if
            // it ignores it; we always read it, so both accept.
            let (na, nb) = match (na, nb) {
                (Ok(x), Ok(y)) => (x, y),
                other => return Err(proptest::test_runner::TestCaseError::fail(format!("{other:?}"))),
            };
            proptest::prop_assert_eq!(&na.families, &nb.families);
            proptest::prop_assert_eq!(na.hold_time, nb.hold_time);
            proptest::prop_assert_eq!(na.keepalive.is_some(), na.hold_time.0 != 0);
            proptest::prop_assert_eq!(na.four_octet_as, nb.four_octet_as);
            proptest::prop_assert_eq!(na.four_octet_as, flags[0]);
            proptest::prop_assert_eq!(na.extended_message, flags[1] && flags[2]);
            proptest::prop_assert_eq!(na.extended_message, nb.extended_message);
            proptest::prop_assert_eq!(na.route_refresh, nb.route_refresh);
            proptest::prop_assert_eq!(na.enhanced_route_refresh, nb.enhanced_route_refresh);
            proptest::prop_assert_eq!(&na.add_path_receive, &nb.add_path_send);
            proptest::prop_assert_eq!(&na.add_path_send, &nb.add_path_receive);
            proptest::prop_assert_eq!(na.context.add_path_receive, nb.context.add_path_send);
            proptest::prop_assert_eq!(na.peer_graceful_restart.is_some(), flags[7]);
            proptest::prop_assert_eq!(nb.peer_graceful_restart.is_some(), flags[6]);
            for f in &na.families {
                proptest::prop_assert!(a.families.contains(f) && b.families.contains(f) || (a.families.is_empty() || b.families.is_empty()) && *f == Family::IPV4_UNICAST);
            }
        }
    }
}
