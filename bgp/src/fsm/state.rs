//! The six session states of RFC 4271 §8.2.2.

use std::fmt;

/// A BGP session state, RFC 4271 §8.2.2.
///
/// `Display` prints the RFC name (`Idle`, `Connect`, `Active`, `OpenSent`,
/// `OpenConfirm`, `Established`): `tortie status` and the logs show it as is,
/// so operators can match it against BIRD's and their router's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Refuses connections; waits for a start event (or for the idle-hold
    /// backoff to run out after a failure).
    Idle,
    /// Waiting for our outbound TCP connection to complete.
    Connect,
    /// Listening for the peer to connect; tries outbound again when the
    /// ConnectRetryTimer expires (unless the peer is passive).
    Active,
    /// Our OPEN is sent; waiting for the peer's.
    OpenSent,
    /// OPENs exchanged; waiting for the peer's first KEEPALIVE.
    OpenConfirm,
    /// UPDATEs flow.
    Established,
}

impl State {
    /// All states, in RFC order (for tests and tables).
    pub const ALL: [State; 6] = [
        State::Idle,
        State::Connect,
        State::Active,
        State::OpenSent,
        State::OpenConfirm,
        State::Established,
    ];

    /// The RFC 4271 name of the state.
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_uses_rfc_names() {
        let names: Vec<String> = State::ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            names,
            [
                "Idle",
                "Connect",
                "Active",
                "OpenSent",
                "OpenConfirm",
                "Established"
            ]
        );
    }
}
