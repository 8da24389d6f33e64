//! The desired kernel routes, composed from their sources: the speaker's
//! best routes (plain, then encapsulated per pool) and the local routes
//! other parts of the agent register (workload host routes). Pure: it
//! feeds a [`Reconciler`] and knows nothing of netlink.
//!
//! - A local route wins over a learned one for the same key (a pod's /32
//!   is local even if some peer announced it).
//! - Learned routes are kept in their plain form (`via NEXTHOP`), so a
//!   change of pools, underlay address or tunnel device re-derives every
//!   encapsulated form without asking the speaker again.
//! - The VXLAN remotes (nodes some route reaches through the VXLAN device)
//!   are reference-counted here; the link layer turns them into neighbour
//!   and FDB entries.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::encap::{encap_for, pool_mode, Encap, PoolEncap};
use super::reconcile::Reconciler;
use super::route::{KernelRoute, NextHop, RouteKey, RouteTarget};

/// What encapsulation depends on: the pools, the node's underlay address
/// and the tunnel devices that exist (by ifindex).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncapContext {
    pub pools: Vec<PoolEncap>,
    /// The node's underlay (BGP) address `ADDR/LEN`.
    pub underlay: Option<IpNet>,
    /// The IPIP device, when it exists and is up.
    pub ipip: Option<u32>,
    /// The VXLAN device, when it exists and is up.
    pub vxlan: Option<u32>,
}

impl EncapContext {
    /// The kernel form of a plain learned route: each gateway next hop is
    /// encapsulated as its pool asks, when the tunnel device exists (a
    /// missing device leaves the next hop plain; the status says why).
    pub fn encapsulate(&self, plain: &KernelRoute) -> KernelRoute {
        let RouteTarget::Unicast(hops) = &plain.target else {
            return plain.clone();
        };
        let mode = pool_mode(&self.pools, &plain.key.dst);
        let encapsulated: Vec<NextHop> = hops
            .iter()
            .map(|h| match h.gateway {
                Some(gw) if h.ifindex.is_none() => {
                    match (
                        encap_for(mode, gw, self.underlay.as_ref()),
                        self.ipip,
                        self.vxlan,
                    ) {
                        (Encap::Ipip, Some(dev), _) | (Encap::Vxlan, _, Some(dev)) => {
                            NextHop::via_dev_onlink(gw, dev)
                        }
                        _ => *h,
                    }
                }
                _ => *h,
            })
            .collect();
        if encapsulated[..] == hops[..] {
            // Nothing to encapsulate: share the plain set.
            return plain.clone();
        }
        KernelRoute {
            key: plain.key,
            target: RouteTarget::Unicast(sort_hops(encapsulated).into()),
        }
    }

    /// Remote VTEPs a route in kernel form sends to.
    fn vxlan_remotes(&self, route: &KernelRoute) -> Vec<IpAddr> {
        let (Some(dev), RouteTarget::Unicast(hops)) = (self.vxlan, &route.target) else {
            return Vec::new();
        };
        hops.iter()
            .filter(|h| h.ifindex == Some(dev))
            .filter_map(|h| h.gateway)
            .collect()
    }
}

fn sort_hops(mut hops: Vec<NextHop>) -> Vec<NextHop> {
    hops.sort_unstable();
    hops.dedup();
    hops
}

/// Desired routes by source.
#[derive(Debug, Default)]
pub struct Composer {
    ctx: EncapContext,
    /// Learned routes, plain, by key.
    learned: HashMap<RouteKey, KernelRoute>,
    /// Local routes by source name.
    local: BTreeMap<String, Vec<KernelRoute>>,
    /// Which source owns each local key (the last one to set it).
    local_owner: HashMap<RouteKey, String>,
    /// VXLAN remote → number of installed-form routes using it.
    vxlan_remotes: BTreeMap<IpAddr, usize>,
    /// One copy of each next-hop set in use (see [`Composer::intern`]).
    hop_sets: HashSet<Arc<[NextHop]>>,
    /// `hop_sets` after its last pruning.
    hop_sets_pruned: usize,
}

impl Composer {
    pub fn new(ctx: EncapContext) -> Self {
        Composer {
            ctx,
            ..Self::default()
        }
    }

    pub fn context(&self) -> &EncapContext {
        &self.ctx
    }

    /// The remote nodes reached through the VXLAN device.
    pub fn vxlan_remotes(&self) -> BTreeSet<IpAddr> {
        self.vxlan_remotes.keys().copied().collect()
    }

    /// Learned routes (plain form).
    pub fn learned_len(&self) -> usize {
        self.learned.len()
    }

    /// `route` holding the one shared copy of its next-hop set: the routes
    /// through one peer (or one ECMP set of peers) share it, in the
    /// composer and in the reconciler. Sets no route uses any more are
    /// dropped whenever the interner has doubled since it was last pruned.
    fn intern(&mut self, route: KernelRoute) -> KernelRoute {
        let RouteTarget::Unicast(hops) = &route.target else {
            return route;
        };
        if let Some(shared) = self.hop_sets.get(hops) {
            return KernelRoute {
                key: route.key,
                target: RouteTarget::Unicast(shared.clone()),
            };
        }
        self.hop_sets.insert(hops.clone());
        if self.hop_sets.len() > 2 * self.hop_sets_pruned.max(64) {
            self.hop_sets.retain(|set| Arc::strong_count(set) > 1);
            self.hop_sets_pruned = self.hop_sets.len();
        }
        route
    }

    fn count(&mut self, route: &KernelRoute, up: bool) {
        for r in self.ctx.vxlan_remotes(route) {
            let n = self.vxlan_remotes.entry(r).or_insert(0);
            if up {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.vxlan_remotes.remove(&r);
                }
            }
        }
    }

    /// The speaker's best route for `key` (plain), or `None` when gone.
    pub fn learn(&mut self, rec: &mut Reconciler, key: RouteKey, plain: Option<KernelRoute>) {
        if let Some(old) = self.learned.remove(&key) {
            let old = self.ctx.encapsulate(&old);
            self.count(&old, false);
        }
        let Some(plain) = plain else {
            if !self.local_owner.contains_key(&key) {
                rec.remove(key);
            }
            return;
        };
        let plain = self.intern(plain);
        let route = self.intern(self.ctx.encapsulate(&plain));
        self.count(&route, true);
        self.learned.insert(key, plain);
        if !self.local_owner.contains_key(&key) {
            rec.set(route);
        }
    }

    /// Replaces the routes of one local source. Returns the routes as
    /// they will be installed (for waiting on them).
    pub fn set_local(&mut self, rec: &mut Reconciler, source: &str, routes: Vec<KernelRoute>) {
        let old = self.local.remove(source).unwrap_or_default();
        for r in &old {
            if self.local_owner.get(&r.key).map(String::as_str) == Some(source) {
                self.local_owner.remove(&r.key);
                match self.learned.get(&r.key) {
                    Some(plain) => rec.set(self.ctx.encapsulate(plain)),
                    None => rec.remove(r.key),
                }
            }
        }
        for r in &routes {
            self.local_owner.insert(r.key, source.to_string());
            rec.set(r.clone());
        }
        if !routes.is_empty() {
            self.local.insert(source.to_string(), routes);
        }
    }

    /// New pools, underlay or tunnel devices: every learned route is
    /// re-derived (the reconciler ignores the ones that did not change).
    pub fn set_context(&mut self, rec: &mut Reconciler, ctx: EncapContext) {
        if ctx == self.ctx {
            return;
        }
        self.ctx = ctx;
        self.vxlan_remotes.clear();
        let keys: Vec<RouteKey> = self.learned.keys().copied().collect();
        for key in keys {
            let Some(plain) = self.learned.get(&key) else {
                continue;
            };
            let route = self.ctx.encapsulate(plain);
            let route = self.intern(route);
            self.count(&route, true);
            if !self.local_owner.contains_key(&key) {
                rec.set(route);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fib::encap::Mode;
    use crate::fib::reconcile::Op;
    use std::time::Instant;

    use crate::fib::reconcile::tests::{net, via};
    fn plan(rec: &mut Reconciler) -> Vec<String> {
        rec.plan(Instant::now())
            .iter()
            .map(|op| format!("{} {}", op.verb(), op.route()))
            .collect()
    }
    /// Plans and records every op as accepted by the kernel.
    fn applied(rec: &mut Reconciler) -> Vec<String> {
        let ops = rec.plan(Instant::now());
        let text = ops
            .iter()
            .map(|op| format!("{} {}", op.verb(), op.route()))
            .collect();
        rec.record(
            ops.into_iter()
                .map(|op| crate::fib::OpOutcome { op, result: Ok(()) }),
            Instant::now(),
        );
        text
    }
    fn ctx(mode: Mode) -> EncapContext {
        EncapContext {
            pools: vec![PoolEncap {
                cidr: net("10.244.0.0/16"),
                mode,
            }],
            underlay: Some(net("192.0.2.11/25")),
            ipip: Some(7),
            vxlan: Some(8),
        }
    }

    #[test]
    fn ecmp_next_hops_each_get_their_own_encapsulation() {
        let mut rec = Reconciler::new();
        let mut c = Composer::new(ctx(Mode::VXLANCrossSubnet));
        let r = via("10.244.2.0/24", &["192.0.2.12", "198.51.100.12"]);
        c.learn(&mut rec, r.key, Some(r.clone()));
        assert_eq!(
            plan(&mut rec),
            ["add 10.244.2.0/24 nexthop via 192.0.2.12 nexthop via 198.51.100.12 dev #8 onlink"]
        );
        assert_eq!(
            c.vxlan_remotes().into_iter().collect::<Vec<_>>(),
            vec!["198.51.100.12".parse::<IpAddr>().expect("addr")]
        );
        // Outside every pool: plain.
        let o = via("10.9.0.0/24", &["198.51.100.12"]);
        c.learn(&mut rec, o.key, Some(o.clone()));
        assert_eq!(plan(&mut rec), ["add 10.9.0.0/24 via 198.51.100.12"]);
    }

    #[test]
    fn a_pool_change_re_derives_learned_routes() {
        let mut rec = Reconciler::new();
        rec.mark_synced();
        let mut c = Composer::new(ctx(Mode::None));
        let r = via("10.244.2.0/24", &["198.51.100.12"]);
        c.learn(&mut rec, r.key, Some(r.clone()));
        applied(&mut rec);
        c.set_context(&mut rec, ctx(Mode::IPIP));
        assert_eq!(
            applied(&mut rec),
            ["replace 10.244.2.0/24 via 198.51.100.12 dev #7 onlink"]
        );
        assert!(c.vxlan_remotes().is_empty());
        // The IPIP device disappears (module unloaded): back to plain.
        let mut no_dev = ctx(Mode::IPIP);
        no_dev.ipip = None;
        c.set_context(&mut rec, no_dev);
        assert_eq!(plan(&mut rec), ["replace 10.244.2.0/24 via 198.51.100.12"]);
    }

    #[test]
    fn vxlan_remotes_are_counted_and_released() {
        let mut rec = Reconciler::new();
        let mut c = Composer::new(ctx(Mode::VXLAN));
        let a = via("10.244.2.0/24", &["198.51.100.12"]);
        let b = via("10.244.3.0/24", &["198.51.100.12"]);
        c.learn(&mut rec, a.key, Some(a.clone()));
        c.learn(&mut rec, b.key, Some(b.clone()));
        assert_eq!(c.vxlan_remotes().len(), 1);
        c.learn(&mut rec, a.key, None);
        assert_eq!(c.vxlan_remotes().len(), 1);
        c.learn(&mut rec, b.key, None);
        assert!(c.vxlan_remotes().is_empty());
    }

    #[test]
    fn local_routes_win_and_give_the_key_back() {
        let mut rec = Reconciler::new();
        rec.mark_synced();
        // Plans, and records every op as accepted.
        let plan = |rec: &mut Reconciler| {
            let ops = rec.plan(Instant::now());
            rec.record(
                ops.iter().map(|op| crate::fib::OpOutcome {
                    op: op.clone(),
                    result: Ok(()),
                }),
                Instant::now(),
            );
            ops
        };
        let mut c = Composer::new(EncapContext::default());
        let learned = via("10.244.1.7/32", &["192.0.2.12"]);
        c.learn(&mut rec, learned.key, Some(learned.clone()));
        let host = KernelRoute::unicast(net("10.244.1.7/32"), vec![NextHop::dev(4)]);
        c.set_local(&mut rec, "cni", vec![host.clone()]);
        assert_eq!(plan(&mut rec), vec![Op::Add(host.clone())]);
        // The learned route changes underneath: the local one stays.
        let l2 = via("10.244.1.7/32", &["192.0.2.13"]);
        c.learn(&mut rec, l2.key, Some(l2.clone()));
        assert!(plan(&mut rec).is_empty());
        // The pod goes: the learned route takes the key again.
        c.set_local(&mut rec, "cni", vec![]);
        assert_eq!(plan(&mut rec), vec![Op::Replace(l2.clone())]);
        // Neither: nothing wanted.
        c.learn(&mut rec, learned.key, None);
        assert_eq!(plan(&mut rec), vec![Op::Delete(l2)]);
        assert!(plan(&mut rec).is_empty());
    }

    #[test]
    fn routes_through_one_peer_share_one_next_hop_set() {
        let mut rec = Reconciler::new();
        let mut c = Composer::new(ctx(Mode::VXLAN));
        for i in 0..10 {
            let r = via(&format!("10.244.{i}.0/24"), &["192.0.2.12"]);
            c.learn(&mut rec, r.key, Some(r));
        }
        let sets: Vec<Arc<[NextHop]>> = c
            .learned
            .values()
            .filter_map(|r| match &r.target {
                RouteTarget::Unicast(h) => Some(h.clone()),
                RouteTarget::Blackhole => None,
            })
            .collect();
        assert_eq!(sets.len(), 10);
        assert!(
            sets.iter().all(|s| Arc::ptr_eq(s, &sets[0])),
            "one plain set"
        );
        let ops = rec.plan(Instant::now());
        let installed: Vec<&Arc<[NextHop]>> = ops
            .iter()
            .filter_map(|op| match &op.route().target {
                RouteTarget::Unicast(h) => Some(h),
                RouteTarget::Blackhole => None,
            })
            .collect();
        assert_eq!(installed.len(), 10);
        assert!(
            installed.iter().all(|s| Arc::ptr_eq(s, installed[0])),
            "one encapsulated set"
        );
        assert_eq!(installed[0][0].ifindex, Some(8), "through the VXLAN device");
        drop(ops);
        drop(sets);
        // Peers come and go: sets no route uses are pruned, the one in use
        // stays.
        for i in 0..200u32 {
            let gw = format!("192.0.2.{}", 20 + i % 100);
            let r = via(&format!("10.245.{i}.0/24"), &[gw.as_str()]);
            c.learn(&mut rec, r.key, Some(r.clone()));
            c.learn(&mut rec, r.key, None);
        }
        assert!(c.hop_sets.len() <= 130, "{} sets kept", c.hop_sets.len());
        let shared = c.learned.values().next().map(|r| r.target.clone());
        let Some(RouteTarget::Unicast(h)) = shared else {
            panic!("a learned route");
        };
        assert!(c.hop_sets.contains(&h), "the set in use is kept");
    }
}
