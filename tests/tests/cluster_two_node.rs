//! Two nodes behind one BIRD ToR, from manifests: pods ping across, and 20
//! concurrent CNI ADDs on one node get 20 distinct addresses that all
//! answer from the other node.
//!
//! ```text
//!            PREFIX-tor-a  BIRD AS 65001, br0 192.0.2.1
//!             /                                  \
//!   PREFIX-n1 192.0.2.11 AS 65101          PREFIX-n2 192.0.2.12 AS 65102
//!   10.244.1.0/24: web-n1 + 20 more        10.244.2.0/24: web-n2
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tortie::lab::{LabOptions, PodPlan};
use tortie_integration::cluster::{require_cluster, TestLab};

#[test]
fn two_nodes_one_tor_and_twenty_concurrent_adds() -> Result<()> {
    if !require_cluster("two_nodes_one_tor_and_twenty_concurrent_adds") {
        return Ok(());
    }
    let mut lab = TestLab::up(
        "c2",
        LabOptions {
            nodes: 2,
            racks: Some(1),
            pods_per_node: 1,
            ..Default::default()
        },
    )?;
    let prefix = lab.prefix().to_string();
    // Up waited for web-n1 and web-n2 to reach each other through the ToR.
    ensure!(lab.open_matrix().pods.len() == 2);

    let pods: Vec<PodPlan> = (0..20)
        .map(|i| {
            let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
            PodPlan::new(&prefix, "frontend", &format!("burst{i}"), "n1", labels)
        })
        .collect();
    for p in &pods {
        lab.prepare_pod(p)?;
    }
    let lab_ref = &*lab;
    let results: Vec<Result<Vec<IpAddr>>> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|p| s.spawn(move || lab_ref.cni_add(p)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))
            })
            .collect()
    });
    let mut all = BTreeSet::new();
    for (p, r) in pods.iter().zip(results) {
        let ips = r.with_context(|| format!("concurrent CNI ADD of {}", p.id()))?;
        lab.finish_pod(p, &ips)?;
        for ip in ips.iter().filter(|ip| ip.is_ipv4()) {
            ensure!(ip.to_string().starts_with("10.244.1."), "{ip}");
            ensure!(all.insert(*ip), "{ip} handed out twice");
        }
    }
    let web1 = lab.pod_ip("frontend", "web-n1").context("web-n1")?;
    ensure!(all.len() == 20 && !all.contains(&web1), "{all:?} / {web1}");

    // Every new pod answers the pod on the other node.
    let from = lab
        .plan()
        .pod("frontend", "web-n2")
        .context("web-n2")?
        .clone();
    let lab_ref = &*lab;
    let from_ref = &from;
    let answered: Vec<(IpAddr, bool)> = std::thread::scope(|s| {
        let hs: Vec<_> = all
            .iter()
            .map(|ip| {
                let ip = *ip;
                s.spawn(move || {
                    let ok = tortie::lab::exec::wait_for("ping", Duration::from_secs(20), || {
                        lab_ref.ping(from_ref, ip).then_some(())
                    })
                    .is_ok();
                    (ip, ok)
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let silent: Vec<_> = answered.iter().filter(|(_, ok)| !ok).collect();
    ensure!(
        silent.is_empty(),
        "pods not answering: {silent:?}\n{}",
        lab.describe()
    );
    Ok(())
}
