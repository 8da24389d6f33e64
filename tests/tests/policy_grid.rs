//! NetworkPolicy on real traffic: a 3x3 grid of pods wired to one node.
//!
//! ```text
//!   x/a x/b x/c   y/a y/b y/c   z/a z/b z/c     pods: netns each, eth0 /32 from
//!    │   │   │     │   │   │     │   │   │      10.244.1.0/24, labels pod: a|b|c;
//!    └───┴───┴─────┴───┴─┬─┴─────┴───┴───┘      namespaces labelled ns: x|y|z
//!                  node netns (tort<hash> veths, proxy ARP, /32 routes,
//!                  tortie's chains and sets applied by the real Applier)
//! ```
//!
//! Every pod serves TCP and UDP on ports 80 and 81 (`netprobe serve`);
//! each case applies a policy set and probes the full 9x9x4 matrix against
//! an expectation written by hand from the NetworkPolicy API semantics.

// A test file: a panic with the message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tortie_integration::podnet::{PodDef, PodGrid, Proto};
use tortie_integration::require_netns;
use tortie_policy::apply::{Dataplane, Payloads, ProcessRunner};
use tortie_policy::backend::Backend;
use tortie_policy::naming::host_interface_name;
use tortie_policy::Family;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const PORTS: [(Proto, u16); 4] = [
    (Proto::Tcp, 80),
    (Proto::Tcp, 81),
    (Proto::Udp, 80),
    (Proto::Udp, 81),
];

fn grid_defs() -> Vec<PodDef> {
    let mut defs = Vec::new();
    for (i, ns) in NAMESPACES.iter().enumerate() {
        for (j, pod) in PODS.iter().enumerate() {
            let host = u8::try_from(10 + i * 3 + j).unwrap();
            defs.push(PodDef {
                namespace: ns.to_string(),
                name: pod.to_string(),
                ip: std::net::Ipv4Addr::new(10, 244, 1, host),
                iface: host_interface_name(ns, pod),
            });
        }
    }
    defs
}

#[test]
fn grid_smoke_hand_written_payloads() {
    if !require_netns("grid_smoke", &["ip", "ipset", "iptables-nft-restore"]) {
        return;
    }
    let grid =
        PodGrid::build("gsm", &grid_defs(), env!("CARGO_BIN_EXE_netprobe").as_ref()).unwrap();
    let t = std::time::Instant::now();
    let m = grid.probe_matrix(&PORTS, PROBE_TIMEOUT).unwrap();
    eprintln!("all-allowed matrix in {:?}", t.elapsed());
    let all = tortie_integration::podnet::Matrix::from_fn(
        grid.pod_ids(),
        PORTS.to_vec(),
        |_, _, _, _| true,
    );
    if let Some(d) = all.diff(&m) {
        panic!("no policy:\n{d}");
    }
    let dp = Dataplane::new(
        Box::new(ProcessRunner::in_netns(grid.node().name())),
        Backend::Nft,
    )
    .with_families(&[Family::V4]);
    let deny = "*filter\n:TORT-FORWARD - [0:0]\n:TORT-INPUT - [0:0]\n:TORT-OUTPUT - [0:0]\n\
        -A TORT-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
        -A TORT-FORWARD -o tort+ -j DROP\nCOMMIT\n";
    dp.commit(
        &Payloads {
            iptables_v4: Some(deny),
            ..Payloads::default()
        },
        None,
    )
    .unwrap();
    let t = std::time::Instant::now();
    let m = grid.probe_matrix(&PORTS, PROBE_TIMEOUT).unwrap();
    eprintln!("deny-all matrix in {:?}", t.elapsed());
    let self_only = tortie_integration::podnet::Matrix::from_fn(
        grid.pod_ids(),
        PORTS.to_vec(),
        |f, t, _, _| f == t,
    );
    if let Some(d) = self_only.diff(&m) {
        panic!("deny all:\n{d}");
    }
    eprintln!(
        "{}",
        grid.node()
            .run("iptables-nft-save", &["-t", "filter"])
            .unwrap()
    );
    dp.remove().unwrap();
    let m = grid.probe_matrix(&PORTS, PROBE_TIMEOUT).unwrap();
    assert_eq!(all.diff(&m), None);
}
