//! When has the speaker synced, so that routes found in the kernel at
//! start and not learned again may go? The decision is pure
//! ([`SyncDecision`]), fed with the speaker's peer lines; [`watch_sync`]
//! polls the speaker and tells the FIB.
//!
//! - Restarting gracefully: when the speaker ends its End-of-RIB deferral
//!   (RFC 4724 §4.1; the speaker bounds it by the restart time).
//! - Otherwise, per peer: synced once it sent End-of-RIB for every
//!   negotiated family in its current session; a peer that never sends one
//!   (no graceful-restart support) counts once Established for
//!   [`ESTABLISHED_SETTLE`]. All peers synced, or `bound` after start.

use std::time::Duration;

use tortie_bgp::fsm::State;
use tortie_bgp::runtime;
use tortie_bgp::speaker::PeerSnapshot;
use tracing::info;

use super::service::FibHandle;

/// Without a graceful restart there is no End-of-RIB wait in the speaker
/// to follow; the FIB keeps the routes it found at most this long.
pub const NOT_RESTARTING_SYNC_BOUND: Duration = Duration::from_secs(10);

/// A peer without End-of-RIB counts as synced once Established this long
/// (its initial table has then been received in practice: updates follow
/// the OPEN exchange at once).
pub const ESTABLISHED_SETTLE: Duration = Duration::from_secs(2);

/// The inputs of one look at the speaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncDecision {
    /// Started as a graceful restart.
    pub restarting: bool,
    /// Give up waiting after this long.
    pub bound: Duration,
}

impl SyncDecision {
    /// `Some(why)` once the speaker counts as synced, given the time since
    /// start, the speaker's deferral flag and its peers.
    pub fn synced(
        &self,
        elapsed: Duration,
        deferring: bool,
        peers: &[PeerSnapshot],
    ) -> Option<&'static str> {
        if elapsed >= self.bound {
            return Some("timed out waiting for the peers");
        }
        if self.restarting {
            return (!deferring).then_some("every established peer sent End-of-RIB");
        }
        if peers.is_empty() {
            return None;
        }
        let all = peers.iter().all(|p| {
            p.state == State::Established && (p.end_of_rib || p.since >= ESTABLISHED_SETTLE)
        });
        all.then(|| {
            if peers.iter().all(|p| p.end_of_rib) {
                "every peer sent End-of-RIB"
            } else {
                "every peer is established (End-of-RIB or settled)"
            }
        })
    }
}

/// Polls the speaker every 100 ms until [`SyncDecision::synced`], then
/// calls [`FibHandle::mark_synced`]. Returns early if the speaker stops.
pub async fn watch_sync(handle: runtime::Handle, decision: SyncDecision, fib: FibHandle) {
    let start = tokio::time::Instant::now();
    let why = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(r) = handle.status(false).await else {
            return;
        };
        if let Some(why) = decision.synced(start.elapsed(), r.deferring, &r.peers) {
            break why;
        }
    };
    info!("FIB: synced ({why}); routes not re-learned are removed now");
    fib.mark_synced();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(state: State, since: u64, eor: bool) -> PeerSnapshot {
        PeerSnapshot {
            name: String::new(),
            address: "192.0.2.12".parse().expect("addr"),
            asn: 64512,
            state,
            since: Duration::from_secs(since),
            prefixes_received: 0,
            prefixes_accepted: 0,
            prefixes_advertised: 0,
            last_error: String::new(),
            established_count: 1,
            stale: false,
            end_of_rib: eor,
        }
    }

    #[test]
    fn end_of_rib_syncs_at_once_and_silence_after_the_settle_time() {
        let d = SyncDecision {
            restarting: false,
            bound: Duration::from_secs(10),
        };
        let t = Duration::from_secs(1);
        assert_eq!(d.synced(t, false, &[]), None);
        assert_eq!(
            d.synced(t, false, &[peer(State::Established, 0, true)]),
            Some("every peer sent End-of-RIB")
        );
        // One peer without End-of-RIB yet holds the sync...
        let two = [
            peer(State::Established, 0, true),
            peer(State::Established, 1, false),
        ];
        assert_eq!(d.synced(t, false, &two), None);
        // ... until it has been up for the settle time.
        let two = [
            peer(State::Established, 0, true),
            peer(State::Established, 2, false),
        ];
        assert!(d.synced(t, false, &two).is_some());
        // A peer not up holds it until the bound.
        let down = [peer(State::Active, 5, false)];
        assert_eq!(d.synced(t, false, &down), None);
        assert_eq!(
            d.synced(Duration::from_secs(10), false, &down),
            Some("timed out waiting for the peers")
        );
    }

    #[test]
    fn a_graceful_restart_follows_the_speakers_deferral() {
        let d = SyncDecision {
            restarting: true,
            bound: Duration::from_secs(120),
        };
        let up = [peer(State::Established, 30, false)];
        assert_eq!(d.synced(Duration::from_secs(30), true, &up), None);
        assert!(d.synced(Duration::from_secs(30), false, &up).is_some());
    }
}
