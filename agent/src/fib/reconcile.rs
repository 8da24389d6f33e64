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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::route::{KernelRoute, RouteKey, RouteTarget};

/// The hasher of the reconciler's prefix-keyed maps: a million-route
/// install hashes every key a few times, and SipHash cost about a tenth of
/// it. foldhash is seeded per process, so a peer cannot precompute
/// colliding prefixes.
type FastState = foldhash::fast::RandomState;
type KeyMap<V> = HashMap<RouteKey, V, FastState>;

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

/// Everything known about one key. One map of these instead of one map
/// per view (desired, kernel, dirty): a route costs one hash lookup per
/// step (set, plan, record) instead of three or four, which at a million
/// routes is most of the reconciler's time.
#[derive(Debug, Default)]
struct Slot {
    desired: Option<RouteTarget>,
    /// What the kernel holds, as far as we know.
    kernel: Kernel,
    /// Listed in `Reconciler::dirty`.
    dirty: bool,
    /// Scratch mark of `set_all`: named by the new desired set.
    kept: bool,
}

/// The kernel's route for a slot's key. Usually the desired target, which
/// is then not stored twice: a million installed routes would otherwise
/// cost a million more allocations.
#[derive(Debug, Default)]
enum Kernel {
    #[default]
    Absent,
    /// The slot's desired target.
    Same,
    Other(RouteTarget),
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.desired.is_none() && matches!(self.kernel, Kernel::Absent) && !self.dirty
    }

    /// What the kernel holds, as far as we know.
    fn kernel(&self) -> Option<&RouteTarget> {
        match &self.kernel {
            Kernel::Absent => None,
            Kernel::Same => self.desired.as_ref(),
            Kernel::Other(t) => Some(t),
        }
    }

    /// Sets the desired target; `true` when there was one before.
    fn set_desired(&mut self, target: Option<RouteTarget>) -> bool {
        let old = std::mem::replace(&mut self.desired, target);
        let had = old.is_some();
        if matches!(self.kernel, Kernel::Same) {
            // The kernel still holds the old target.
            self.kernel = old.map_or(Kernel::Absent, Kernel::Other);
        }
        had
    }
}

/// Desired state, last known kernel state, and what is left to do.
#[derive(Debug, Default)]
pub struct Reconciler {
    slots: KeyMap<Slot>,
    /// Keys to look at in the next `plan`, each once (`Slot::dirty`).
    dirty: Vec<RouteKey>,
    /// The plan in progress (see `start_plan`): keys still to plan, or
    /// operations planned by a scan and not yet handed out. Keys not
    /// planned yet are still dirty: a dirty slot is listed in exactly one
    /// of `dirty` and the plan's unvisited keys.
    planning: PlanOrder,
    /// Refused routes; usually empty, so kept apart from the slots.
    failures: KeyMap<Failure>,
    /// What the kernel held before a planned replace, until its outcome
    /// comes back (a refusal leaves the old route in place).
    replaced: KeyMap<RouteTarget>,
    /// Slots with a desired target.
    n_desired: usize,
    /// Slots with a kernel target.
    n_installed: usize,
    synced: bool,
}

/// Marks `slot` dirty and lists its key, once.
fn mark(dirty: &mut Vec<RouteKey>, key: RouteKey, slot: &mut Slot) {
    if !slot.dirty {
        slot.dirty = true;
        dirty.push(key);
    }
}

/// Sets `slot.kernel`, keeping the installed count.
fn set_kernel(n_installed: &mut usize, slot: &mut Slot, kernel: Kernel) {
    match (
        matches!(slot.kernel, Kernel::Absent),
        matches!(kernel, Kernel::Absent),
    ) {
        (true, false) => *n_installed += 1,
        (false, true) => *n_installed -= 1,
        _ => {}
    }
    slot.kernel = kernel;
}

fn found(target: Option<RouteTarget>) -> Kernel {
    target.map_or(Kernel::Absent, Kernel::Other)
}

/// `RouteKey`'s order as plain integers, cheaper to compare a million
/// times than the derived comparison through `IpNet`'s enum.
fn order(key: &RouteKey) -> (u32, bool, u128, u8) {
    let (v6, addr) = match key.dst {
        IpNet::V4(n) => (false, u128::from(u32::from(n.addr()))),
        IpNet::V6(n) => (true, u128::from(n.addr())),
    };
    (key.table, v6, addr, key.dst.prefix_len())
}

/// Plans with at least this many IPv4 keys send those in bit-reversed
/// order (see [`Spread`]); shorter ones go in key order, which is easier
/// to read.
pub const SPREAD_MIN: usize = 1024;

/// The order a plan's items (keys to plan, or operations planned already)
/// go to the kernel in.
///
/// IPv4: bit-reversed index order over the sorted keys, key `rev(0)`,
/// `rev(1)`, ...: the first routes sent are spread over the whole range,
/// then the gaps between them are filled in, each pass at twice the
/// density. The kernel's IPv4 FIB (a level-compressed trie, resized as
/// nodes fill or empty) does much less resizing that way than in key
/// order, which fills or empties one subtree at a time. Measured with the
/// bare netlink writer of `fib_bench` (docs/benchmarks.md, "FIB
/// programming"), 100k /28s go in in 0.12-0.13 s instead of 0.16-0.20 s
/// and out in 0.05-0.06 s instead of 0.21-0.22 s; 1M in 1.2 s instead of
/// 1.8-2.0 s and out in 0.7 s instead of 2.3-2.6 s.
///
/// IPv6 (a radix tree, not resized): key order, after the IPv4 routes. The
/// same writer with 100k /124s was 1.3-1.4x slower to install and to delete
/// in bit-reversed order (1M: 1.4-1.7x), so IPv6 is not spread.
///
/// The order is free: a gateway must be reachable through a link-scope
/// route, in practice the connected route of the node's own subnet, never
/// a route of the same plan. Were one refused because its gateway's
/// device route (a local pod's /32) came later in the plan, it would be
/// retried with backoff like any refusal.
#[derive(Debug)]
struct Spread<T> {
    /// Sorted; the first `spread` items (IPv4) go bit-reversed, the rest
    /// in order. `None` once handed out.
    items: Vec<Option<T>>,
    spread: usize,
    /// While spreading, index `i` of the domain `0..2^bits` is item
    /// `reverse(i)` over `bits` bits, skipped when not below `spread`.
    bits: u32,
    /// Next index: in the domain while spreading, then into `items`.
    cursor: usize,
    spreading: bool,
    /// Items not yet handed out.
    left: usize,
}

impl<T> Default for Spread<T> {
    fn default() -> Self {
        Spread {
            items: Vec::new(),
            spread: 0,
            bits: 0,
            cursor: 0,
            spreading: false,
            left: 0,
        }
    }
}

impl<T> Spread<T> {
    /// `items` sorted by key; `is_v4` tells the IPv4 ones, which go first
    /// (a stable partition: both parts stay sorted).
    fn new(items: Vec<T>, is_v4: impl Fn(&T) -> bool) -> Self {
        let left = items.len();
        let mut spread = items.iter().take_while(|t| is_v4(t)).count();
        let items: Vec<Option<T>> = if items[spread..].iter().any(&is_v4) {
            // Several tables: IPv4 of a later table after IPv6 of an
            // earlier one.
            let (v4, v6): (Vec<T>, Vec<T>) = items.into_iter().partition(|t| is_v4(t));
            spread = v4.len();
            v4.into_iter().chain(v6).map(Some).collect()
        } else {
            // One family or one table (the usual case): in place.
            items.into_iter().map(Some).collect()
        };
        Spread {
            items,
            spread,
            bits: spread.next_power_of_two().trailing_zeros(),
            cursor: 0,
            spreading: spread >= SPREAD_MIN,
            left,
        }
    }

    fn left(&self) -> usize {
        self.left
    }

    fn next(&mut self) -> Option<T> {
        while self.left > 0 {
            let at = if self.spreading {
                let bits = self.bits;
                let i = self.cursor;
                self.cursor += 1;
                if self.cursor >> bits != 0 {
                    // The domain is done: the rest in order.
                    self.spreading = false;
                    self.cursor = self.spread;
                }
                let at = i.reverse_bits() >> (usize::BITS - bits);
                if at >= self.spread {
                    continue;
                }
                at
            } else {
                let at = self.cursor;
                self.cursor += 1;
                at
            };
            if let Some(item) = self.items.get_mut(at).and_then(Option::take) {
                self.left -= 1;
                if self.left == 0 {
                    self.items = Vec::new();
                }
                return Some(item);
            }
        }
        None
    }
}

/// The plan in progress: keys still to plan, or operations planned
/// already by a scan of the table (see `Reconciler::start_plan`).
#[derive(Debug, Default)]
struct PlanOrder {
    keys: Spread<RouteKey>,
    ready: Spread<Op>,
}

impl PlanOrder {
    /// Keys to plan, sorted.
    fn new(keys: Vec<RouteKey>) -> Self {
        PlanOrder {
            keys: Spread::new(keys, |k| k.dst.addr().is_ipv4()),
            ready: Spread::default(),
        }
    }

    /// A plan made already: `ops` sorted by key.
    fn ready(ops: Vec<Op>) -> Self {
        PlanOrder {
            keys: Spread::default(),
            ready: Spread::new(ops, |op| op.route().key.dst.addr().is_ipv4()),
        }
    }

    fn left(&self) -> usize {
        self.keys.left() + self.ready.left()
    }

    fn next_key(&mut self) -> Option<RouteKey> {
        self.keys.next()
    }

    fn next_ready(&mut self) -> Option<Op> {
        self.ready.next()
    }
}

/// Plans of at least this many keys, a quarter of the table or more, and
/// mostly deletions, are made by one walk of the table in memory order
/// (see `Reconciler::start_plan`).
const SCAN_MIN: usize = 4096;

/// Plans one due dirty slot: pushes its operation, if any, and updates the
/// slot as if the kernel accepts it. `true` when the slot needs nothing
/// (settled: its failure, if any, is over).
fn plan_slot(
    key: RouteKey,
    slot: &mut Slot,
    synced: bool,
    ops: &mut Vec<Op>,
    replaced: &mut KeyMap<RouteTarget>,
    n_installed: &mut usize,
) -> bool {
    slot.dirty = false;
    let Some(want) = &slot.desired else {
        if synced {
            if let Kernel::Other(have) = std::mem::take(&mut slot.kernel) {
                *n_installed -= 1;
                ops.push(Op::Delete(KernelRoute { key, target: have }));
                return false;
            }
        }
        return true;
    };
    match &slot.kernel {
        Kernel::Absent => {
            ops.push(Op::Add(KernelRoute {
                key,
                target: want.clone(),
            }));
            set_kernel(n_installed, slot, Kernel::Same);
            false
        }
        Kernel::Other(have) if !want.satisfied_by(have) => {
            ops.push(Op::Replace(KernelRoute {
                key,
                target: want.clone(),
            }));
            if let Kernel::Other(old) = std::mem::replace(&mut slot.kernel, Kernel::Same) {
                replaced.insert(key, old);
            }
            false
        }
        Kernel::Same | Kernel::Other(_) => true,
    }
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
        for (key, slot) in self.slots.iter_mut() {
            if slot.kernel().is_some() && slot.desired.is_none() {
                mark(&mut self.dirty, *key, slot);
            }
        }
    }

    /// Wants `route` in the kernel (replacing any other desired target for
    /// its key).
    pub fn set(&mut self, route: KernelRoute) {
        let KernelRoute { key, target } = route;
        let slot = self.slots.entry(key).or_default();
        if slot.desired.as_ref() != Some(&target) {
            if !slot.set_desired(Some(target)) {
                self.n_desired += 1;
            }
            mark(&mut self.dirty, key, slot);
            if !self.failures.is_empty() {
                self.failures.remove(&key);
            }
        }
    }

    /// No longer wants a route for `key`.
    pub fn remove(&mut self, key: RouteKey) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        if slot.set_desired(None) {
            self.n_desired -= 1;
            mark(&mut self.dirty, key, slot);
            if !self.failures.is_empty() {
                self.failures.remove(&key);
            }
        }
    }

    /// Replaces the whole desired set (a key given twice takes the last
    /// target).
    pub fn set_all(&mut self, routes: impl IntoIterator<Item = KernelRoute>) {
        let routes = routes.into_iter();
        // Into an empty table (the first full set), nothing can be left
        // out, and the walk below is skipped.
        let first = self.slots.is_empty();
        self.slots.reserve(routes.size_hint().0);
        if first {
            self.dirty.reserve(routes.size_hint().0);
        }
        for KernelRoute { key, target } in routes {
            let slot = self.slots.entry(key).or_default();
            slot.kept = !first;
            if slot.desired.as_ref() != Some(&target) {
                if !slot.set_desired(Some(target)) {
                    self.n_desired += 1;
                }
                mark(&mut self.dirty, key, slot);
                if !self.failures.is_empty() {
                    self.failures.remove(&key);
                }
            }
        }
        if first {
            return;
        }
        for (key, slot) in self.slots.iter_mut() {
            if std::mem::take(&mut slot.kept) {
                continue;
            }
            if slot.set_desired(None) {
                self.n_desired -= 1;
                mark(&mut self.dirty, *key, slot);
                if !self.failures.is_empty() {
                    self.failures.remove(key);
                }
            }
        }
    }

    /// Feeds a fresh dump of the kernel's routes of tortie's protocol (all
    /// tables tortie uses). Keys whose kernel state differs from what we
    /// believed become dirty, so hand-made changes are repaired.
    pub fn observe_dump(&mut self, routes: impl IntoIterator<Item = KernelRoute>) {
        let routes = routes.into_iter();
        let mut fresh: KeyMap<RouteTarget> =
            KeyMap::with_capacity_and_hasher(routes.size_hint().0, FastState::default());
        fresh.extend(routes.map(|r| (r.key, r.target)));
        for (key, slot) in self.slots.iter_mut() {
            let found = fresh.remove(key);
            // Keep our own (desired-form) belief where the kernel agrees, so
            // the next dump compares like with like.
            let agrees = match (slot.kernel(), &found) {
                (Some(believed), Some(f)) => believed.satisfied_by(f),
                // A key that is desired but absent from both views (say, a
                // route that failed before the dump) must be retried too.
                (None, None) => slot.desired.is_none(),
                _ => false,
            };
            if !agrees {
                set_kernel(&mut self.n_installed, slot, self::found(found));
                mark(&mut self.dirty, *key, slot);
            }
        }
        self.slots.reserve(fresh.len());
        for (key, found) in fresh {
            let mut slot = Slot::default();
            set_kernel(&mut self.n_installed, &mut slot, Kernel::Other(found));
            mark(&mut self.dirty, key, &mut slot);
            self.slots.insert(key, slot);
        }
    }

    /// The operations to run now, for dirty keys whose backoff (if any) has
    /// expired, sorted by key. Planned keys stop being dirty.
    ///
    /// The reconciler takes each operation as done when it plans it (the
    /// kernel accepts nearly all of them); [`Reconciler::record_one`]
    /// undoes that for a refusal and puts the key back with a backoff. So
    /// recording an accepted operation touches nothing, and the outcomes
    /// of one plan must be recorded before the next plan. Outcomes never
    /// recorded (the socket failed) are repaired by the next dump, like any
    /// other drift.
    pub fn plan(&mut self, now: Instant) -> Vec<Op> {
        self.start_plan(now);
        self.next_ops(usize::MAX)
    }

    /// Starts a plan that is made batch by batch with
    /// [`Reconciler::next_ops`]: the same operations as [`Reconciler::plan`],
    /// in the same order, but the first batch can go to the kernel while
    /// the rest is still being planned. At a million routes planning takes
    /// a few hundred milliseconds; made lazily it hides behind the kernel's
    /// work on the batches already sent.
    ///
    /// Keys of a plan not finished when the next one starts stay dirty and
    /// are planned again.
    pub fn start_plan(&mut self, now: Instant) {
        // Operations of an unfinished plan that were never sent: the
        // kernel still holds what it held.
        while let Some(op) = self.planning.next_ready() {
            self.unplan(op);
        }
        // Old targets of replaces whose outcome never came back.
        self.replaced.clear();
        // Keys of an unfinished plan are still dirty (their flag is set):
        // list them again.
        while let Some(key) = self.planning.next_key() {
            self.dirty.push(key);
        }
        // Mostly deletions of a large part of the table (a peer or a pool
        // gone, everything withdrawn): planned at once by one walk of the
        // table in memory order, then sorted. Looking each key up instead
        // costs a cache and TLB miss or two, about a microsecond per route
        // on a VM, which is slower than the kernel deletes. Installs stay on
        // the lazy path below: there the kernel is the slower side.
        let n = self.dirty.len();
        let deletions = self.n_installed.saturating_sub(self.n_desired);
        if n >= SCAN_MIN && n >= self.slots.len() / 4 && deletions >= n / 2 {
            let mut ops = self.plan_by_scan(now);
            ops.sort_unstable_by_key(|op| order(&op.route().key));
            self.planning = PlanOrder::ready(ops);
            return;
        }
        let mut keys = std::mem::take(&mut self.dirty);
        if !self.failures.is_empty() {
            let failures = &self.failures;
            let (due, later): (Vec<RouteKey>, Vec<RouteKey>) = keys
                .into_iter()
                .partition(|key| failures.get(key).is_none_or(|f| f.retry_at <= now));
            keys = due;
            self.dirty = later;
        }
        // Integer comparisons: sorting a million keys through `IpNet`'s
        // derived order cost several times as much. Keys set in order (a
        // full table, a withdrawal of everything) are a sorted run already.
        keys.sort_unstable_by_key(order);
        self.planning = PlanOrder::new(keys);
    }

    /// Plans every due dirty slot in one walk of the table, in its memory
    /// order.
    fn plan_by_scan(&mut self, now: Instant) -> Vec<Op> {
        let mut ops = Vec::with_capacity(self.dirty.len());
        let mut later = Vec::new();
        let mut settled_keys = Vec::new();
        self.dirty.clear();
        let synced = self.synced;
        let failures = &self.failures;
        let replaced = &mut self.replaced;
        let n_installed = &mut self.n_installed;
        self.slots.retain(|key, slot| {
            if !slot.dirty {
                return true;
            }
            if !failures.is_empty() && failures.get(key).is_some_and(|f| f.retry_at > now) {
                later.push(*key);
                return true;
            }
            if plan_slot(*key, slot, synced, &mut ops, replaced, n_installed)
                && !failures.is_empty()
            {
                settled_keys.push(*key);
            }
            !slot.is_empty()
        });
        self.dirty = later;
        for key in settled_keys {
            self.failures.remove(&key);
        }
        ops
    }

    /// The next operations of the plan begun by
    /// [`Reconciler::start_plan`], at most `max` of them; fewer only when
    /// the plan is finished (then an empty list).
    pub fn next_ops(&mut self, max: usize) -> Vec<Op> {
        let mut ops = Vec::with_capacity(self.planning.left().min(max));
        while ops.len() < max {
            match self.planning.next_ready() {
                Some(op) => ops.push(op),
                None => break,
            }
        }
        while ops.len() < max {
            let Some(key) = self.planning.next_key() else {
                break;
            };
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            let settled = plan_slot(
                key,
                slot,
                self.synced,
                &mut ops,
                &mut self.replaced,
                &mut self.n_installed,
            );
            if slot.is_empty() {
                self.slots.remove(&key);
            }
            if settled && !self.failures.is_empty() {
                self.failures.remove(&key);
            }
        }
        ops
    }

    /// Takes the kernel's answers to planned operations.
    pub fn record(&mut self, outcomes: impl IntoIterator<Item = OpOutcome>, now: Instant) {
        for o in outcomes {
            self.record_one(o, now);
        }
    }

    /// Takes the kernel's answer to one planned operation (as they arrive,
    /// batch by batch, from `RouteSocket::apply_each`). An accepted one
    /// only clears a past failure: `plan` already counted it as done.
    pub fn record_one(&mut self, outcome: OpOutcome, now: Instant) {
        let OpOutcome { op, result } = outcome;
        let key = op.route().key;
        let reason = match result {
            Ok(()) => {
                if !self.failures.is_empty() {
                    self.failures.remove(&key);
                }
                if matches!(op, Op::Replace(_)) {
                    self.replaced.remove(&key);
                }
                return;
            }
            // "No such process" on delete: already gone, which is what we
            // wanted.
            Err(reason) if matches!(op, Op::Delete(_)) && reason.contains("No such process") => {
                if !self.failures.is_empty() {
                    self.failures.remove(&key);
                }
                return;
            }
            Err(reason) => reason,
        };
        // The kernel kept what it had.
        self.unplan(op);
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
    }

    /// Undoes what planning `op` assumed (that the kernel took it): the
    /// kernel holds what it held before, and the key is dirty again.
    fn unplan(&mut self, op: Op) {
        let key = op.route().key;
        let slot = self.slots.entry(key).or_default();
        let had = match op {
            Op::Add(_) => None,
            Op::Replace(_) => self.replaced.remove(&key),
            Op::Delete(r) => Some(r.target),
        };
        set_kernel(&mut self.n_installed, slot, found(had));
        mark(&mut self.dirty, key, slot);
    }

    /// When the next refused route is due for a retry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.failures
            .iter()
            .filter(|(k, _)| self.slots.get(*k).is_some_and(|s| s.dirty))
            .map(|(_, f)| f.retry_at)
            .min()
    }

    /// Whether anything is waiting to be planned.
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty() || self.planning.left() > 0
    }

    /// Routes of ours the kernel holds, as far as we know.
    pub fn installed(&self) -> usize {
        self.n_installed
    }

    /// Desired routes.
    pub fn desired(&self) -> usize {
        self.n_desired
    }

    /// Whether `routes` are in the kernel as given: `Some(Ok)` when every
    /// one is, `Some(Err(reason))` when the kernel refused one of them or
    /// another target was asked for its key since, `None` while pending.
    pub fn state_of(&self, routes: &[KernelRoute]) -> Option<Result<(), String>> {
        let mut pending = false;
        for r in routes {
            let slot = self.slots.get(&r.key);
            if slot.and_then(|s| s.desired.as_ref()) != Some(&r.target) {
                return Some(Err(format!("{}: replaced by a later request", r.key.dst)));
            }
            if let Some(f) = self.failures.get(&r.key) {
                return Some(Err(format!("{r}: {}", f.reason)));
            }
            if !slot
                .and_then(Slot::kernel)
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
    use crate::fib::route::{NextHop, MAIN_TABLE};
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
        refuse(r, ops, |_| false, "", now);
    }

    /// Records `ops` as the kernel answered them: `reason` for those
    /// `refused` picks, accepted for the rest.
    fn refuse(
        r: &mut Reconciler,
        ops: &[Op],
        refused: impl Fn(&Op) -> bool,
        reason: &str,
        now: Instant,
    ) {
        r.record(
            ops.iter().map(|op| OpOutcome {
                op: op.clone(),
                result: if refused(op) {
                    Err(reason.into())
                } else {
                    Ok(())
                },
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
        refuse(
            &mut r,
            &ops,
            |op| op.route() == &other,
            "No such device",
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
        refuse(
            &mut r,
            &ops,
            |op| op == &ops[1],
            "Network is unreachable",
            t0,
        );
        assert_eq!(r.installed(), 1);
        assert_eq!(r.failed().len(), 1);
        assert_eq!(r.failed()[0].reason, "Network is unreachable");
        assert!(r.plan(t0).is_empty(), "not before the backoff");
        assert_eq!(r.poll_timeout(), Some(t0 + FIRST_BACKOFF));
        let ops = r.plan(t0 + FIRST_BACKOFF);
        assert_eq!(ops, vec![Op::Add(via("10.244.3.0/24", &["198.51.100.1"]))]);
        refuse(
            &mut r,
            &ops,
            |_| true,
            "Network is unreachable",
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
        refuse(&mut r, &ops, |_| true, "No such process", now);
        assert_eq!(r.installed(), 0);
        assert!(r.failed().is_empty());
        assert!(!r.has_work());
    }

    #[test]
    fn a_refused_replace_keeps_the_old_route_and_a_refused_delete_the_route() {
        let t0 = Instant::now();
        let mut r = Reconciler::new();
        r.mark_synced();
        r.set(via("10.244.2.0/24", &["192.0.2.12"]));
        let ops = r.plan(t0);
        ok_all(&mut r, &ops, t0);
        r.set(via("10.244.2.0/24", &["192.0.2.13"]));
        let ops = r.plan(t0);
        assert_eq!(
            ops,
            vec![Op::Replace(via("10.244.2.0/24", &["192.0.2.13"]))]
        );
        refuse(&mut r, &ops, |_| true, "Network is unreachable", t0);
        assert_eq!(r.installed(), 1);
        // The kernel still has the old next hop: withdrawing now deletes it.
        r.remove(RouteKey {
            table: 254,
            dst: net("10.244.2.0/24"),
        });
        let ops = r.plan(t0);
        assert_eq!(ops, vec![Op::Delete(via("10.244.2.0/24", &["192.0.2.12"]))]);
        assert_eq!(r.installed(), 0, "counted as done when planned");
        refuse(&mut r, &ops, |_| true, "Operation not permitted", t0);
        assert_eq!(r.installed(), 1, "a refused delete leaves the route");
        assert_eq!(r.failed()[0].reason, "Operation not permitted");
        assert!(r.plan(t0).is_empty(), "not before the backoff");
        assert_eq!(
            r.plan(t0 + FIRST_BACKOFF),
            vec![Op::Delete(via("10.244.2.0/24", &["192.0.2.12"]))]
        );
    }

    /// `ops` are every key once, in bit-reversed order of the sorted keys.
    fn assert_spread(ops: &[Op]) {
        let mut sorted: Vec<RouteKey> = ops.iter().map(|op| op.route().key).collect();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ops.len(), "each key once");
        assert!(ops.len().is_power_of_two(), "the test sizes are");
        let bits = ops.len().trailing_zeros();
        for (i, op) in ops.iter().enumerate() {
            let at = i.reverse_bits() >> (usize::BITS - bits);
            assert_eq!(op.route().key, sorted[at], "op {i}");
        }
    }

    #[test]
    fn spread_order_visits_every_key_once_at_any_size() {
        for n in [SPREAD_MIN - 1, SPREAD_MIN, SPREAD_MIN + 1, 3000, 4096] {
            let keys: Vec<RouteKey> = (0..n as u32)
                .map(|i| RouteKey {
                    table: MAIN_TABLE,
                    dst: IpNet::V4(
                        ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(i << 8), 24).expect("prefix"),
                    ),
                })
                .collect();
            let mut order = PlanOrder::new(keys.clone());
            let mut got = Vec::new();
            while let Some(k) = order.next_key() {
                got.push(k);
                assert_eq!(order.left(), n - got.len());
            }
            if n < SPREAD_MIN {
                assert_eq!(got, keys, "small plans go in key order");
            } else {
                assert_ne!(got, keys);
                assert_eq!(got[0], keys[0]);
                assert_eq!(got[1], keys[n.next_power_of_two() / 2], "then the middle");
            }
            got.sort();
            assert_eq!(got, keys, "every key once at {n}");
        }
    }

    #[test]
    fn ipv4_of_every_table_goes_before_ipv6() {
        let key = |table: u32, dst: &str| RouteKey {
            table,
            dst: net(dst),
        };
        let mut keys = vec![
            key(100, "10.1.0.0/16"),
            key(100, "fd00:1::/64"),
            key(MAIN_TABLE, "10.2.0.0/16"),
            key(MAIN_TABLE, "fd00:2::/64"),
        ];
        keys.sort_unstable_by_key(order);
        let mut plan = PlanOrder::new(keys);
        let got: Vec<RouteKey> = std::iter::from_fn(|| plan.next_key()).collect();
        assert_eq!(
            got,
            vec![
                key(100, "10.1.0.0/16"),
                key(MAIN_TABLE, "10.2.0.0/16"),
                key(100, "fd00:1::/64"),
                key(MAIN_TABLE, "fd00:2::/64"),
            ]
        );
    }

    #[test]
    fn ipv6_keys_follow_the_spread_ipv4_ones_in_key_order() {
        let v4: Vec<RouteKey> = (0..2000u32)
            .map(|i| RouteKey {
                table: MAIN_TABLE,
                dst: IpNet::V4(
                    ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(i << 8), 24).expect("prefix"),
                ),
            })
            .collect();
        let v6: Vec<RouteKey> = (0..10u128)
            .map(|i| RouteKey {
                table: MAIN_TABLE,
                dst: IpNet::V6(
                    ipnet::Ipv6Net::new(
                        std::net::Ipv6Addr::from((0xfd00u128 << 112) | (i << 64)),
                        64,
                    )
                    .expect("prefix"),
                ),
            })
            .collect();
        let mut all: Vec<RouteKey> = v4.iter().chain(&v6).copied().collect();
        all.sort_unstable_by_key(order);
        let mut plan = PlanOrder::new(all);
        let got: Vec<RouteKey> = std::iter::from_fn(|| plan.next_key()).collect();
        assert_eq!(got.len(), 2010);
        assert_eq!(got[0], v4[0]);
        assert_eq!(got[1], v4[1024], "IPv4 spread over 2^11 slots");
        assert_eq!(&got[2000..], &v6[..], "IPv6 last, in key order");
        let mut back = got[..2000].to_vec();
        back.sort();
        assert_eq!(back, v4);
    }

    #[test]
    fn a_large_plan_is_spread_and_minimal_like_a_small_one() {
        let t0 = Instant::now();
        let n = 8192u32;
        let route = |i: u32, gw: &str| {
            let dst = ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(0x0a00_0000 | (i << 4)), 28)
                .expect("prefix");
            via(&dst.to_string(), &[gw])
        };
        let mut r = Reconciler::new();
        r.mark_synced();
        // Backwards, so that neither insertion nor table order is sorted.
        r.set_all((0..n).rev().map(|i| route(i, "192.0.2.12")));
        let ops = r.plan(t0);
        assert_eq!(ops.len(), n as usize);
        assert_spread(&ops);
        assert!(ops.iter().all(|op| matches!(op, Op::Add(_))));
        // One refused (route 7), the rest accepted.
        let refused = route(7, "192.0.2.12");
        refuse(
            &mut r,
            &ops,
            |op| op.route() == &refused,
            "Network is unreachable",
            t0,
        );
        assert_eq!(r.installed(), n as usize - 1);
        // The even routes move; route 7 (odd: unchanged) is still due
        // later.
        r.set_all((0..n).map(|i| {
            route(
                i,
                if i % 2 == 0 {
                    "192.0.2.13"
                } else {
                    "192.0.2.12"
                },
            )
        }));
        let ops = r.plan(t0);
        assert_eq!(ops.len(), n as usize / 2, "route 7 waits for its backoff");
        assert_spread(&ops);
        assert!(ops.iter().all(|op| matches!(op, Op::Replace(_))));
        ok_all(&mut r, &ops, t0);
        let ops = r.plan(t0 + FIRST_BACKOFF);
        assert_eq!(ops, vec![Op::Add(route(7, "192.0.2.12"))]);
        ok_all(&mut r, &ops, t0);
        assert!(r.failed().is_empty());
        // Withdraw everything: a large deletion, planned by one walk of
        // the table, sent in the same spread order.
        r.set_all([]);
        let ops = r.plan(t0 + FIRST_BACKOFF);
        assert_eq!(ops.len(), n as usize);
        assert!(ops.iter().all(|op| matches!(op, Op::Delete(_))));
        assert_spread(&ops);
        assert_eq!(r.installed(), 0);
        assert_eq!(r.desired(), 0);
        ok_all(&mut r, &ops, t0);
        assert!(r.plan(t0).is_empty());
    }

    #[test]
    fn unsent_operations_of_a_scanned_plan_are_planned_again() {
        let t0 = Instant::now();
        let n = 5000u32;
        let route = |i: u32| {
            let dst = ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(0x0a00_0000 | (i << 4)), 28)
                .expect("prefix");
            via(&dst.to_string(), &["192.0.2.12"])
        };
        let mut r = Reconciler::new();
        r.mark_synced();
        r.set_all((0..n).map(route));
        let ops = r.plan(t0);
        ok_all(&mut r, &ops, t0);
        // Keep 100, withdraw the rest: mostly deletions, so scanned.
        r.set_all((0..100).map(route));
        r.start_plan(t0);
        let first = r.next_ops(1024);
        assert_eq!(first.len(), 1024);
        assert!(first.iter().all(|op| matches!(op, Op::Delete(_))));
        // The first batch refused one; the socket failed before the rest
        // was sent.
        refuse(
            &mut r,
            &first,
            |op| op == &first[3],
            "Operation not permitted",
            t0,
        );
        // A scanned plan counts all its operations as done when planned:
        // the 100 kept and the refused one are left.
        assert_eq!(r.installed(), 101);
        // The next plan sends what was never sent; the refused one waits
        // for its backoff.
        let rest = r.plan(t0);
        assert_eq!(rest.len(), n as usize - 100 - 1024);
        assert!(!rest.contains(&first[3]));
        assert!(rest.iter().all(|op| !first.contains(op)));
        ok_all(&mut r, &rest, t0);
        assert_eq!(r.plan(t0 + FIRST_BACKOFF), vec![first[3].clone()]);
        ok_all(&mut r, &[first[3].clone()], t0);
        assert_eq!(r.installed(), 100);
        assert!(r.plan(t0 + MAX_BACKOFF).is_empty());
    }

    #[test]
    fn order_is_the_keys_order() {
        let keys = [
            RouteKey {
                table: 254,
                dst: net("10.0.0.0/8"),
            },
            RouteKey {
                table: 254,
                dst: net("10.0.0.0/24"),
            },
            RouteKey {
                table: 254,
                dst: net("10.0.1.0/24"),
            },
            RouteKey {
                table: 254,
                dst: net("fd00::/8"),
            },
            RouteKey {
                table: 254,
                dst: net("::/0"),
            },
            RouteKey {
                table: 100,
                dst: net("192.0.2.0/24"),
            },
            RouteKey {
                table: 1000,
                dst: net("0.0.0.0/0"),
            },
        ];
        for a in &keys {
            for b in &keys {
                assert_eq!(order(a).cmp(&order(b)), a.cmp(b), "{a:?} {b:?}");
            }
        }
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

    /// A mixed plan: adds, a replace, deletes, IPv4 and IPv6.
    fn mixed(r: &mut Reconciler) {
        r.mark_synced();
        r.observe_dump([
            via("10.244.2.0/24", &["192.0.2.12"]),
            via("fd00:9::/64", &["2001:db8::19"]),
            KernelRoute::blackhole(net("10.244.9.0/24")),
        ]);
        let mut want: Vec<KernelRoute> = (10..40)
            .map(|i| via(&format!("10.244.{i}.0/24"), &["192.0.2.11", "192.0.2.13"]))
            .collect();
        want.push(via("10.244.2.0/24", &["192.0.2.13"]));
        want.push(via("fd00:1::/64", &["2001:db8::11"]));
        r.set_all(want);
    }

    #[test]
    fn a_plan_made_batch_by_batch_is_the_plan_made_at_once() {
        let now = Instant::now();
        let mut eager = Reconciler::new();
        mixed(&mut eager);
        let all = eager.plan(now);
        assert_eq!(all.len(), 34, "30 adds, 1 replace, 2 deletes, 1 add v6");
        for size in [1, 7, 34, 100] {
            let mut lazy = Reconciler::new();
            mixed(&mut lazy);
            lazy.start_plan(now);
            let mut got = Vec::new();
            loop {
                assert!(lazy.has_work() || got.len() == all.len());
                let batch = lazy.next_ops(size);
                assert!(batch.len() <= size);
                if batch.is_empty() {
                    break;
                }
                // Full batches until the last one.
                assert!(batch.len() == size || got.len() + batch.len() == all.len());
                ok_all(&mut lazy, &batch, now);
                got.extend(batch);
            }
            assert_eq!(got, all, "batches of {size}");
            assert!(!lazy.has_work());
            assert_eq!(lazy.installed(), eager.installed());
            assert!(lazy.plan(now).is_empty(), "converged");
        }
    }

    #[test]
    fn keys_of_an_unfinished_plan_are_planned_again() {
        let now = Instant::now();
        let mut r = Reconciler::new();
        mixed(&mut r);
        r.start_plan(now);
        let first = r.next_ops(5);
        assert_eq!(first.len(), 5);
        ok_all(&mut r, &first, now);
        // The socket failed: the rest was never planned. A new target for
        // a key not reached yet, and one for a key already planned.
        r.set(via("10.244.39.0/24", &["192.0.2.14"]));
        r.set(via("10.244.10.0/24", &["192.0.2.14"]));
        assert!(r.has_work());
        let rest = r.plan(now);
        assert_eq!(rest.len(), 34 - 5 + 1);
        assert!(rest.contains(&Op::Add(via("10.244.39.0/24", &["192.0.2.14"]))));
        assert!(rest.contains(&Op::Replace(via("10.244.10.0/24", &["192.0.2.14"]))));
        assert!(rest.windows(2).all(|w| w[0].route().key < w[1].route().key));
        ok_all(&mut r, &rest, now);
        assert!(!r.has_work());
        assert!(r.plan(now).is_empty());
        assert_eq!(r.installed(), 32);
    }

    #[test]
    fn a_refusal_during_a_lazy_plan_is_retried_after_its_backoff() {
        let now = Instant::now();
        let mut r = Reconciler::new();
        mixed(&mut r);
        r.start_plan(now);
        let batch = r.next_ops(3);
        // The replace (the first key in order) is refused mid-plan.
        refuse(
            &mut r,
            &batch,
            |op| matches!(op, Op::Replace(_)),
            "Network is unreachable",
            now,
        );
        let rest = r.next_ops(usize::MAX);
        assert_eq!(rest.len(), 31);
        assert!(!rest.iter().any(|op| matches!(op, Op::Replace(_))));
        ok_all(&mut r, &rest, now);
        assert!(r.plan(now).is_empty(), "not before the backoff");
        assert_eq!(
            r.plan(now + FIRST_BACKOFF),
            vec![Op::Replace(via("10.244.2.0/24", &["192.0.2.13"]))]
        );
    }
}
