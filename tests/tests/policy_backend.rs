//! Choosing the iptables backend on a real host: a network namespace whose
//! nft and legacy tables are set up like a node's (kube canary chains, other
//! users' rules), probed through the same Runner the applier uses.
//!
//! ```text
//!   netns <prefix>-be:  iptables-nft tables  │  iptables-legacy tables
//!                       (canaries / rules)   │  (canaries / rules)
//! ```

// A test file: a panic with the message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tortie_integration::{require_netns, Netns};
use tortie_policy::apply::ProcessRunner;
use tortie_policy::backend::{detect, Backend, BackendError};

#[test]
fn backend_detection_follows_kube_canaries_and_reports_conflicts() {
    let tools = [
        "ip",
        "iptables-nft",
        "iptables-legacy",
        "iptables-nft-save",
        "iptables-legacy-save",
    ];
    if !require_netns(
        "backend_detection_follows_kube_canaries_and_reports_conflicts",
        &tools,
    ) {
        return;
    }
    let ns = Netns::new("be").unwrap();
    let runner = ProcessRunner::in_netns(ns.name());

    // Nothing anywhere: what `iptables` points to (nft on this host).
    let d = detect(&runner, None).unwrap();
    assert_eq!(d.backend, Backend::Nft, "{}", d.reason);

    // kubelet made its canary in legacy: follow it.
    ns.run(
        "iptables-legacy",
        &["-t", "mangle", "-N", "KUBE-KUBELET-CANARY"],
    )
    .unwrap();
    let d = detect(&runner, None).unwrap();
    assert_eq!(d.backend, Backend::Legacy, "{}", d.reason);
    assert!(d.reason.contains("canary"), "{}", d.reason);

    // Someone else's rules in nft next to kube in legacy cannot work.
    ns.run(
        "iptables-nft",
        &["-A", "INPUT", "-s", "192.0.2.9/32", "-j", "ACCEPT"],
    )
    .unwrap();
    let e = detect(&runner, None).unwrap_err();
    assert!(matches!(e, BackendError::Conflict(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("canary chains in legacy") && msg.contains("rules in nft"),
        "{msg}"
    );

    // The operator's override decides.
    let d = detect(&runner, Some(Backend::Nft)).unwrap();
    assert_eq!(d.backend, Backend::Nft);

    // Canaries in both backends are a conflict too.
    ns.run(
        "iptables-nft",
        &["-D", "INPUT", "-s", "192.0.2.9/32", "-j", "ACCEPT"],
    )
    .unwrap();
    ns.run("iptables-nft", &["-t", "mangle", "-N", "KUBE-PROXY-CANARY"])
        .unwrap();
    let e = detect(&runner, None).unwrap_err();
    assert!(e.to_string().contains("both backends"), "{e}");
}
