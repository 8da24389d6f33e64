//! The README's main command, `scripts/demo.sh`, run as a user would:
//! it must bring the fabric up (BIRD ToR, two tortie speakers, routes in
//! the nodes' kernels, pods pinging across), show it again with `status`,
//! and remove everything with `down`.
//!
//! ```text
//!            tdemo-tor (BIRD, AS 65001, bridge 192.0.2.1)
//!             /                                  \
//!   tdemo-n1 (tortie, 10.244.1.0/24)      tdemo-n2 (tortie, 10.244.2.0/24)
//!      |                                          |
//!   tdemo-pod-n1 10.244.1.10               tdemo-pod-n2 10.244.2.10
//! ```
//!
//! The demo uses fixed namespace names (it is the operator's demo, not a
//! test fixture), so a demo already running on a developer's machine makes
//! this test skip with the reason outside CI.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use tortie_integration::tortie_bgp::tortie_binary;
use tortie_integration::{in_ci, require_netns, run_with_timeout};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn demo(arg: &str, bin: &std::path::Path) -> Result<String> {
    let out = run_with_timeout(
        Command::new(repo_root().join("scripts/demo.sh"))
            .arg(arg)
            .env("TORTIE_BIN", bin)
            .current_dir(repo_root()),
        Duration::from_secs(180),
    )
    .with_context(|| format!("scripts/demo.sh {arg}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn demo_namespaces() -> Result<Vec<String>> {
    let out = run_with_timeout(
        Command::new("ip").args(["netns", "list"]),
        Duration::from_secs(10),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("tdemo-"))
        .map(str::to_string)
        .collect())
}

#[test]
fn readme_main_command_brings_up_shows_and_removes_the_fabric() -> Result<()> {
    if !require_netns(
        "readme_main_command_brings_up_shows_and_removes_the_fabric",
        &["ip", "bird", "birdc", "ping"],
    ) {
        return Ok(());
    }
    if !demo_namespaces()?.is_empty() {
        let msg = "a demo fabric (tdemo-*) is already up on this machine";
        assert!(!in_ci(), "{msg}");
        tortie_integration::report_skip(format!("{msg}; './scripts/demo.sh down' removes it"));
        return Ok(());
    }
    let bin = tortie_binary()?;
    let result = (|| -> Result<()> {
        let up = demo("up", &bin)?;
        for want in [
            "n1         BGP        ---        up",
            "n2         BGP        ---        up",
            "10.244.1.0/24",
            "10.244.2.0/24 via 192.0.2.12",
            "10.244.1.0/24 via 192.0.2.11",
            "blackhole 10.244.1.0/24",
            "3 packets transmitted, 3 received, 0% packet loss",
        ] {
            assert!(up.contains(want), "demo output lacks {want:?}:\n{up}");
        }
        assert!(up.matches("Established").count() >= 6, "{up}");
        let status = demo("status", &bin)?;
        assert!(status.contains("0% packet loss"), "{status}");
        Ok(())
    })();
    // The processes the demo started (BIRD and both speakers), by the PIDs
    // it recorded: `down` must stop every one.
    let pids: Vec<u32> = std::fs::read_dir("/run/tortie-demo")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|s| s.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let down = demo("down", &bin);
    let left = demo_namespaces()?;
    result?;
    down?;
    assert!(left.is_empty(), "demo down left namespaces: {left:?}");
    assert_eq!(pids.len(), 3, "BIRD and two speakers recorded: {pids:?}");
    let running: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect();
    assert!(
        running.is_empty(),
        "demo down left processes running: {running:?}"
    );
    Ok(())
}
