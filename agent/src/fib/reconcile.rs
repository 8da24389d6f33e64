//! The pure FIB reconciler: desired routes against the kernel's, as the
//! minimal list of operations.
//!
//! It never trusts its own memory about the kernel for long: every resync
//! feeds a fresh dump through [`Reconciler::observe_dump`], and whatever
//! differs (a route deleted or changed by hand) becomes dirty again.
//! Between dumps it tracks what it changed itself ([`Reconciler::record`]).
//!
//! Work is proportional to the number of changed keys: `set`/`remove` mark
//! one key dirty, a burst of changes to the same prefix collapses into one
//! operation carrying the last state, and `plan` looks only at dirty keys.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::route::{KernelRoute, RouteKey, RouteTarget};

/// One change to make in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The kernel has no route of ours for this key.
    Add(KernelRoute),
    /// The kernel has a route of ours for this key with another target.
    Replace(KernelRoute),
    /// The kernel has a route of ours that is no longer wanted.
    Delete(KernelRoute),
}

impl Op {
    pub fn route(&self) -> &KernelRoute {
        match self {
            Op::Add(r) | Op::Replace(r) | Op::Delete(r) => r,
        }
    }

    pub fn verb(&self) -> &'static str {
        match self {
            Op::Add(_) => "add",
            Op::Replace(_) => "replace",
            Op::Delete(_) => "delete",
        }
    }
}

/// What the kernel said about one [`Op`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpOutcome {
    pub op: Op,
    /// `Err` carries the kernel's reason ("Network is unreachable").
    pub result: Result<(), String>,
}

#[derive(Debug, Clone)]
struct Failure {
    attempts: u32,
    retry_at: Instant,
    reason: String,
}

/// The first retry of a refused route comes after this; each further
/// failure doubles it, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A route the kernel refused, for status and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRoute {
    pub key: RouteKey,
    pub attempts: u32,
    pub reason: String,
}

/// Desired state, last known kernel state, and what is left to do.
#[derive(Debug, Default)]
pub struct Reconciler {
    desired: HashMap<RouteKey, RouteTarget>,
    kernel: HashMap<RouteKey, RouteTarget>,
    dirty: HashSet<RouteKey>,
    failures: HashMap<RouteKey, Failure>,
    synced: bool,
}

impl Reconciler {
    /// A reconciler that keeps every route it finds in the kernel until
    /// [`Reconciler::mark_synced`] (graceful restart).
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether stale routes may be deleted yet.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The speaker has synced (End-of-RIB from every peer, or the wait timed
    /// out): routes in the kernel that are not desired may now go.
    pub fn mark_synced(&mut self) {
        if self.synced {
            return;
        }
        self.synced = true;
        for key in self.kernel.keys() {
            if !self.desired.contains_key(key) {
                self.dirty.insert(*key);
            }
        }
    }

    /// Wants `route` in the kernel (replacing any other desired target for
    /// its key).
    pub fn set(&mut self, route: KernelRoute) {
        let KernelRoute { key, target } = route;
        if self.desired.get(&key) != Some(&target) {
            self.desired.insert(key, target);
            self.dirty.insert(key);
            self.failures.remove(&key);
        }
    }

    /// No longer wants a route for `key`.
    pub fn remove(&mut self, key: RouteKey) {
        if self.desired.remove(&key).is_some() {
            self.dirty.insert(key);
            self.failures.remove(&key);
        }
    }

    /// Replaces the whole desired set.
    pub fn set_all(&mut self, routes: impl IntoIterator<Item = KernelRoute>) {
        let new: HashMap<RouteKey, RouteTarget> =
            routes.into_iter().map(|r| (r.key, r.target)).collect();
        for key in self.desired.keys() {
            if !new.contains_key(key) {
                self.dirty.insert(*key);
            }
        }
        for (key, target) in &new {
            if self.desired.get(key) != Some(target) {
                self.dirty.insert(*key);
            }
        }
        self.desired = new;
    }

    /// Feeds a fresh dump of the kernel's routes of tortie's protocol (all
    /// tables tortie uses). Keys whose kernel state differs from what we
    /// believed become dirty, so hand-made changes are repaired.
    pub fn observe_dump(&mut self, routes: impl IntoIterator<Item = KernelRoute>) {
        let fresh: HashMap<RouteKey, RouteTarget> =
            routes.into_iter().map(|r| (r.key, r.target)).collect();
        for (key, believed) in &self.kernel {
            if !fresh.get(key).is_some_and(|f| believed.satisfied_by(f)) {
                self.dirty.insert(*key);
            }
        }
        for (key, found) in &fresh {
            if !self.kernel.get(key).is_some_and(|b| b.satisfied_by(found)) {
                self.dirty.insert(*key);
            }
        }
        // A key that is desired but absent from both views (say, a route
        // that failed before the dump) must be retried too.
        for key in self.desired.keys() {
            if !fresh.contains_key(key) {
                self.dirty.insert(*key);
            }
        }
        // Keep our own (desired-form) belief where the kernel agrees, so the
        // next dump compares like with like.
        let mut merged = fresh;
        for (key, found) in merged.iter_mut() {
            if let Some(believed) = self.kernel.get(key) {
                if believed.satisfied_by(found) {
                    *found = believed.clone();
                }
            }
        }
        self.kernel = merged;
    }

    /// The operations to run now, for dirty keys whose backoff (if any) has
    /// expired, sorted by key. Planned keys stop being dirty; `record` puts
    /// failed ones back with a backoff.
    pub fn plan(&mut self, now: Instant) -> Vec<Op> {
        let mut keys: Vec<RouteKey> = Vec::with_capacity(self.dirty.len());
        for key in &self.dirty {
            match self.failures.get(key) {
                Some(f) if f.retry_at > now => {}
                _ => keys.push(*key),
            }
        }
        keys.sort_unstable();
        let mut ops = Vec::with_capacity(keys.len());
        for key in keys {
            self.dirty.remove(&key);
            let desired = self.desired.get(&key);
            let kernel = self.kernel.get(&key);
            match (desired, kernel) {
                (Some(want), None) => ops.push(Op::Add(KernelRoute {
                    key,
                    target: want.clone(),
                })),
                (Some(want), Some(have)) if !want.satisfied_by(have) => {
                    ops.push(Op::Replace(KernelRoute {
                        key,
                        target: want.clone(),
                    }))
                }
                (Some(_), Some(_)) => {
                    self.failures.remove(&key);
                }
                (None, Some(have)) if self.synced => ops.push(Op::Delete(KernelRoute {
                    key,
                    target: have.clone(),
                })),
                (None, _) => {
                    self.failures.remove(&key);
                }
            }
        }
        ops
    }

    /// Takes the kernel's answers to planned operations.
    pub fn record(&mut self, outcomes: impl IntoIterator<Item = OpOutcome>, now: Instant) {
        for OpOutcome { op, result } in outcomes {
            let key = op.route().key;
            match result {
                Ok(()) => {
                    self.failures.remove(&key);
                    match op {
                        Op::Add(r) | Op::Replace(r) => {
                            self.kernel.insert(key, r.target);
                        }
                        Op::Delete(_) => {
                            self.kernel.remove(&key);
                        }
                    }
                }
                Err(reason) => {
                    // "No such process" on delete: already gone, which is
                    // what we wanted.
                    if matches!(op, Op::Delete(_)) && reason.contains("No such process") {
                        self.kernel.remove(&key);
                        self.failures.remove(&key);
                        continue;
                    }
                    let attempts = self.failures.get(&key).map_or(0, |f| f.attempts) + 1;
                    let backoff = FIRST_BACKOFF
                        .saturating_mul(1u32 << (attempts - 1).min(16))
                        .min(MAX_BACKOFF);
                    self.failures.insert(
                        key,
                        Failure {
                            attempts,
                            retry_at: now + backoff,
                            reason,
                        },
                    );
                    self.dirty.insert(key);
                }
            }
        }
    }

    /// When the next refused route is due for a retry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.failures
            .iter()
            .filter(|(k, _)| self.dirty.contains(k))
            .map(|(_, f)| f.retry_at)
            .min()
    }

    /// Whether anything is waiting to be planned.
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Routes of ours the kernel holds, as far as we know.
    pub fn installed(&self) -> usize {
        self.kernel.len()
    }

    /// Desired routes.
    pub fn desired(&self) -> usize {
        self.desired.len()
    }

    /// Whether `routes` are in the kernel as given: `Some(Ok)` when every
    /// one is, `Some(Err(reason))` when the kernel refused one of them or
    /// another target was asked for its key since, `None` while pending.
    pub fn state_of(&self, routes: &[KernelRoute]) -> Option<Result<(), String>> {
        let mut pending = false;
        for r in routes {
            if self.desired.get(&r.key) != Some(&r.target) {
                return Some(Err(format!("{}: replaced by a later request", r.key.dst)));
            }
            if let Some(f) = self.failures.get(&r.key) {
                return Some(Err(format!("{r}: {}", f.reason)));
            }
            if !self
                .kernel
                .get(&r.key)
                .is_some_and(|k| r.target.satisfied_by(k))
            {
                pending = true;
            }
        }
        (!pending).then_some(Ok(()))
    }

    /// Routes the kernel refused at the last attempt, sorted by key.
    pub fn failed(&self) -> Vec<FailedRoute> {
        let mut v: Vec<FailedRoute> = self
            .failures
            .iter()
            .map(|(key, f)| FailedRoute {
                key: *key,
                attempts: f.attempts,
                reason: f.reason.clone(),
            })
            .collect();
        v.sort_by_key(|f| f.key);
        v
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fib::route::NextHop;
    use ipnet::IpNet;

    pub(crate) fn net(s: &str) -> IpNet {
        s.parse().expect("test prefix")
    }

    pub(crate) fn via(dst: &str, gws: &[&str]) -> KernelRoute {
        KernelRoute::unicast(
            net(dst),
            gws.iter()
                .map(|g| NextHop::via(g.parse().expect("test address")))
                .collect(),
        )
    }

    fn ok_all(r: &mut Reconciler, ops: &[Op], now: Instant) {
        r.record(
            ops.iter().map(|op| OpOutcome {
                op: op.clone(),
                result: Ok(()),
            }),
            now,
        );
    }

    #[test]
    fn adds_replaces_and_deletes_minimally_v4_and_v6() {
        let now = Instant::now();
        let mut r = Reconciler::new();
        r.mark_synced();
        r.observe_dump([
            via("10.244.1.0/24", &["192.0.2.11"]),
            via("10.244.2.0/24", &["192.0.2.12"]),
            via("fd00:1::/64", &["2001:db8::11"]),
            KernelRoute::blackhole(net("10.244.9.0/24")),
        ]);
        r.set_all([
            via("10.244.1.0/24", &["192.0.2.11"]),        // unchanged
            via("10.244.2.0/24", &["192.0.2.13"]),        // next hop moved
            via("fd00:1::/64", &["2001:db8::11"]),        // unchanged
            via("fd00:2::/64", &["2001:db8::12"]),        // new
            KernelRoute::blackhole(net("10.244.3.0/24")), // new
        ]);
        let ops = r.plan(now);
        assert_eq!(
            ops,
            vec![
                Op::Replace(via("10.244.2.0/24", &["192.0.2.13"])),
                Op::Add(KernelRoute::blackhole(net("10.244.3.0/24"))),
                Op::Delete(KernelRoute::blackhole(net("10.244.9.0/24"))),
                Op::Add(via("fd00:2::/64", &["2001:db8::12"])),
            ]
        );
        ok_all(&mut r, &ops, now);
        assert!(r.plan(now).is_empty(), "converged: nothing more to do");
        assert_eq!(r.installed(), 5);
    }

    #[test]
    fn state_of_waits_for_the_kernel_and_reports_refusals() {
        let now = Instant::now();
        let mut r = Reconciler::new();
        let host = KernelRoute::unicast(net("10.244.1.7/32"), vec![NextHop::dev(4)]);
        let other = KernelRoute::unicast(net("10.244.1.8/32"), vec![NextHop::dev(5)]);
        r.set(host.clone());
        r.set(other.clone());
        assert_eq!(r.state_of(std::slice::from_ref(&host)), None);
        let ops = r.plan(now);
        r.record(
            ops.into_iter().map(|op| OpOutcome {
                result: if op.route() == &other {
                    Err("No such device".into())
                } else {
                    Ok(())
                },
                op,
            }),
            now,
        );
        assert_eq!(r.state_of(std::slice::from_ref(&host)), Some(Ok(())));
        assert_eq!(
            r.state_of(&[host.clone(), other.clone()]),
            Some(Err("10.244.1.8/32 dev #5: No such device".into()))
        );
        r.set(KernelRoute::unicast(
            net("10.244.1.7/32"),
            vec![NextHop::dev(9)],
        ));
        assert!(matches!(r.state_of(&[host]), Some(Err(_))));
        assert_eq!(r.state_of(&[]), Some(Ok(())));
    }

    #[test]
    fn ecmp_set_growing_and_shrinking_is_one_replace() {
        let now = Instant::now();
        let mut r = Reconciler::new();
        r.mark_synced();
        r.set(via("10.244.2.0/24", &["192.0.2.12"]));
        let ops = r.plan(now);
        ok_all(&mut r, &ops, now);
        r.set(via("10.244.2.0/24", &["192.0.2.13", "192.0.2.12"]));
        let ops = r.plan(now);
        assert_eq!(
            ops,
            vec![Op::Replace(via(
                "10.244.2.0/24",
                &["192.0.2.12", "192.0.2.13"]
            ))]
        );
        ok_all(&mut r, &ops, now);
        r.set(via("10.244.2.0/24", &["192.0.2.13"]));
        assert_eq!(
            r.plan(now),
            vec![Op::Replace(via("10.244.2.0/24", &["192.0.2.13"]))]
        );
    }

    #[test]
    fn equal_ecmp_sets_in_another_order_are_no_change() {
        let a = via("10.244.2.0/24", &["192.0.2.12", "192.0.2.13"]);
        let b = via("10.244.2.0/24", &["192.0.2.13", "192.0.2.12", "192.0.2.12"]);
        assert_eq!(a, b);
    }

    #[test]
    fn encapsulated_next_hops_differ_from_plain_ones() {
        let now = Instant::now();
        let mut r = Reconciler::new();
        r.mark_synced();
        let gw = "192.0.2.12".parse().expect("addr");
        r.observe_dump([KernelRoute::unicast(
            net("10.244.2.0/24"),
            vec![NextHop::via(gw)],
        )]);
        let ipip = KernelRoute::unicast(net("10.244.2.0/24"), vec![NextHop::via_dev_onlink(gw, 7)]);
        r.set(ipip.clone());
        assert_eq!(r.plan(now), vec![Op::Replace(ipip)]);
    }

    #[test]
    fn kernel_filling_in_the_interface_is_no_change() {
        let now = Instant::now();
        let mut r = Reconciler::new();
        r.mark_synced();
        let gw = "192.0.2.12".parse().expect("addr");
        r.set(via("10.244.2.0/24", &["192.0.2.12"]));
        let ops = r.plan(now);
        ok_all(&mut r, &ops, now);
        let found = KernelRoute::unicast(
            net("10.244.2.0/24"),
            vec![NextHop {
                gateway: Some(gw),
                ifindex: Some(3),
                onlink: false,
            }],
        );
        r.observe_dump([found.clone()]);
        assert!(r.plan(now).is_empty());
        r.observe_dump([found]);
        assert!(!r.has_work(), "a second identical dump marks nothing dirty");
        // But a wanted interface must match.
        r.set(KernelRoute::unicast(
            net("10.244.2.0/24"),
            vec![NextHop::via_dev_onlink(gw, 9)],
        ));
        assert_eq!(r.plan(now).len(), 1);
    }

    #[test]
    fn burst_of_changes_to_one_prefix_collapses_to_the_last_state() {
        let now = Instant::now();
        let mut r = Reconciler::new();
        r.mark_synced();
        for i in 1..=50 {
            r.set(via("10.244.2.0/24", &[&format!("192.0.2.{i}")]));
        }
        r.remove(RouteKey {
            table: 254,
            dst: net("10.244.2.0/24"),
        });
        r.set(via("10.244.2.0/24", &["192.0.2.99"]));
        assert_eq!(
            r.plan(now),
            vec![Op::Add(via("10.244.2.0/24", &["192.0.2.99"]))]
        );
    }

    #[test]
    fn before_sync_stale_routes_stay_and_after_sync_they_go() {
        let now = Instant::now();
        let mut r = Reconciler::new();
        r.observe_dump([
            via("10.244.1.0/24", &["192.0.2.11"]),
            via("10.244.2.0/24", &["192.0.2.12"]),
        ]);
        r.set(via("10.244.1.0/24", &["192.0.2.11"]));
        assert!(r.plan(now).is_empty(), "graceful restart keeps everything");
        r.mark_synced();
        assert_eq!(
            r.plan(now),
            vec![Op::Delete(via("10.244.2.0/24", &["192.0.2.12"]))]
        );
    }

    #[test]
    fn a_route_deleted_by_hand_comes_back_at_the_next_resync() {
        let now = Instant::now();
        let mut r = Reconciler::new();
        r.mark_synced();
        r.set(via("10.244.2.0/24", &["192.0.2.12"]));
        let ops = r.plan(now);
        ok_all(&mut r, &ops, now);
        r.observe_dump([]);
        assert_eq!(
            r.plan(now),
            vec![Op::Add(via("10.244.2.0/24", &["192.0.2.12"]))]
        );
    }

    #[test]
    fn a_route_changed_by_hand_is_replaced_back() {
        let now = Instant::now();
        let mut r = Reconciler::new();
        r.mark_synced();
        r.set(via("10.244.2.0/24", &["192.0.2.12"]));
        let ops = r.plan(now);
        ok_all(&mut r, &ops, now);
        r.observe_dump([via("10.244.2.0/24", &["192.0.2.66"])]);
        assert_eq!(
            r.plan(now),
            vec![Op::Replace(via("10.244.2.0/24", &["192.0.2.12"]))]
        );
    }

    #[test]
    fn refused_route_backs_off_and_does_not_block_others() {
        let t0 = Instant::now();
        let mut r = Reconciler::new();
        r.mark_synced();
        r.set(via("10.244.2.0/24", &["192.0.2.12"]));
        r.set(via("10.244.3.0/24", &["198.51.100.1"]));
        let ops = r.plan(t0);
        assert_eq!(ops.len(), 2);
        r.record(
            vec![
                OpOutcome {
                    op: ops[0].clone(),
                    result: Ok(()),
                },
                OpOutcome {
                    op: ops[1].clone(),
                    result: Err("Network is unreachable".into()),
                },
            ],
            t0,
        );
        assert_eq!(r.installed(), 1);
        assert_eq!(r.failed().len(), 1);
        assert_eq!(r.failed()[0].reason, "Network is unreachable");
        assert!(r.plan(t0).is_empty(), "not before the backoff");
        assert_eq!(r.poll_timeout(), Some(t0 + FIRST_BACKOFF));
        let ops = r.plan(t0 + FIRST_BACKOFF);
        assert_eq!(ops, vec![Op::Add(via("10.244.3.0/24", &["198.51.100.1"]))]);
        r.record(
            vec![OpOutcome {
                op: ops[0].clone(),
                result: Err("Network is unreachable".into()),
            }],
            t0 + FIRST_BACKOFF,
        );
        assert_eq!(
            r.poll_timeout(),
            Some(t0 + FIRST_BACKOFF + FIRST_BACKOFF * 2),
            "backoff doubles"
        );
    }

    #[test]
    fn delete_of_a_route_already_gone_counts_as_done() {
        let now = Instant::now();
        let mut r = Reconciler::new();
        r.mark_synced();
        r.observe_dump([via("10.244.2.0/24", &["192.0.2.12"])]);
        let ops = r.plan(now);
        r.record(
            vec![OpOutcome {
                op: ops[0].clone(),
                result: Err("No such process".into()),
            }],
            now,
        );
        assert_eq!(r.installed(), 0);
        assert!(r.failed().is_empty());
        assert!(!r.has_work());
    }

    #[test]
    fn unchanged_set_does_no_work() {
        let now = Instant::now();
        let mut r = Reconciler::new();
        r.mark_synced();
        let routes: Vec<KernelRoute> = (0..100)
            .map(|i| via(&format!("10.244.{i}.0/24"), &["192.0.2.12"]))
            .collect();
        r.set_all(routes.clone());
        let ops = r.plan(now);
        ok_all(&mut r, &ops, now);
        r.set_all(routes);
        assert!(!r.has_work());
        assert!(r.plan(now).is_empty());
    }
}
