//! The policy worker: one task that owns the [`Applier`] and applies the
//! node's ruleset whenever something it depends on changed (the model, a
//! workload wired or gone), and every [`RESYNC`] in full (drift repair).
//!
//! Requests coalesce: everything queued when a round starts is served by
//! that round, so a burst of 20 CNI ADDs costs a few applies, not 20. A
//! request that carries an ack is answered after the round that saw it,
//! so its caller knows its workload's rules are in the kernel.
//!
//! A failed apply keeps the last good ruleset in force (the applier
//! guarantees it) and is reported in the status; the next round sends
//! the full state again.
//!
//! Speed (a CNI ADD waits for a round, so a round's cost is an ADD's):
//! - a round without an ack whose compiled ruleset equals the last one
//!   applied successfully is skipped (a Pod's `status.podIPs` written
//!   back, an unrelated object changed): it would run six processes to
//!   change nothing, and a CNI ADD arriving meanwhile would wait for it.
//!   Drift is still repaired by the [`RESYNC`] round, and rounds that
//!   carry an ack always apply (they check the kernel);
//! - the round runs as few processes as it can, at the same time where
//!   they do not depend on each other (see `tortie_policy::apply`): one
//!   `*-save` per family alongside `ipset restore`, then one
//!   `*-restore --noflush` per family whose chains changed. The workload
//!   interfaces are listed over netlink, not by `ip link`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tortie_policy::apply::Applier;
use tortie_policy::{compile, Snapshot};
use tracing::{debug, info, warn};

/// Full re-apply period (repairs rules or sets changed by hand).
pub const RESYNC: Duration = Duration::from_secs(60);

/// One request to the worker.
#[derive(Debug)]
pub struct Request {
    /// Why, for the debug log.
    pub reason: String,
    /// Answered with the round's result.
    pub ack: Option<oneshot::Sender<Result<(), String>>>,
}

/// Sends requests to the worker. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PolicyClient {
    tx: mpsc::UnboundedSender<Request>,
}

impl PolicyClient {
    /// A client and the receiver to give [`run`].
    pub fn new() -> (PolicyClient, mpsc::UnboundedReceiver<Request>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (PolicyClient { tx }, rx)
    }

    /// Asks for a round; does not wait.
    pub fn kick(&self, reason: &str) {
        let _ = self.tx.send(Request {
            reason: reason.to_string(),
            ack: None,
        });
    }

    /// Asks for a round and waits for its result.
    pub async fn apply_now(&self, reason: &str) -> Result<(), String> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Request {
                reason: reason.to_string(),
                ack: Some(ack),
            })
            .map_err(|_| "the policy worker is not running".to_string())?;
        rx.await
            .map_err(|_| "the policy worker is not running".to_string())?
    }
}

/// What one round did, for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub policies: u64,
    pub workloads: u64,
    /// Rejected policies, then the apply error if any.
    pub errors: Vec<String>,
    /// The ruleset is in the kernel.
    pub applied: bool,
}

/// Builds the compiler's input; `None` while there is nothing to apply
/// yet (no model).
pub type SnapshotFn = Arc<dyn Fn() -> Option<Snapshot> + Send + Sync>;

/// Runs rounds until every client is gone. `report` gets each round's
/// outcome and duration.
pub async fn run(
    mut rx: mpsc::UnboundedReceiver<Request>,
    applier: Applier,
    snapshot: SnapshotFn,
    report: impl Fn(&Outcome, Duration) + Send + Sync,
) {
    let mut applier = Some(applier);
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    let mut last_outcome: Option<Outcome> = None;
    // The kernel holds `applier.last_applied()` as of the last round, and
    // no resync is due: a round without an ack that would apply the same
    // ruleset may be skipped.
    let mut in_sync = false;
    loop {
        let mut batch = Vec::new();
        tokio::select! {
            r = rx.recv() => match r {
                Some(req) => batch.push(req),
                None => return,
            },
            _ = resync.tick() => {
                in_sync = false;
                if let Some(a) = applier.as_mut() {
                    a.resync();
                }
            }
        }
        let Some(mut a) = applier.take() else {
            return;
        };
        let started = Instant::now();
        let snap_fn = Arc::clone(&snapshot);
        // Building the snapshot lists interfaces (netlink), and applying
        // runs ipset/iptables: both block, so neither runs on a runtime
        // worker.
        let joined = tokio::task::spawn_blocking(move || {
            // Everything queued until the snapshot is read rides on this
            // round: a request is sent after its change (an ADD's IPAM
            // assignment) is made, so the snapshot below holds it. Under
            // load the thread may start late, and ADDs that came meanwhile
            // need no round of their own.
            while let Ok(req) = rx.try_recv() {
                batch.push(req);
            }
            let reasons: Vec<&str> = batch.iter().map(|r| r.reason.as_str()).collect();
            debug!(?reasons, "policy round");
            let may_skip = in_sync && batch.iter().all(|r| r.ack.is_none());
            let Some(snap) = snap_fn() else {
                return (a, rx, batch, None);
            };
            let snapped = started.elapsed();
            let compiled = compile(&snap);
            let stats = compiled.stats();
            let mut outcome = Outcome {
                policies: stats.policies as u64,
                workloads: stats.workloads as u64,
                errors: compiled.errors.iter().map(ToString::to_string).collect(),
                applied: false,
            };
            if may_skip && a.last_applied() == Some(&compiled.ruleset) {
                debug!("policy round: nothing changed, skipped");
                outcome.applied = true;
                return (a, rx, batch, Some((outcome, Ok(()))));
            }
            let compiled_at = started.elapsed();
            let result = a.apply(&compiled);
            debug!(
                snapshot_ms = snapped.as_millis() as u64,
                compile_ms = compiled_at.saturating_sub(snapped).as_millis() as u64,
                apply_ms = started.elapsed().saturating_sub(compiled_at).as_millis() as u64,
                "policy round timings"
            );
            match &result {
                Ok(rep) => {
                    outcome.applied = true;
                    for w in &rep.warnings {
                        warn!("policy: {w}");
                    }
                }
                Err(e) => outcome.errors.push(format!("{e}")),
            }
            let result = result.map(|_| ()).map_err(|e| e.to_string());
            (a, rx, batch, Some((outcome, result)))
        })
        .await;
        let (a, back, batch, done) = match joined {
            Ok(v) => v,
            Err(_) => {
                // The batch's acks went with the thread: their callers
                // hear that the worker is not running.
                warn!("policy: the apply thread panicked; the policy worker stops");
                return;
            }
        };
        applier = Some(a);
        rx = back;
        let Some((outcome, result)) = done else {
            for r in batch {
                if let Some(ack) = r.ack {
                    let _ = ack.send(Err("no model yet: the datastore has not loaded".into()));
                }
            }
            continue;
        };
        let took = started.elapsed();
        // A skipped round is reported too: it is the worker's heartbeat,
        // and its outcome is the one in force.
        in_sync = result.is_ok();
        if last_outcome.as_ref() != Some(&outcome) {
            match &result {
                Ok(()) => info!(
                    policies = outcome.policies,
                    workloads = outcome.workloads,
                    rejected = outcome.errors.len(),
                    ms = took.as_millis() as u64,
                    "policy applied"
                ),
                Err(e) => warn!("policy: {e}; the previous rules stay in force"),
            }
        }
        report(&outcome, took);
        last_outcome = Some(outcome);
        for r in batch {
            if let Some(ack) = r.ack {
                let _ = ack.send(result.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tortie_policy::apply::{Dataplane, RunError, Runner};
    use tortie_policy::backend::Backend;

    use super::*;

    /// Answers every save with nothing and counts restores.
    #[derive(Debug, Default, Clone)]
    struct Fake {
        restores: Arc<Mutex<u32>>,
        fail: bool,
    }

    impl Runner for Fake {
        fn run(
            &self,
            program: &str,
            _args: &[&str],
            _stdin: Option<&str>,
        ) -> Result<String, RunError> {
            if program.ends_with("-restore") {
                *self.restores.lock().expect("lock") += 1;
                if self.fail {
                    return Err(RunError::Failed {
                        command: program.into(),
                        status: "1".into(),
                        stderr: "boom".into(),
                    });
                }
            }
            Ok(String::new())
        }
    }

    fn applier(fake: Fake) -> Applier {
        Applier::new(
            Dataplane::new(Box::new(fake), Backend::Nft)
                .with_families(&[tortie_policy::Family::V4]),
        )
    }

    #[tokio::test]
    async fn acks_after_the_round_and_reports_failures() {
        let (client, rx) = PolicyClient::new();
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let o = Arc::clone(&outcomes);
        let fake = Fake::default();
        let task = tokio::spawn(run(
            rx,
            applier(fake.clone()),
            Arc::new(|| Some(Snapshot::default())),
            move |out, _| o.lock().expect("lock").push(out.clone()),
        ));
        client.apply_now("test").await.expect("applied");
        assert!(*fake.restores.lock().expect("lock") >= 1);
        assert!(outcomes.lock().expect("lock")[0].applied);
        drop(client);
        task.await.expect("join");

        let (client, rx) = PolicyClient::new();
        let failing = Fake {
            fail: true,
            ..Fake::default()
        };
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let o = Arc::clone(&outcomes);
        tokio::spawn(run(
            rx,
            applier(failing),
            Arc::new(|| Some(Snapshot::default())),
            move |out, _| o.lock().expect("lock").push(out.clone()),
        ));
        let e = client.apply_now("test").await.expect_err("fails");
        assert!(e.contains("boom"), "{e}");
        let got = outcomes.lock().expect("lock")[0].clone();
        assert!(!got.applied);
        assert!(
            got.errors.iter().any(|e| e.contains("previous rules kept")),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn unchanged_rounds_without_ack_are_skipped_acked_ones_apply() {
        let (client, rx) = PolicyClient::new();
        let fake = Fake::default();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(
            rx,
            applier(fake.clone()),
            Arc::new(|| Some(Snapshot::default())),
            move |out, _| {
                let _ = done_tx.send(out.applied);
            },
        ));
        client.apply_now("first").await.expect("applied");
        assert_eq!(done_rx.recv().await, Some(true));
        let after_first = *fake.restores.lock().expect("lock");
        client.kick("status.podIPs written");
        assert_eq!(done_rx.recv().await, Some(true), "reported as in force");
        assert_eq!(
            *fake.restores.lock().expect("lock"),
            after_first,
            "nothing changed: nothing run"
        );
        client.apply_now("CNI ADD").await.expect("applied");
        assert!(
            *fake.restores.lock().expect("lock") > after_first,
            "an acked round checks the kernel"
        );
    }

    #[tokio::test]
    async fn no_model_is_an_error_not_a_hang() {
        let (client, rx) = PolicyClient::new();
        tokio::spawn(run(
            rx,
            applier(Fake::default()),
            Arc::new(|| None),
            |_, _| {},
        ));
        let e = client.apply_now("cni").await.expect_err("no model");
        assert!(e.contains("no model"), "{e}");
    }
}
