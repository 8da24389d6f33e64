//! A flat cluster (`--tor none`): every node on one switch, the iBGP full
//! mesh between the agents (BGPConfiguration nodeToNodeMesh: true). A node
//! added to the manifests joins the mesh and its pods are reachable.
//!
//! ```text
//!   PREFIX-sw (bridge, 192.0.2.0/24)
//!     ├─ PREFIX-n1 192.0.2.11 AS 64512 10.244.1.0/24 ─┐
//!     ├─ PREFIX-n2 192.0.2.12 AS 64512 10.244.2.0/24 ─┼─ iBGP full mesh
//!     └─ PREFIX-n3 192.0.2.13 (added later)           ─┘
//! ```

use anyhow::{ensure, Context, Result};
use tortie::lab::plan::example_pod;
use tortie::lab::{LabOptions, TorKind};
use tortie_integration::cluster::{require_cluster, wait_lab, TestLab};

fn established(lab: &TestLab, node: &str) -> usize {
    lab.agent_status(node).map_or(0, |s| {
        s.peers.iter().filter(|p| p.state == "Established").count()
    })
}

#[test]
fn a_node_added_to_the_manifests_joins_the_mesh() -> Result<()> {
    if !require_cluster("a_node_added_to_the_manifests_joins_the_mesh") {
        return Ok(());
    }
    let mut lab = TestLab::up(
        "mesh",
        LabOptions {
            nodes: 2,
            pods_per_node: 1,
            tor: TorKind::None,
            ..Default::default()
        },
    )?;
    let prefix = lab.prefix().to_string();
    ensure!(established(&lab, "n1") == 1);

    let n3 = lab.add_node()?;
    ensure!(n3.name == "n3");
    for n in ["n1", "n2", "n3"] {
        wait_lab(&lab, &format!("{n} meshed with both others"), 30, || {
            established(&lab, n) == 2
        })?;
    }
    let pod = example_pod(&prefix, "n3", 1);
    let ip = *lab.create_pod(&pod)?.first().context("an address")?;
    ensure!(ip.to_string().starts_with("10.244.3."), "{ip}");
    let from = lab
        .plan()
        .pod("frontend", "web-n1")
        .context("web-n1")?
        .clone();
    wait_lab(&lab, "web-n1 reaching the pod on n3", 30, || {
        lab.ping(&from, ip)
    })?;
    let st = lab.agent_status("n1")?;
    ensure!(
        st.peers
            .iter()
            .all(|p| p.source == "mesh" || p.source.is_empty()),
        "{st:?}"
    );
    Ok(())
}
