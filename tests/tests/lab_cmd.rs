//! The README's main command as a user runs it: `./scripts/lab.sh up`
//! (deps, build, `tortie lab up`: BIRD ToRs, agents, CNI-made pods, the
//! matrix before and after the example policies), `./scripts/lab.sh status
//! -o json`, `./scripts/lab.sh down`, and nothing left behind.
//!
//! ```text
//!   PREFIX-tor-a (BIRD 65001) ── PREFIX-tor-b (BIRD 65002)
//!     ├─ PREFIX-n1 ─ web-n1, db-n1      └─ PREFIX-n3 ─ web-n3, db-n3
//!     └─ PREFIX-n2 ─ web-n2, db-n2
//! ```
//!
//! The lab runs under a unique `--prefix` and `--run-dir`, so a lab a
//! developer has up with the defaults is left alone.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use tortie_integration::cluster::{lab_sh, namespaces, pid_running, require_cluster};
use tortie_integration::unique_prefix;

#[test]
fn readme_lab_up_status_down() -> Result<()> {
    if !require_cluster("readme_lab_up_status_down") {
        return Ok(());
    }
    let prefix = unique_prefix("lab");
    let run_dir = std::env::temp_dir().join(format!("tortie-lab-{prefix}"));
    let rd = run_dir.display().to_string();
    let result = (|| -> Result<Vec<u64>> {
        let up = lab_sh(&["up", "--prefix", &prefix, "--run-dir", &rd], 600)?;
        for want in [
            "[1/9] checking prerequisites",
            "[9/9] example policies",
            "Established",
            "10.244.1.0/24",
            "10.244.3.0/24",
            "30/30 pairs reachable",
            "24/30 pairs reachable",
            "The lab is up",
        ] {
            ensure!(up.contains(want), "lab up output lacks {want:?}:\n{up}");
        }
        let json = lab_sh(&["status", "-o", "json", "--run-dir", &rd], 120)?;
        let doc: Value = serde_json::from_str(&json).context("status -o json")?;
        let nodes = doc["nodes"].as_array().context("nodes")?;
        ensure!(nodes.len() == 3, "{doc}");
        for n in nodes {
            ensure!(n["netns"].as_str().is_some_and(|s| s.starts_with(&prefix)));
            ensure!(n["address"].is_string() && n["podCIDRs"].is_array());
            ensure!(n["agentRunning"] == true, "{n}");
        }
        let pods = doc["pods"].as_array().context("pods")?;
        ensure!(pods.len() == 6, "{doc}");
        for p in pods {
            for f in ["namespace", "name", "netns", "ip", "node"] {
                ensure!(p[f].is_string(), "pod lacks {f}: {p}");
            }
        }
        let table = lab_sh(&["status", "--run-dir", &rd], 120)?;
        ensure!(table.contains("24/30 pairs reachable"), "{table}");
        let mut pids: Vec<u64> = nodes
            .iter()
            .filter_map(|n| n["agentPid"].as_u64())
            .collect();
        pids.extend(
            doc["tors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["birdPid"].as_u64()),
        );
        Ok(pids)
    })();
    let down = lab_sh(&["down", "--run-dir", &rd, "--prefix", &prefix], 120);
    let again = lab_sh(&["down", "--run-dir", &rd, "--prefix", &prefix], 120);
    let left = namespaces(&prefix)?;
    let pids = result?;
    down?;
    let again = again?;
    ensure!(
        again.contains("0 processes stopped"),
        "second down: {again}"
    );
    ensure!(left.is_empty(), "lab down left namespaces: {left:?}");
    ensure!(pids.len() == 5, "3 agents and 2 BIRDs: {pids:?}");
    let alive: Vec<_> = pids.iter().filter(|p| pid_running(**p)).collect();
    ensure!(alive.is_empty(), "lab down left processes: {alive:?}");
    ensure!(!Path::new(&run_dir).exists(), "run dir left");
    Ok(())
}
