//! A three-node cluster in two racks behind BIRD ToRs, built from
//! manifests by the lab, with every node running `tortie agent` and pods
//! made through `tortie-cni`. One cluster serves several checks in turn
//! (bringing one up costs more than the checks).
//!
//! ```text
//!   PREFIX-tor-a  BIRD AS 65001  203.0.113.1 ──eBGP── 203.0.113.2  PREFIX-tor-b  BIRD AS 65002
//!     br0 192.0.2.1                                   br0 198.51.100.1
//!      ├─ PREFIX-n1 192.0.2.11 AS 65101 10.244.1.0/24   └─ PREFIX-n3 198.51.100.13 AS 65103 10.244.3.0/24
//!      └─ PREFIX-n2 192.0.2.12 AS 65102 10.244.2.0/24
//!   pods per node: frontend/web-nN (app=web), backend/db-nN (app=db)
//! ```
//!
//! Checks, in order: pods reach each other across nodes and racks through
//! routes learned from BIRD; a NetworkPolicy applied and removed changes
//! the matrix; a broken manifest changes nothing and shows in `tortie
//! status`; a pod added and deleted (CNI DEL, twice); an agent SIGKILLed
//! and restarted while an interval ping crosses both racks, losing
//! nothing; and IPAM state surviving that restart (no duplicate address).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tortie::lab::matrix::expected_with_example_policy;
use tortie::lab::{manifests, LabOptions, PodPlan};
use tortie_integration::cluster::{require_cluster, wait_lab, IntervalPing, TestLab};

fn web_pod(prefix: &str, name: &str, node: &str) -> PodPlan {
    let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
    PodPlan::new(prefix, "frontend", name, node, labels)
}

/// Host-side workload interfaces (`tort...`) in a node namespace.
fn workload_links(lab: &TestLab, node: &str) -> Result<Vec<String>> {
    let ns = &lab.plan().node(node).context("node")?.netns;
    let out = tortie::lab::exec::in_netns(ns, "ip", &["-o", "link", "show"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
        .filter(|n| n.starts_with("tort"))
        .collect())
}

#[test]
fn three_node_cluster_behind_bird_tors() -> Result<()> {
    if !require_cluster("three_node_cluster_behind_bird_tors") {
        return Ok(());
    }
    let mut lab = TestLab::up("c3", LabOptions::default())?;
    let prefix = lab.prefix().to_string();

    // Up waited for every pod to reach every other; the ToRs learned
    // every node's pod CIDR from BIRD's sessions.
    for rack in lab.plan().racks.clone() {
        let routes = lab.birdc(&rack, &["show", "route"])?;
        for cidr in ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"] {
            ensure!(
                routes.contains(cidr),
                "{} lacks {cidr}:\n{routes}",
                rack.netns
            );
        }
    }
    let open = lab.open_matrix();
    ensure!(open.pods.len() == 6, "{open:?}");

    eprintln!("== policy applied");
    lab.write_manifest(manifests::POLICY_FILE, manifests::EXAMPLE_POLICIES)?;
    let want = expected_with_example_policy(&lab.plan().pods);
    lab.wait_matrix(&want, Duration::from_secs(30))
        .map_err(|e| lab.explain(e))?;

    eprintln!("== broken manifest");
    lab.write_manifest(
        manifests::POLICY_FILE,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: [unclosed\n",
    )?;
    for n in ["n1", "n2", "n3"] {
        wait_lab(&lab, &format!("{n} reporting the broken file"), 20, || {
            lab.agent_status(n).is_ok_and(|s| {
                s.datastore
                    .errors
                    .iter()
                    .chain(&s.policy.errors)
                    .any(|e| e.contains(manifests::POLICY_FILE))
            })
        })?;
    }
    let m = lab.matrix();
    ensure!(
        m.diff(&want).is_none(),
        "a broken manifest changed the matrix:\n{}",
        m.diff(&want).unwrap_or_default()
    );
    let st = lab.agent_status("n1")?;
    ensure!(
        st.peers.iter().all(|p| p.state == "Established"),
        "sessions after a broken manifest: {st:?}"
    );

    eprintln!("== policy removed");
    lab.remove_manifest(manifests::POLICY_FILE)?;
    lab.wait_matrix(&open, Duration::from_secs(30))
        .map_err(|e| lab.explain(e))?;
    wait_lab(&lab, "the error to clear on n1", 20, || {
        lab.agent_status("n1")
            .is_ok_and(|s| s.datastore.errors.is_empty())
    })?;

    eprintln!("== pod added and deleted");
    let before = workload_links(&lab, "n3")?;
    let extra = web_pod(&prefix, "extra-n3", "n3");
    let ips = lab.create_pod(&extra)?;
    let from = lab
        .plan()
        .pod("frontend", "web-n1")
        .context("web-n1")?
        .clone();
    let ip = *ips.first().context("an address")?;
    wait_lab(&lab, "web-n1 reaching the new pod", 20, || {
        lab.ping(&from, ip)
    })?;
    ensure!(workload_links(&lab, "n3")?.len() == before.len() + 1);
    lab.delete_pod("frontend", "extra-n3")?;
    ensure!(
        workload_links(&lab, "n3")? == before,
        "CNI DEL left the host veth"
    );
    ensure!(
        !lab.ping(&from, ip),
        "a deleted pod's address still answers"
    );
    // DEL is idempotent: the netns and the interface are gone already.
    lab.cni("DEL", &extra).context("a second CNI DEL")?;

    eprintln!("== agent SIGKILL and restart under an interval ping");
    let db3 = lab.pod_ip("backend", "db-n3").context("db-n3")?;
    let ping = IntervalPing::start(&from.netns, &db3.to_string(), "0.05")?;
    std::thread::sleep(Duration::from_millis(500)); // traffic before the kill
    lab.stop_agent("n1", "KILL")?;
    std::thread::sleep(Duration::from_millis(500)); // traffic with no agent
    lab.start_agent("n1")?;
    lab.wait_agent("n1", Duration::from_secs(30))?;
    wait_lab(&lab, "n1's session to its ToR again", 30, || {
        lab.agent_status("n1")
            .is_ok_and(|s| !s.peers.is_empty() && s.peers.iter().all(|p| p.state == "Established"))
    })?;
    // Let the new agent finish its first full sync of routes and rules.
    std::thread::sleep(Duration::from_secs(3));
    let count = ping.stop()?;
    ensure!(
        count.transmitted >= 50 && count.received == count.transmitted,
        "the interval ping lost packets across the restart: {count:?}\n{}",
        lab.describe()
    );
    ensure!(lab.open_matrix().diff(&lab.matrix()).is_none());

    eprintln!("== IPAM after the restart");
    let mut taken: Vec<_> = lab
        .plan()
        .pods
        .iter()
        .filter(|p| p.node == "n1")
        .filter_map(|p| lab.pod_ip(&p.namespace, &p.name))
        .collect();
    for i in 0..3 {
        let pod = web_pod(&prefix, &format!("after{i}-n1"), "n1");
        let ip = *lab.create_pod(&pod)?.first().context("an address")?;
        ensure!(!taken.contains(&ip), "{ip} handed out twice: {taken:?}");
        ensure!(ip.to_string().starts_with("10.244.1."), "{ip}");
        taken.push(ip);
    }
    Ok(())
}
