//! `cni_bench`: how fast pods come up through `tortie-cni` and how fast a
//! remote node's policy admits a new pod.
//!
//! A bench, not a test: run it by hand as root, never from the suite:
//! `cargo run --release -p tortie-integration --bin cni_bench [-- --quick]`
//! (`TORTIE_BIN`/`TORTIE_CNI_BIN` pick the binaries; `--quick`: 20 pods
//! one after another and one batch of 10).
//!
//! ```text
//!   PREFIX-tor-a (BIRD AS 65001, br0 192.0.2.1)
//!     ├─ PREFIX-n1 192.0.2.11  the pods being added (frontend, app=web)
//!     └─ PREFIX-n2 192.0.2.12  backend/db-n2 behind examples/lab/policies.yaml
//! ```
//!
//! 1. CNI ADD latency, one after another: the time of `tortie-cni ADD`
//!    (process start to exit, which the contract says is after the pod's
//!    host route and policy are programmed) for N pods on n1, each timed
//!    once n1's agent has seen its Pod object (as with a kubelet, whose
//!    sandbox comes after the agent's watch delivered the Pod).
//! 2. The same, 20 ADDs at a time (5 batches).
//! 3. Remote admission: a new `frontend` pod on n1 pings db-n2 every 10 ms
//!    from its CNI ADD on (dropped by n2's policy: n2 does not know the
//!    address yet); the time from writing the Pod's `status.podIPs` to the
//!    datastore until the first reply (`ping -D` timestamps) is how long
//!    n2's agent took to see the address and admit it.
//!
//! `CNI_BENCH_LOGS=DIR` copies the agents' logs there at the end (the
//! lab's run dir is removed with it); with
//! `RUST_LOG=info,tortie::cni=debug,tortie::daemon::policy=debug` they
//! hold each ADD's phases and each policy round's timings.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use tortie::lab::cluster::{cni_result_ips, is_try_again};
use tortie::lab::{manifests, LabOptions, PodPlan};
use tortie_integration::cluster::{require_cluster, TestLab};
use tortie_integration::kill_pid;

fn web(prefix: &str, name: &str) -> PodPlan {
    let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
    PodPlan::new(prefix, "frontend", name, "n1", labels)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

fn summary(name: &str, mut ms: Vec<f64>) -> String {
    ms.sort_by(|a, b| a.total_cmp(b));
    format!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} |",
        ms.len(),
        pct(&ms, 0.5),
        pct(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    )
}

/// Waits until n1's agent has seen `more` Pods beyond `before` local
/// workloads (its policy status counts them), as a kubelet's sandbox
/// comes long after the scheduler bound the Pod and the agent's watch
/// delivered it: the ADD is timed from there, not the datastore's
/// propagation (measured separately as admission).
fn wait_known(lab: &TestLab, before: u64, more: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = lab.agent_status("n1")?.policy.workloads;
        if now >= before + more {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "n1's agent counts {now} workloads, not {} after 30 s",
                before + more
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn workloads(lab: &TestLab) -> Result<u64> {
    Ok(lab.agent_status("n1")?.policy.workloads)
}

/// One CNI ADD, timed. The Pod object was written before and the agent
/// has seen it ([`wait_known`]); should it still answer "try again" (CNI
/// error 11), that is retried as a kubelet would, and only the
/// successful call is timed.
fn timed_add(lab: &TestLab, pod: &PodPlan) -> Result<(f64, Vec<std::net::IpAddr>)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = Instant::now();
        let out = if kubelet_spawn() {
            lab.cni_with(plugin_in_node(lab, pod)?, "ADD", pod)
        } else {
            lab.cni("ADD", pod)
        };
        match out {
            Ok(out) => {
                let ms = t.elapsed().as_secs_f64() * 1e3;
                return Ok((ms, cni_result_ips(&out)?));
            }
            Err(e) if is_try_again(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// `--spawn kubelet` (the default): the plugin is started the way a
/// kubelet that lives in the node's network namespace starts it, one
/// fork and one exec of `tortie-cni`, the child entering the node's
/// namespace before the exec. `--spawn ip-netns-exec`: through `ip netns
/// exec` as the lab does, which adds a second program (and a mount
/// namespace) to every ADD.
fn kubelet_spawn() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args
        .windows(2)
        .any(|w| w[0] == "--spawn" && w[1] == "ip-netns-exec")
}

/// `tortie-cni` to be started inside `pod`'s node namespace.
fn plugin_in_node(lab: &TestLab, pod: &PodPlan) -> Result<Command> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::process::CommandExt as _;
    let node = lab
        .plan()
        .node(&pod.node)
        .with_context(|| format!("no node {}", pod.node))?;
    let path = format!("/var/run/netns/{}", node.netns);
    let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    let mut cmd = Command::new(lab.cni_bin());
    // SAFETY: setns(2) is a plain system call, async-signal-safe, and the
    // closure allocates nothing, as code between fork and exec must.
    // Entering the namespace in the child is the whole point (the parent's
    // threads must stay where they are), so it cannot be done before fork.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    Ok(cmd)
}

fn main() -> Result<()> {
    if !require_cluster("cni_bench") {
        bail!("cni_bench needs root and the lab's tools");
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (sequential, batches, batch) = if quick { (20, 1, 10) } else { (100, 5, 20) };
    let mut lab = TestLab::up(
        "bench",
        LabOptions {
            nodes: 2,
            racks: Some(1),
            pods_per_node: 2,
            ..Default::default()
        },
    )?;
    let prefix = lab.prefix().to_string();
    lab.write_manifest(manifests::POLICY_FILE, manifests::EXAMPLE_POLICIES)?;
    let want = tortie::lab::matrix::expected_with_example_policy(&lab.plan().pods);
    lab.wait_matrix(&want, Duration::from_secs(60))?;

    eprintln!("== {sequential} ADDs one after another");
    let mut seq = Vec::new();
    for i in 0..sequential {
        let pod = web(&prefix, &format!("s{i}"));
        let before = workloads(&lab)?;
        lab.prepare_pod(&pod)?;
        wait_known(&lab, before, 1)?;
        let (ms, ips) = timed_add(&lab, &pod)?;
        lab.finish_pod(&pod, &ips)?;
        seq.push(ms);
    }

    eprintln!("== {batches} x {batch} ADDs at a time");
    let mut conc = Vec::new();
    for b in 0..batches {
        let pods: Vec<PodPlan> = (0..batch)
            .map(|i| web(&prefix, &format!("c{b}x{i}")))
            .collect();
        let before = workloads(&lab)?;
        for p in &pods {
            lab.prepare_pod(p)?;
        }
        wait_known(&lab, before, pods.len() as u64)?;
        let lab_ref = &lab;
        let results: Vec<Result<(f64, Vec<std::net::IpAddr>)>> = std::thread::scope(|s| {
            let hs: Vec<_> = pods
                .iter()
                .map(|p| s.spawn(move || timed_add(lab_ref, p)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|_| bail!("panicked")))
                .collect()
        });
        for (p, r) in pods.iter().zip(results) {
            let (ms, ips) = r?;
            lab.finish_pod(p, &ips)?;
            conc.push(ms);
        }
    }

    eprintln!("== remote admission");
    let target = lab
        .pod_ip("backend", "db-n2")
        .context("db-n2 has no address")?;
    let mut admit = Vec::new();
    for i in 0..10 {
        let pod = web(&prefix, &format!("adm{i}"));
        lab.prepare_pod(&pod)?;
        let (_, ips) = timed_add(&lab, &pod)?;
        let child = Command::new("ip")
            .args([
                "netns", "exec", &pod.netns, "ping", "-D", "-n", "-i", "0.01",
            ])
            .arg(target.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        // n2 must not admit the pod before its IP is written.
        std::thread::sleep(Duration::from_millis(300));
        let written = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
        lab.finish_pod(&pod, &ips)?;
        std::thread::sleep(Duration::from_secs(3));
        kill_pid(child.id(), libc::SIGINT);
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text
            .lines()
            .filter(|l| l.contains("bytes from"))
            .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse::<f64>().ok())
            .next();
        match first {
            Some(t) if t < written => bail!("db-n2 answered before the IP was written"),
            Some(t) => admit.push((t - written) * 1e3),
            None => bail!("db-n2 never admitted pod {} within 3 s", pod.id()),
        }
    }

    if let Some(dir) = std::env::var_os("CNI_BENCH_LOGS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        for node in ["n1", "n2"] {
            std::fs::copy(lab.agent_log(node), dir.join(format!("{node}.log")))
                .with_context(|| format!("copying {node}'s log"))?;
        }
    }

    println!("| measurement | n | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    println!("{}", summary("CNI ADD, one after another", seq));
    println!("{}", summary(&format!("CNI ADD, {batch} at a time"), conc));
    println!(
        "{}",
        summary("Pod IP written -> remote policy admits it", admit)
    );
    Ok(())
}
