//! Keeps tortie's tunnel devices and VXLAN neighbour/FDB entries as the
//! pools ask, from dumps of what the kernel has (never from memory
//! alone). Called by the FIB thread on start, on link/address events, on
//! pool or underlay changes, when a path MTU to a remote changes and at
//! every resync. [`path_mtus`] asks the kernel for the route to each
//! remote (`ip route get`), which decides the tunnels' MTUs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use tracing::{debug, info, warn};

use super::encap::{mtus, tunnels_wanted, vtep_mac, Encap, Mtus, PeerRoute, PoolEncap};
use super::link::{
    fdb_delete, fdb_replace, ipip_create, link_delete, link_set, neigh_delete, neigh_replace,
    vxlan_create, Link, LinkError, LinkSocket, Neigh, VxlanParams, IPIP_DEVICE, VXLAN_DEVICE,
    VXLAN_PORT, VXLAN_VNI,
};

/// The outcome of one pass over the devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelState {
    /// The IPIP device, up.
    pub ipip: Option<u32>,
    /// The VXLAN device, up.
    pub vxlan: Option<u32>,
    pub mtus: Option<Mtus>,
    /// Problems for the status, one message each.
    pub errors: Vec<String>,
}

impl TunnelState {
    pub fn names(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.ipip.is_some() {
            v.push(IPIP_DEVICE.to_string());
        }
        if self.vxlan.is_some() {
            v.push(VXLAN_DEVICE.to_string());
        }
        v
    }
}

/// Makes the devices match `pools` and `underlay`, with MTUs from the
/// narrowest path each tunnel serves (`paths`: `(tunnel, path MTU)` per
/// remote, see [`mtus`]).
pub fn reconcile_links(
    sock: &mut LinkSocket,
    pools: &[PoolEncap],
    underlay: Option<&IpNet>,
    paths: &[(Encap, u32)],
) -> Result<TunnelState, LinkError> {
    let mut st = TunnelState::default();
    let wanted = tunnels_wanted(pools);
    let links = sock.links()?;
    let find = |links: &[Link], name: &str| links.iter().find(|l| l.name == name).cloned();
    let Some(underlay) = underlay else {
        if !wanted.is_empty() {
            st.errors.push(
                "encapsulation needs the node's underlay address (fib.underlay); pools are routed without it".into(),
            );
        }
        return Ok(st);
    };
    let local = underlay.addr();
    let addrs = sock.addresses()?;
    let Some(dev) = addrs
        .iter()
        .find(|(_, a)| a.addr() == local)
        .and_then(|(i, _)| links.iter().find(|l| l.index == *i))
    else {
        st.errors.push(format!(
            "the underlay address {local} is on no interface; tunnels and MTUs wait for it"
        ));
        return Ok(st);
    };
    let m = mtus(dev.mtu, local.is_ipv6(), pools, paths);
    st.mtus = Some(m);

    // VXLAN.
    let have = find(&links, VXLAN_DEVICE);
    if let (true, Some(mtu)) = (wanted.contains(&Encap::Vxlan), m.vxlan) {
        let mac = vtep_mac(local);
        let want = VxlanParams {
            vni: VXLAN_VNI,
            local: Some(local),
            port: VXLAN_PORT,
            learning: false,
        };
        let r = match have {
            Some(l) if l.vxlan == Some(want) => {
                if l.mtu != mtu || !l.up || l.mac.as_deref() != Some(&mac[..]) {
                    info!("FIB: {VXLAN_DEVICE}: mtu {mtu}, up");
                    sock.request("set vxlan.tortie", link_set(l.index, mtu, Some(mac)))
                } else {
                    Ok(())
                }
            }
            other => {
                if let Some(l) = other {
                    info!(
                        "FIB: {VXLAN_DEVICE} has other parameters ({:?}); re-creating",
                        l.vxlan
                    );
                    sock.request("delete vxlan.tortie", link_delete(l.index))?;
                }
                info!("FIB: creating {VXLAN_DEVICE} (vni {VXLAN_VNI}, local {local}, port {VXLAN_PORT}, mtu {mtu})");
                sock.request("create vxlan.tortie", vxlan_create(local, mac, mtu))
            }
        };
        if let Err(e) = r {
            warn!("FIB: {e}");
            st.errors
                .push(format!("{e}; VXLAN pools are routed without encapsulation"));
        }
    } else if let Some(l) = have {
        info!("FIB: no pool wants VXLAN; removing {VXLAN_DEVICE}");
        sock.request("delete vxlan.tortie", link_delete(l.index))?;
    }

    // IPIP.
    let have = find(&links, IPIP_DEVICE);
    if let (true, Some(mtu)) = (wanted.contains(&Encap::Ipip), m.ipip) {
        let r = if local.is_ipv6() {
            Err(LinkError::Refused {
                what: format!("create {IPIP_DEVICE}"),
                reason: "IP-in-IP needs an IPv4 underlay".into(),
            })
        } else {
            match have {
                Some(l) if l.kind.as_deref() == Some("ipip") && l.tunnel_local == Some(local) => {
                    if l.mtu != mtu || !l.up {
                        sock.request("set ipip.tortie", link_set(l.index, mtu, None))
                    } else {
                        Ok(())
                    }
                }
                other => {
                    if let Some(l) = other {
                        sock.request("delete ipip.tortie", link_delete(l.index))?;
                    }
                    info!("FIB: creating {IPIP_DEVICE} (local {local}, mtu {mtu})");
                    sock.request("create ipip.tortie", ipip_create(local, mtu))
                }
            }
        };
        if let Err(e) = r {
            warn!("FIB: {e}");
            st.errors.push(format!(
                "{e} (does the kernel have ipip?); IPIP pools are routed without encapsulation"
            ));
        }
    } else if let Some(l) = have {
        info!("FIB: no pool wants IPIP; removing {IPIP_DEVICE}");
        sock.request("delete ipip.tortie", link_delete(l.index))?;
    }

    // What exists now, up.
    let links = sock.links()?;
    let up = |name: &str| {
        links
            .iter()
            .find(|l| l.name == name && l.up)
            .map(|l| l.index)
    };
    if wanted.contains(&Encap::Vxlan) {
        st.vxlan = up(VXLAN_DEVICE);
    }
    if wanted.contains(&Encap::Ipip) {
        st.ipip = up(IPIP_DEVICE);
    }
    Ok(st)
}

/// The path MTU towards each of `remotes`: one `ip route get` per remote,
/// pipelined ([`LinkSocket::route_lookups`]), then the route's MTU metric
/// or its output device's MTU ([`PeerRoute::path_mtu`]). A remote without
/// a route (or whose device vanished meanwhile) maps to `None`: it does
/// not narrow any tunnel until it has one.
pub fn path_mtus(
    sock: &mut LinkSocket,
    remotes: &[IpAddr],
) -> Result<BTreeMap<IpAddr, Option<u32>>, LinkError> {
    if remotes.is_empty() {
        return Ok(BTreeMap::new());
    }
    let answers = sock.route_lookups(remotes)?;
    let devices: BTreeMap<u32, u32> = sock.links()?.iter().map(|l| (l.index, l.mtu)).collect();
    Ok(remotes
        .iter()
        .zip(answers)
        .map(|(remote, answer)| {
            let mtu = match answer {
                Ok(r) => {
                    let device_mtu = r.oif.and_then(|i| devices.get(&i).copied());
                    match (r.mtu, device_mtu) {
                        (None, None) => None,
                        (route_mtu, device_mtu) => Some(
                            PeerRoute {
                                route_mtu,
                                device_mtu: device_mtu.unwrap_or(0),
                            }
                            .path_mtu(),
                        ),
                    }
                }
                Err(reason) => {
                    debug!(%remote, %reason, "FIB: no route to a tunnel remote");
                    None
                }
            };
            (*remote, mtu)
        })
        .collect())
}

/// Makes the permanent neighbour and FDB entries on the VXLAN device
/// `index` exactly one per remote VTEP. Returns how many changes it made.
pub fn reconcile_vxlan_remotes(
    sock: &mut LinkSocket,
    index: u32,
    remotes: &BTreeSet<IpAddr>,
) -> Result<usize, LinkError> {
    let want: BTreeSet<Neigh> = remotes
        .iter()
        .map(|ip| Neigh {
            ip: *ip,
            mac: vtep_mac(*ip),
        })
        .collect();
    let mut changes = 0;
    for fdb in [true, false] {
        let have: BTreeSet<Neigh> = sock.neighbours(index, fdb)?.into_iter().collect();
        for n in have.difference(&want) {
            let req = if fdb {
                fdb_delete(index, n)
            } else {
                neigh_delete(index, n)
            };
            if let Err(e) = sock.request("delete vxlan remote", req) {
                warn!("FIB: {e}");
            }
            changes += 1;
        }
        for n in want.difference(&have) {
            let req = if fdb {
                fdb_replace(index, n)
            } else {
                neigh_replace(index, n)
            };
            if let Err(e) = sock.request(&format!("vxlan remote {}", n.ip), req) {
                warn!("FIB: {e}");
            }
            changes += 1;
        }
    }
    Ok(changes)
}
