//! The routing service: one running BGP speaker, shared by `tortie bgp`
//! (config from a file, SIGHUP) and `tortie agent` (config from the
//! model, on every datastore change).
//!
//! Owns: starting the speaker runtime from a [`Loaded`] config, applying a
//! new config without resetting sessions whose settings did not change
//! (the runtime's reconfigure diffs per peer), the graceful-restart
//! marker and its heartbeat, and the clean stop (Cease / Administrative
//! Shutdown to every peer). Must never: touch the kernel's routes (the FIB
//! service does, and must be stopped *before* [`Routing::shutdown`] so the
//! withdrawals of the closing sessions stay out of the kernel).
//!
//! ```text
//!  Loaded ──start──► runtime (sessions, RIB) ──FibChange batches──► FIB service
//!  Loaded ──reconfigure──►  (listen addresses: start only)
//!  heartbeat task ──every 5 s──► STATE_DIR/bgp-restart
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use tokio::task::JoinHandle;
use tortie_bgp::rib::FibChange;
use tortie_bgp::runtime::{self, RuntimeConfig};
use tracing::{info, warn};

use crate::bgp_cmd::Loaded;

/// Name of the graceful-restart marker in the state dir.
pub const RESTART_MARKER: &str = "bgp-restart";

/// How often the marker's timestamp is refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// How long a stop waits for the speaker task after the Cease messages.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// What a [`Routing::reconfigure`] could not apply (logged by the caller;
/// everything else was applied).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignored {
    /// Listen addresses or port changed: they are bound at start only.
    pub listen: Option<Vec<SocketAddr>>,
}

/// A running speaker.
#[derive(Debug)]
pub struct Routing {
    handle: runtime::Handle,
    task: JoinHandle<()>,
    heartbeat: Option<JoinHandle<()>>,
    /// Where the marker lives (None: graceful restart is not detected).
    state_dir: Option<PathBuf>,
    /// The config running now (with `restarting`/`track_fib` as started).
    current: RuntimeConfig,
}

impl Routing {
    /// Starts the speaker. `state_dir`: where the graceful-restart marker
    /// goes (None when it cannot be written). `fib`: where best-route
    /// changes go (sets `track_fib`); None keeps routes in the RIB.
    pub async fn start(
        loaded: &Loaded,
        state_dir: Option<&Path>,
        fib: Option<std::sync::mpsc::Sender<Vec<FibChange>>>,
    ) -> Result<Routing> {
        let mut cfg = loaded.runtime.clone();
        cfg.speaker.restarting =
            state_dir.is_some_and(|d| restarting(d, loaded.max_restart_time, unix_now()));
        cfg.speaker.track_fib = fib.is_some();
        if cfg.speaker.restarting {
            info!(
                "graceful restart marker found in {}: restarting gracefully",
                state_dir
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            );
        }
        let (handle, task) = runtime::start_with_fib(cfg.clone(), fib)
            .await
            .context("starting the BGP speaker")?;
        let heartbeat = state_dir.map(|d| {
            let d = d.to_path_buf();
            write_marker(&d);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(HEARTBEAT);
                loop {
                    tick.tick().await;
                    write_marker(&d);
                }
            })
        });
        Ok(Routing {
            handle,
            task,
            heartbeat,
            state_dir: state_dir.map(Path::to_path_buf),
            current: cfg,
        })
    }

    /// The runtime's handle (status, RIB).
    pub fn handle(&self) -> &runtime::Handle {
        &self.handle
    }

    /// Whether this start is a graceful restart.
    pub fn restarting(&self) -> bool {
        self.current.speaker.restarting
    }

    /// The config running now.
    pub fn current(&self) -> &RuntimeConfig {
        &self.current
    }

    /// Applies `new`: speaker settings and peers. Sessions whose settings
    /// did not change stay up. The graceful-restart state and FIB tracking
    /// of the start are kept (a stream nobody drains would only grow).
    pub async fn reconfigure(&mut self, new: &Loaded) -> Result<Ignored> {
        let mut ignored = Ignored::default();
        if new.runtime.listen != self.current.listen {
            ignored.listen = Some(new.runtime.listen.clone());
        }
        let mut speaker = new.runtime.speaker.clone();
        speaker.restarting = self.current.speaker.restarting;
        speaker.track_fib = self.current.speaker.track_fib;
        self.handle
            .reconfigure(speaker.clone(), new.runtime.peers.clone())
            .await
            .map_err(|_| anyhow!("the BGP speaker stopped"))?;
        self.current.speaker = speaker;
        self.current.peers = new.runtime.peers.clone();
        Ok(ignored)
    }

    /// Resolves when the speaker task ends (it should not before
    /// [`Routing::shutdown`]).
    pub async fn stopped(&mut self) -> String {
        match (&mut self.task).await {
            Ok(()) => "the BGP speaker stopped".into(),
            Err(e) => format!("the BGP speaker failed: {e}"),
        }
    }

    /// Whether the speaker task still runs.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Stops without a NOTIFICATION and keeps the graceful-restart
    /// marker: the sockets close with the process, so peers that
    /// negotiated graceful restart keep our routes (and keep forwarding to
    /// this node) until we are back or their restart timer ends. The
    /// agent's SIGTERM. Stop the FIB service first.
    pub fn detach(self) {
        if let Some(h) = &self.heartbeat {
            h.abort();
        }
        if let Some(d) = &self.state_dir {
            // A fresh timestamp: the restart time counts from now.
            write_marker(d);
        }
        self.task.abort();
    }

    /// Closes every session with Cease / Administrative Shutdown, waits
    /// for the speaker to end and removes the graceful-restart marker
    /// when `clean` (a restart after a clean stop is not graceful).
    /// Stop the FIB service first: it must not apply the withdrawals.
    pub async fn shutdown(self, message: &str, clean: bool) {
        if let Some(h) = &self.heartbeat {
            h.abort();
        }
        let _ = self.handle.shutdown(message).await;
        if tokio::time::timeout(STOP_WAIT, self.task).await.is_err() {
            warn!("the BGP speaker did not stop within {STOP_WAIT:?}");
        }
        if clean {
            if let Some(d) = &self.state_dir {
                let _ = std::fs::remove_file(d.join(RESTART_MARKER));
            }
        }
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether the marker in `state_dir` says we are restarting within
/// `restart_time` (None: graceful restart is off everywhere).
pub fn restarting(state_dir: &Path, restart_time: Option<Duration>, now: u64) -> bool {
    let Some(t) = restart_time else {
        return false;
    };
    let Ok(text) = std::fs::read_to_string(state_dir.join(RESTART_MARKER)) else {
        return false;
    };
    marker_is_fresh(&text, t, now)
}

/// Pure part of [`restarting`]: the marker text holds the unix time of
/// the last heartbeat.
pub fn marker_is_fresh(text: &str, restart_time: Duration, now: u64) -> bool {
    let Ok(last) = text.trim().parse::<u64>() else {
        return false;
    };
    now.saturating_sub(last) <= restart_time.as_secs()
}

/// Writes the marker atomically (temp file, rename).
pub fn write_marker(state_dir: &Path) {
    let path = state_dir.join(RESTART_MARKER);
    let tmp = state_dir.join(format!("{RESTART_MARKER}.tmp"));
    let r = std::fs::write(&tmp, format!("{}\n", unix_now()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = r {
        warn!(
            "cannot write the graceful-restart marker {}: {e}",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_freshness() {
        let t = Duration::from_secs(120);
        assert!(marker_is_fresh("1000\n", t, 1100));
        assert!(marker_is_fresh("1000", t, 1120));
        assert!(!marker_is_fresh("1000", t, 1121));
        assert!(!marker_is_fresh("garbage", t, 1000));
        // A clock that went backwards is still a restart.
        assert!(marker_is_fresh("1000", t, 900));
    }

    #[test]
    fn marker_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!restarting(
            dir.path(),
            Some(Duration::from_secs(60)),
            unix_now()
        ));
        write_marker(dir.path());
        assert!(restarting(
            dir.path(),
            Some(Duration::from_secs(60)),
            unix_now()
        ));
        assert!(!restarting(dir.path(), None, unix_now()));
    }
}
