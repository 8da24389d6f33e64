//! Write-back to the Kubernetes API (`--datastore kubernetes` only): the
//! Node condition `TortieBGPReady` from the sessions' states, and Warning
//! Events for the model's object errors. Owns only the pacing (when to
//! write); what to write is [`KubeWriter`]'s. Never touches the dataplane,
//! and a failed write only logs: the API may be down while routing works.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::Agent;
use crate::datastore::kube::{KubeWriter, PeerReport};
use crate::status::Status;

/// How often the sessions are looked at.
const POLL: Duration = Duration::from_secs(1);
/// Shortest gap between two condition writes: a flapping session must not
/// turn into a PATCH storm.
const MIN_GAP: Duration = Duration::from_secs(3);
/// Heartbeat: the condition is written this often even when unchanged
/// (`lastHeartbeatTime`), and failed writes are retried at this pace at
/// the latest.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// The sessions as the Node condition reports them, sorted by address so
/// that only a real change compares unequal.
pub fn peer_reports(status: &Status) -> Vec<PeerReport> {
    let mut peers: Vec<PeerReport> = status
        .peers
        .iter()
        .map(|p| PeerReport {
            address: p.address.clone(),
            state: p.state.clone(),
            last_error: (!p.last_error.is_empty()).then(|| p.last_error.clone()),
        })
        .collect();
    peers.sort_by(|a, b| a.address.cmp(&b.address));
    peers
}

/// Pacing of condition writes (pure: time comes in).
#[derive(Debug, Default)]
pub struct Pacer {
    /// When the last write was tried, and what it wrote (`None`: it failed).
    last_sent: Option<(Instant, Option<Vec<PeerReport>>)>,
}

impl Pacer {
    /// Whether to write now, and whether as a heartbeat (unchanged).
    pub fn decide(&self, peers: &[PeerReport], now: Instant) -> Option<bool> {
        match &self.last_sent {
            None => Some(false),
            Some((at, sent)) => {
                let since = now.saturating_duration_since(*at);
                if since < MIN_GAP {
                    None
                } else if sent.as_deref() != Some(peers) {
                    Some(false)
                } else if since >= HEARTBEAT {
                    Some(true)
                } else {
                    None
                }
            }
        }
    }

    /// A write succeeded.
    pub fn sent(&mut self, peers: Vec<PeerReport>, now: Instant) {
        self.last_sent = Some((now, Some(peers)));
    }

    /// A write failed: try again after [`MIN_GAP`] (and as a change, so the
    /// condition gets written even when the sessions stay as they are).
    pub fn failed(&mut self, now: Instant) {
        self.last_sent = Some((now, None));
    }
}

/// Runs the write-back until the agent stops.
pub async fn run(agent: Arc<Agent>, writer: KubeWriter) {
    let mut generation = agent.model_generation.subscribe();
    let mut pacer = Pacer::default();
    let mut reported_errors: Option<Vec<String>> = None;
    let mut errors_failed_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = generation.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
        // Events: only when the model's errors changed (the writer also
        // remembers which it reported, so each goes out once), or to retry
        // a failed write.
        if let Some(model) = agent.model() {
            let now: Vec<String> = model
                .object_errors
                .iter()
                .map(ToString::to_string)
                .collect();
            let retry = errors_failed_at.is_some_and(|t| t.elapsed() >= MIN_GAP);
            if reported_errors.as_ref() != Some(&now) || retry {
                let failures = writer.report_object_errors(&model.object_errors).await;
                if let Some(e) = failures.first() {
                    warn!(
                        failed = failures.len(),
                        "Kubernetes Events for object errors: {e}"
                    );
                    errors_failed_at = Some(Instant::now());
                } else {
                    errors_failed_at = None;
                }
                reported_errors = Some(now);
            }
        }
        // The Node condition: only once the speaker runs (before that there
        // is nothing to say but "no sessions").
        if agent.routing.read().ok().and_then(|h| h.clone()).is_none() {
            continue;
        }
        let status: Status = match agent.status(false).await {
            Ok(v) => serde_json::from_value(v).unwrap_or_default(),
            Err(e) => {
                debug!("BGP status for the Node condition: {e:#}");
                continue;
            }
        };
        let peers = peer_reports(&status);
        let now = Instant::now();
        let Some(heartbeat) = pacer.decide(&peers, now) else {
            continue;
        };
        match writer.report_bgp(&peers, heartbeat).await {
            Ok(()) => pacer.sent(peers, now),
            Err(e) => {
                warn!("Node condition TortieBGPReady: {e}");
                agent.metrics.error("datastore");
                pacer.failed(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::PeerStatus;

    fn peer(address: &str, state: &str) -> PeerReport {
        PeerReport {
            address: address.into(),
            state: state.into(),
            last_error: None,
        }
    }

    #[test]
    fn reports_are_sorted_and_empty_errors_are_none() {
        let status = Status {
            peers: vec![
                PeerStatus {
                    address: "192.0.2.9".into(),
                    state: "Active".into(),
                    last_error: "connection refused".into(),
                    ..PeerStatus::default()
                },
                PeerStatus {
                    address: "192.0.2.1".into(),
                    state: "Established".into(),
                    ..PeerStatus::default()
                },
            ],
            ..Status::default()
        };
        let r = peer_reports(&status);
        assert_eq!(r[0], peer("192.0.2.1", "Established"));
        assert_eq!(r[1].last_error.as_deref(), Some("connection refused"));
    }

    #[test]
    fn first_write_at_once_then_changes_at_most_every_min_gap() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        let a = vec![peer("192.0.2.1", "Active")];
        let b = vec![peer("192.0.2.1", "Established")];
        assert_eq!(p.decide(&a, t0), Some(false));
        p.sent(a.clone(), t0);
        // A change right away waits for the gap.
        assert_eq!(p.decide(&b, t0 + Duration::from_secs(1)), None);
        assert_eq!(p.decide(&b, t0 + MIN_GAP), Some(false));
        // No change: nothing until the heartbeat.
        assert_eq!(p.decide(&a, t0 + Duration::from_secs(10)), None);
        assert_eq!(p.decide(&a, t0 + HEARTBEAT), Some(true));
    }

    #[test]
    fn a_failed_write_is_retried_after_the_gap() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        let a = Vec::new();
        p.failed(t0);
        assert_eq!(p.decide(&a, t0 + Duration::from_secs(1)), None);
        assert_eq!(p.decide(&a, t0 + MIN_GAP), Some(false));
    }
}
