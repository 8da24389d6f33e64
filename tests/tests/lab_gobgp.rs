//! `--tor gobgp` as a user runs it: `./scripts/lab.sh up --tor gobgp`
//! brings up two racks behind GoBGP ToRs, each with an FRR zebra of its
//! own that installs gobgpd's routes in the ToR's kernel; pods ping across
//! the racks through those routes; `status -o json` shows the ToRs'
//! sessions and routes; `down` (twice) leaves no namespace, process or
//! file.
//!
//! ```text
//!   PREFIX-tor-a  gobgpd AS 65001 + zebra  203.0.113.1 ──eBGP── 203.0.113.2  PREFIX-tor-b  gobgpd AS 65002 + zebra
//!     br0 192.0.2.1                                                br0 198.51.100.1
//!      └─ PREFIX-n1 192.0.2.11 AS 65101 10.244.1.0/24                └─ PREFIX-n2 198.51.100.12 AS 65102 10.244.2.0/24
//!           └─ frontend/web-n1 ──────────── ping ────────────────────────┘ frontend/web-n2
//! ```
//!
//! The lab runs under a unique `--prefix` and `--run-dir`, so a lab a
//! developer has up with the defaults is left alone.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use tortie::lab::Lab;
use tortie_integration::cluster::{lab_sh, namespaces, pid_running};
use tortie_integration::gobgp::require_gobgp_tor;
use tortie_integration::unique_prefix;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The checks on a running lab; returns every PID it recorded.
fn check_lab(prefix: &str, rd: &str) -> Result<Vec<u64>> {
    let json = lab_sh(&["status", "-o", "json", "--run-dir", rd], 120)?;
    let doc: Value = serde_json::from_str(&json).context("status -o json")?;
    ensure!(doc["tor"] == "gobgp", "{doc}");
    let tors = doc["tors"].as_array().context("tors")?;
    ensure!(tors.len() == 2, "{doc}");
    let mut pids: Vec<u64> = doc["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["agentPid"].as_u64())
        .collect();
    for (tor, (node, other_tor)) in tors.iter().zip([("n1", "tor-b"), ("n2", "tor-a")]) {
        ensure!(tor["kind"] == "gobgp", "{tor}");
        // Both daemons of the ToR run, recorded by PID.
        let daemons = tor["daemons"].as_array().context("daemons")?;
        let programs: Vec<&str> = daemons
            .iter()
            .filter_map(|d| d["program"].as_str())
            .collect();
        ensure!(programs == ["zebra", "gobgpd"], "{tor}");
        for d in daemons {
            ensure!(d["running"] == true, "{d}");
            pids.extend(d["pid"].as_u64());
        }
        // gobgpd's sessions (from `gobgp neighbor` in the ToR's netns):
        // its rack's node and the other ToR, both Established.
        let sessions: Vec<(String, bool)> = tor["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["peer"].as_str().unwrap_or_default().to_string(),
                    s["established"] == true,
                )
            })
            .collect();
        ensure!(
            sessions == [(node.to_string(), true), (other_tor.to_string(), true)],
            "{}: {sessions:?}",
            tor["name"]
        );
        // gobgpd learned both pod CIDRs and zebra installed them.
        let want = ["10.244.1.0/24", "10.244.2.0/24"];
        ensure!(strings(&tor["learned"]) == want, "{tor}");
        ensure!(strings(&tor["kernelRoutes"]) == want, "{tor}");
    }

    // The kernel of each ToR routes the other rack's pod CIDR to the other
    // ToR, installed by zebra (`proto bgp`), not by anything else.
    let lab = Lab::load(Path::new(rd))?;
    for (ns, cidr, via, dev) in [
        ("tor-a", "10.244.2.0/24", "203.0.113.2", "to-b"),
        ("tor-b", "10.244.1.0/24", "203.0.113.1", "to-a"),
    ] {
        let netns = format!("{prefix}-{ns}");
        let route = tortie::lab::exec::in_netns(&netns, "ip", &["-4", "route", "show", cidr])?;
        for want in [
            format!("via {via} "),
            format!("dev {dev} "),
            "proto bgp".to_string(),
        ] {
            ensure!(
                route.contains(&want),
                "{netns}: {cidr}: {route:?} lacks {want:?}"
            );
        }
        let rack = lab
            .plan()
            .racks
            .iter()
            .find(|r| r.tor_name() == ns)
            .context("rack")?
            .clone();
        let neighbors = lab.gobgp(&rack, &["neighbor"])?;
        ensure!(
            neighbors.matches("Establ").count() == 2,
            "{ns}: {neighbors}"
        );
    }

    // A pod on rack a pings a pod on rack b (and back), through both ToRs.
    let web1 = lab
        .plan()
        .pod("frontend", "web-n1")
        .context("web-n1")?
        .clone();
    let web2 = lab
        .plan()
        .pod("frontend", "web-n2")
        .context("web-n2")?
        .clone();
    let ip1 = lab.pod_ip("frontend", "web-n1").context("web-n1 ip")?;
    let ip2 = lab.pod_ip("frontend", "web-n2").context("web-n2 ip")?;
    ensure!(lab.ping(&web1, ip2), "{} cannot ping {ip2}", web1.id());
    ensure!(lab.ping(&web2, ip1), "{} cannot ping {ip1}", web2.id());
    Ok(pids)
}

#[test]
fn lab_with_gobgp_tors() -> Result<()> {
    if !require_gobgp_tor("lab_with_gobgp_tors") {
        return Ok(());
    }
    let prefix = unique_prefix("gob");
    let run_dir = std::env::temp_dir().join(format!("tortie-lab-{prefix}"));
    let rd = run_dir.display().to_string();
    let result = (|| -> Result<Vec<u64>> {
        let up = lab_sh(
            &[
                "up",
                "--tor",
                "gobgp",
                "--nodes",
                "2",
                "--pods-per-node",
                "1",
                "--prefix",
                &prefix,
                "--run-dir",
                &rd,
            ],
            600,
        )?;
        for want in [
            "[3/9] GoBGP on the ToRs",
            "gobgp neighbor",
            "Establ",
            "gobgp global rib",
            "installed in its kernel by zebra",
            "10.244.1.0/24",
            "10.244.2.0/24",
            "2/2 pairs reachable",
            "The lab is up",
        ] {
            ensure!(up.contains(want), "lab up output lacks {want:?}:\n{up}");
        }
        check_lab(&prefix, &rd).with_context(|| {
            lab_sh(&["status", "--run-dir", &rd], 120).unwrap_or_else(|e| format!("{e:#}"))
        })
    })();
    let down = lab_sh(&["down", "--run-dir", &rd, "--prefix", &prefix], 120);
    let again = lab_sh(&["down", "--run-dir", &rd, "--prefix", &prefix], 120);
    let left = namespaces(&prefix)?;
    let pids = result?;
    let down = down?;
    ensure!(
        down.contains("zebra tor-a") && down.contains("gobgpd tor-b"),
        "lab down: {down}"
    );
    let again = again?;
    ensure!(
        again.contains("0 processes stopped"),
        "second down: {again}"
    );
    ensure!(left.is_empty(), "lab down left namespaces: {left:?}");
    ensure!(pids.len() == 6, "2 agents, 2 zebras, 2 gobgpds: {pids:?}");
    let alive: Vec<_> = pids.iter().filter(|p| pid_running(**p)).collect();
    ensure!(alive.is_empty(), "lab down left processes: {alive:?}");
    ensure!(!run_dir.exists(), "run dir left (zebra's socket and files)");
    Ok(())
}
