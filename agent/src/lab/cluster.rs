//! The lab's shell: turns a [`Plan`] into namespaces, links, BIRD or GoBGP
//! ToRs, tortie agents and CNI-created pods, and takes them down again.
//!
//! Owns: the order of `up`'s steps and what a failure in each says, the
//! run directory (`RUN_DIR/lab.json`, `manifests/`, one directory per ToR
//! and per node), and the operations the integration tests drive a
//! running lab with (add or delete a pod, stop or start an agent, probe
//! the matrix).
//!
//! Must never: address or route anything in the machine's own namespace
//! (veths are created inside a lab namespace and one end moved), stop a
//! process other than by a recorded PID whose command line still matches,
//! or remove a namespace without the lab's prefix.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::bird;
use super::exec::{self, in_netns, netns_command, wait_for};
use super::gobgp;
use super::manifests;
use super::matrix::{self, Matrix};
use super::plan::{LabOptions, NodePlan, Plan, PodPlan, RackPlan, TorKind};
use super::state::{LabState, ProcessRecord, StatusDocument, TorSessionDoc};
use crate::status::Status;

/// How long `up` waits for BGP sessions, routes and the matrix.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a CNI call may take.
pub const CNI_TIMEOUT: Duration = Duration::from_secs(30);

/// The binaries the lab runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    pub tortie: PathBuf,
    pub cni: PathBuf,
}

impl Binaries {
    /// `$TORTIE_BIN` / `$TORTIE_CNI_BIN`, else this executable and the
    /// `tortie-cni` next to it.
    pub fn from_env() -> Result<Binaries> {
        let exe = std::env::current_exe().context("locating the tortie binary")?;
        let tortie = std::env::var_os("TORTIE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| exe.clone());
        let cni = std::env::var_os("TORTIE_CNI_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| exe.with_file_name("tortie-cni"));
        Ok(Binaries { tortie, cni })
    }

    fn check(&self) -> Result<()> {
        for (what, p) in [("tortie", &self.tortie), ("tortie-cni", &self.cni)] {
            if !p.is_file() {
                bail!(
                    "no {what} binary at {} (build it: cargo build -p tortie; \
                     or set TORTIE_BIN / TORTIE_CNI_BIN)",
                    p.display()
                );
            }
        }
        Ok(())
    }
}

/// Where progress lines go.
pub trait Progress {
    fn step(&mut self, line: &str);
}

impl<W: Write> Progress for W {
    fn step(&mut self, line: &str) {
        let _ = writeln!(self, "{line}");
        let _ = self.flush();
    }
}

/// A running lab.
#[derive(Debug)]
pub struct Lab {
    state: LabState,
}

/// A step of `up` that failed: which one and why.
#[derive(Debug, thiserror::Error)]
#[error("step {step} ({what}) failed")]
pub struct StepError {
    pub step: usize,
    pub what: String,
    #[source]
    pub source: anyhow::Error,
}

impl Lab {
    /// `tortie lab up`: builds the lab, shows its sessions, routes and
    /// matrix, applies the example policies and shows the matrix again.
    /// A failure names its step, removes everything made, and is returned.
    pub fn up(opts: &LabOptions, bins: &Binaries, out: &mut dyn Progress) -> Result<Lab> {
        Self::up_with(opts, bins, true, out)
    }

    /// Like [`Lab::up`]; with `policies` false it stops after the first
    /// matrix (tests that bring their own policies).
    pub fn up_with(
        opts: &LabOptions,
        bins: &Binaries,
        policies: bool,
        out: &mut dyn Progress,
    ) -> Result<Lab> {
        opts.validate().map_err(|e| anyhow!(e))?;
        let plan = Plan::new(opts);
        let mut lab = Lab {
            state: LabState {
                options: opts.clone(),
                plan: plan.clone(),
                tortie_bin: bins.tortie.clone(),
                cni_bin: bins.cni.clone(),
                namespaces: Vec::new(),
                processes: Vec::new(),
                pod_ips: BTreeMap::new(),
            },
        };
        let total = if policies { 9 } else { 8 };
        let mut n = 0;
        let mut step = |lab: &mut Lab,
                        out: &mut dyn Progress,
                        what: &str,
                        f: &mut dyn FnMut(&mut Lab, &mut dyn Progress) -> Result<()>|
         -> Result<()> {
            n += 1;
            out.step(&format!("[{n}/{total}] {what}"));
            f(lab, out).map_err(|source| {
                anyhow::Error::new(StepError {
                    step: n,
                    what: what.to_string(),
                    source,
                })
            })
        };
        let result = (|| -> Result<()> {
            step(&mut lab, out, "checking prerequisites", &mut |lab, out| {
                bins.check()?;
                check_root_and_tools(lab.state.plan.tor)?;
                let removed = down(&opts.run_dir, &opts.prefix)?;
                if removed.anything() {
                    out.step(&format!("      removed a previous lab: {removed}"));
                }
                std::fs::create_dir_all(lab.manifest_dir())
                    .with_context(|| format!("creating {}", opts.run_dir.display()))?;
                lab.save()
            })?;
            step(
                &mut lab,
                out,
                "namespaces, bridges and links",
                &mut |lab, _| lab.make_fabric(),
            )?;
            let asns: Vec<String> = plan
                .racks
                .iter()
                .filter_map(|r| Some(format!("{} AS {}", r.tor_name(), r.asn?)))
                .collect();
            let what = match lab.state.plan.tor {
                TorKind::Bird => format!("BIRD on the ToRs ({})", asns.join(", ")),
                TorKind::Gobgp => format!(
                    "GoBGP on the ToRs, an FRR zebra each for their kernel routes ({})",
                    asns.join(", ")
                ),
                TorKind::None => "no ToR: one switch, iBGP full mesh".to_string(),
            };
            step(&mut lab, out, &what, &mut |lab, _| {
                for rack in lab.tor_racks() {
                    match lab.state.plan.tor {
                        TorKind::Bird => lab.start_bird(&rack)?,
                        TorKind::Gobgp => lab.start_gobgp(&rack)?,
                        TorKind::None => {}
                    }
                }
                Ok(())
            })?;
            step(
                &mut lab,
                out,
                &format!(
                    "manifests in {} (Nodes, BGPConfiguration, BGPPeers, IPPool)",
                    plan_dir(opts).display()
                ),
                &mut |lab, _| lab.write_initial_manifests(),
            )?;
            step(
                &mut lab,
                out,
                "a tortie agent in each node",
                &mut |lab, _| {
                    for node in lab.state.plan.nodes.clone() {
                        lab.start_agent(&node.name)?;
                    }
                    for node in lab.state.plan.nodes.clone() {
                        lab.wait_agent(&node.name, Duration::from_secs(30))?;
                    }
                    Ok(())
                },
            )?;
            step(&mut lab, out, "BGP sessions", &mut |lab, _| {
                lab.wait_sessions(CONVERGE_TIMEOUT)
            })?;
            step(
                &mut lab,
                out,
                "pods through tortie-cni (Pod object, CNI ADD, status.podIPs)",
                &mut |lab, out| {
                    for pod in lab.state.plan.pods.clone() {
                        let ips = lab.create_pod(&pod)?;
                        let ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
                        out.step(&format!(
                            "      {} on {}: {}",
                            pod.id(),
                            pod.node,
                            ips.join(", ")
                        ));
                    }
                    Ok(())
                },
            )?;
            step(
                &mut lab,
                out,
                "routes: pod CIDRs at the ToRs, pods reaching each other",
                &mut |lab, out| {
                    lab.wait_routes(CONVERGE_TIMEOUT)?;
                    let m = lab.wait_matrix(&lab.open_matrix(), CONVERGE_TIMEOUT)?;
                    out.step(&lab.summary(false));
                    out.step("== pod-to-pod connectivity (ping), no policy");
                    out.step(&indent(&m.to_table()));
                    Ok(())
                },
            )?;
            if policies {
                step(
                    &mut lab,
                    out,
                    "example policies (examples/lab/policies.yaml): backend admits only frontend web pods",
                    &mut |lab, out| {
                        lab.write_manifest(manifests::POLICY_FILE, manifests::EXAMPLE_POLICIES)?;
                        let want = matrix::expected_with_example_policy(&lab.state.plan.pods);
                        let m = lab.wait_matrix(&want, CONVERGE_TIMEOUT)?;
                        out.step("== pod-to-pod connectivity (ping), with the example policies");
                        out.step(&indent(&m.to_table()));
                        Ok(())
                    },
                )?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            out.step(&format!("lab up: {e:#}"));
            out.step(&lab.failure_context());
            out.step("lab up: cleaning up");
            let _ = down(&opts.run_dir, &opts.prefix);
            return Err(e);
        }
        let run_dir = if opts.run_dir == LabOptions::default().run_dir {
            String::new()
        } else {
            format!(" --run-dir {}", opts.run_dir.display())
        };
        out.step(&format!(
            "The lab is up: `tortie lab status{run_dir}` shows it again, \
             `tortie lab down{run_dir}` removes it."
        ));
        Ok(lab)
    }

    /// The lab recorded in `run_dir`.
    pub fn load(run_dir: &Path) -> Result<Lab> {
        let path = LabState::path(run_dir);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no lab in {} (no {}): run `tortie lab up`",
                run_dir.display(),
                path.display()
            )
        })?;
        let state: LabState =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Lab { state })
    }

    pub fn state(&self) -> &LabState {
        &self.state
    }

    pub fn plan(&self) -> &Plan {
        &self.state.plan
    }

    pub fn run_dir(&self) -> &Path {
        &self.state.options.run_dir
    }

    pub fn manifest_dir(&self) -> PathBuf {
        self.run_dir().join("manifests")
    }

    /// A node's agent run directory (its `agent.sock`).
    pub fn agent_run_dir(&self, node: &str) -> PathBuf {
        self.run_dir().join(node).join("run")
    }

    pub fn agent_state_dir(&self, node: &str) -> PathBuf {
        self.run_dir().join(node).join("state")
    }

    pub fn agent_log(&self, node: &str) -> PathBuf {
        self.run_dir().join(node).join("agent.log")
    }

    fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.state)?;
        exec::write_atomic(&LabState::path(self.run_dir()), &text)
    }

    /// The `status -o json` document.
    pub fn document(&self) -> StatusDocument {
        let mut doc = self.state.document(|p| exec::is_running(p.pid, &p.program));
        for (tor, rack) in doc.tors.iter_mut().zip(self.tor_racks()) {
            tor.sessions = self.tor_sessions(&rack).unwrap_or_default();
            tor.learned = self.tor_learned(&rack).unwrap_or_default();
            tor.kernel_routes = self
                .tor_kernel_routes(&rack)
                .map(|r| r.into_iter().map(|r| r.prefix).collect())
                .unwrap_or_default();
        }
        doc
    }

    fn add_netns(&mut self, name: &str) -> Result<()> {
        exec::run(std::process::Command::new("ip").args(["netns", "add", name]))?;
        self.state.namespaces.push(name.to_string());
        self.save()?;
        in_netns(name, "ip", &["link", "set", "lo", "up"])?;
        Ok(())
    }

    fn make_fabric(&mut self) -> Result<()> {
        let plan = self.state.plan.clone();
        for rack in &plan.racks {
            self.add_netns(&rack.netns)?;
            let ns = rack.netns.as_str();
            in_netns(ns, "ip", &["link", "add", "br0", "type", "bridge"])?;
            if let Some(gw) = rack.gateway {
                let addr = format!("{gw}/{}", rack.subnet.prefix_len());
                in_netns(ns, "ip", &["addr", "add", &addr, "dev", "br0"])?;
                in_netns(ns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
            }
            in_netns(ns, "ip", &["link", "set", "br0", "up"])?;
        }
        // The ToR-to-ToR link (203.0.113.0/24).
        if let [a, b] = plan.racks.as_slice() {
            if let (Some(ua), Some(ub)) = (a.uplink, b.uplink) {
                let (to_b, to_a) = (format!("to-{}", b.name), format!("to-{}", a.name));
                in_netns(
                    &a.netns,
                    "ip",
                    &["link", "add", &to_b, "type", "veth", "peer", "name", &to_a],
                )?;
                in_netns(&a.netns, "ip", &["link", "set", &to_a, "netns", &b.netns])?;
                in_netns(
                    &a.netns,
                    "ip",
                    &["addr", "add", &format!("{ua}/24"), "dev", &to_b],
                )?;
                in_netns(
                    &b.netns,
                    "ip",
                    &["addr", "add", &format!("{ub}/24"), "dev", &to_a],
                )?;
                in_netns(&a.netns, "ip", &["link", "set", &to_b, "up"])?;
                in_netns(&b.netns, "ip", &["link", "set", &to_a, "up"])?;
            }
        }
        for node in &plan.nodes {
            self.make_node(node)?;
        }
        Ok(())
    }

    /// A node namespace with `eth0` on its rack's bridge.
    fn make_node(&mut self, node: &NodePlan) -> Result<()> {
        let rack = self
            .state
            .plan
            .rack_of(node)
            .cloned()
            .ok_or_else(|| anyhow!("node {} has no rack", node.name))?;
        self.add_netns(&node.netns)?;
        let (r, n) = (rack.netns.as_str(), node.netns.as_str());
        // Created in the rack's namespace, one end moved: nothing is ever
        // made in the machine's own namespace.
        in_netns(
            r,
            "ip",
            &[
                "link", "add", &node.name, "type", "veth", "peer", "name", "eth0",
            ],
        )?;
        in_netns(r, "ip", &["link", "set", "eth0", "netns", n])?;
        in_netns(r, "ip", &["link", "set", &node.name, "master", "br0", "up"])?;
        in_netns(
            n,
            "ip",
            &["addr", "add", &node.bgp_address(), "dev", "eth0"],
        )?;
        in_netns(n, "ip", &["link", "set", "eth0", "up"])?;
        // A node forwards for its pods, as a kubelet host does.
        in_netns(n, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        std::fs::create_dir_all(self.agent_run_dir(&node.name))?;
        std::fs::create_dir_all(self.agent_state_dir(&node.name))?;
        Ok(())
    }

    fn tor_dir(&self, rack: &RackPlan) -> PathBuf {
        self.run_dir().join(rack.tor_name())
    }

    /// BIRD's control socket on `rack`'s ToR.
    pub fn bird_ctl(&self, rack: &RackPlan) -> PathBuf {
        self.tor_dir(rack).join("bird.ctl")
    }

    fn start_bird(&mut self, rack: &RackPlan) -> Result<()> {
        let dir = self.tor_dir(rack);
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("bird.conf");
        let text = bird::tor_config(&self.state.plan, rack, &dir.join("bird.log"));
        std::fs::write(&conf, text)?;
        exec::run(
            std::process::Command::new("bird")
                .arg("-p")
                .arg("-c")
                .arg(&conf),
        )
        .with_context(|| format!("BIRD rejected {}", conf.display()))?;
        let ctl = self.bird_ctl(rack);
        let _ = std::fs::remove_file(&ctl);
        let mut cmd = netns_command(&rack.netns, "bird");
        cmd.arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&ctl)
            .arg("-P")
            .arg(dir.join("bird.pid"));
        let pid = exec::spawn_daemon(cmd, &dir.join("bird.stderr"))?;
        self.state.set_process(ProcessRecord {
            role: format!("bird {}", rack.tor_name()),
            pid,
            program: "bird".into(),
            netns: rack.netns.clone(),
        });
        self.save()?;
        wait_for(
            &format!("BIRD on {} to answer birdc", rack.netns),
            Duration::from_secs(15),
            || {
                if !exec::is_running(pid, "bird") {
                    return Some(Err(anyhow!(
                        "BIRD on {} exited: {}",
                        rack.netns,
                        exec::exit_description(pid)
                    )));
                }
                self.birdc(rack, &["show", "status"]).ok().map(Ok)
            },
        )
        .and_then(|r| r)
        .with_context(|| exec::log_tail(&dir.join("bird.stderr"), 10))?;
        Ok(())
    }

    /// `birdc -s CTL ARGS..` against `rack`'s ToR (the control socket is a
    /// file: birdc runs here and touches no network).
    pub fn birdc(&self, rack: &RackPlan, args: &[&str]) -> Result<String> {
        exec::run(
            std::process::Command::new("birdc")
                .arg("-s")
                .arg(self.bird_ctl(rack))
                .args(args),
        )
    }

    /// zebra's directory on `rack`'s GoBGP ToR: its config, pid file,
    /// zserv socket and vty directory, owned by the user zebra runs as.
    pub fn zebra_dir(&self, rack: &RackPlan) -> PathBuf {
        self.tor_dir(rack).join("zebra")
    }

    /// A GoBGP ToR: zebra first (gobgpd connects to its socket), then
    /// gobgpd, each in the ToR's namespace and recorded by PID.
    fn start_gobgp(&mut self, rack: &RackPlan) -> Result<()> {
        let dir = self.tor_dir(rack);
        let zdir = self.zebra_dir(rack);
        std::fs::create_dir_all(zdir.join("vty"))?;
        let zconf = zdir.join("zebra.conf");
        std::fs::write(&zconf, gobgp::zebra_config(rack))?;
        let owner = format!("{0}:{0}", gobgp::ZEBRA_USER);
        exec::run(
            std::process::Command::new("chown")
                .arg("-R")
                .arg(&owner)
                .arg(&zdir),
        )
        .context("zebra runs as the frr user, which the frr package creates")?;
        let zserv = zdir.join("zserv.api");
        let conf = dir.join("gobgpd.toml");
        std::fs::write(&conf, gobgp::tor_config(&self.state.plan, rack, &zserv))?;
        exec::run(
            std::process::Command::new("gobgpd")
                .arg("-d")
                .arg("-f")
                .arg(&conf),
        )
        .with_context(|| format!("gobgpd rejected {}", conf.display()))?;
        // gobgpd 3.10 panics on zebra's message for an interface without a
        // hardware address (gobgp.rs explains); lo is the only one here.
        in_netns(
            &rack.netns,
            "ip",
            &["link", "set", "lo", "address", gobgp::LOOPBACK_MAC],
        )?;
        let zlog = dir.join("zebra.log");
        let mut cmd = netns_command(&rack.netns, gobgp::ZEBRA_BIN);
        cmd.arg("-f")
            .arg(&zconf)
            .arg("-i")
            .arg(zdir.join("zebra.pid"))
            .arg("-z")
            .arg(&zserv)
            .arg("--vty_socket")
            .arg(zdir.join("vty"))
            .args(["-u", gobgp::ZEBRA_USER, "-g", gobgp::ZEBRA_USER])
            // No TCP vty: several zebras share the machine.
            .args(["-P", "0", "--log", "stdout"]);
        let zpid = exec::spawn_daemon(cmd, &zlog)?;
        self.state.set_process(ProcessRecord {
            role: format!("zebra {}", rack.tor_name()),
            pid: zpid,
            program: "zebra".into(),
            netns: rack.netns.clone(),
        });
        self.save()?;
        wait_for(
            &format!("zebra on {} to open {}", rack.netns, zserv.display()),
            Duration::from_secs(15),
            || {
                if !exec::is_running(zpid, "zebra") {
                    return Some(Err(anyhow!(
                        "zebra on {} exited: {}; its log:\n{}",
                        rack.netns,
                        exec::exit_description(zpid),
                        exec::log_tail(&zlog, 10)
                    )));
                }
                zserv.exists().then_some(Ok(()))
            },
        )??;
        let glog = dir.join("gobgpd.log");
        let mut cmd = netns_command(&rack.netns, "gobgpd");
        cmd.arg("-f")
            .arg(&conf)
            .arg(format!("--api-hosts=127.0.0.1:{}", gobgp::API_PORT))
            .arg("--pprof-disable");
        let gpid = exec::spawn_daemon(cmd, &glog)?;
        self.state.set_process(ProcessRecord {
            role: format!("gobgpd {}", rack.tor_name()),
            pid: gpid,
            program: "gobgpd".into(),
            netns: rack.netns.clone(),
        });
        self.save()?;
        wait_for(
            &format!("gobgpd on {} to answer `gobgp global`", rack.netns),
            Duration::from_secs(15),
            || {
                if !exec::is_running(gpid, "gobgpd") {
                    return Some(Err(anyhow!(
                        "gobgpd on {} exited: {}; its log:\n{}",
                        rack.netns,
                        exec::exit_description(gpid),
                        exec::log_tail(&glog, 10)
                    )));
                }
                self.gobgp(rack, &["global"]).ok().map(|_| Ok(()))
            },
        )??;
        wait_for(
            &format!("gobgpd on {} to connect to its zebra", rack.netns),
            Duration::from_secs(15),
            || {
                std::fs::read_to_string(&glog)
                    .ok()?
                    .contains("success to connect to Zebra")
                    .then_some(())
            },
        )
        .with_context(|| exec::log_tail(&glog, 10))?;
        Ok(())
    }

    /// `gobgp -u 127.0.0.1 -p PORT ARGS..` run inside `rack`'s namespace,
    /// where that ToR's gobgpd serves its gRPC API on the loopback.
    pub fn gobgp(&self, rack: &RackPlan, args: &[&str]) -> Result<String> {
        let port = gobgp::API_PORT.to_string();
        let mut all = vec!["-u", "127.0.0.1", "-p", port.as_str()];
        all.extend_from_slice(args);
        in_netns(&rack.netns, "gobgp", &all)
    }

    /// The BGP sessions of `rack`'s ToR (birdc or `gobgp neighbor`).
    pub fn tor_sessions(&self, rack: &RackPlan) -> Result<Vec<TorSessionDoc>> {
        Ok(match self.state.plan.tor {
            TorKind::Bird => bird::parse_sessions(&self.birdc(rack, &["show", "protocols"])?)
                .into_iter()
                .map(|s| TorSessionDoc {
                    established: s.info.starts_with("Established"),
                    peer: s.name,
                    state: if s.info.is_empty() { s.state } else { s.info },
                })
                .collect(),
            TorKind::Gobgp => gobgp::parse_neighbors(&self.gobgp(rack, &["neighbor", "-j"])?)?
                .into_iter()
                .map(|s| TorSessionDoc {
                    established: s.established(),
                    peer: gobgp::peer_name(&self.state.plan, &s.address).unwrap_or(s.address),
                    state: s.state,
                })
                .collect(),
            TorKind::None => Vec::new(),
        })
    }

    /// The prefixes in `rack`'s ToR's BGP RIB.
    pub fn tor_learned(&self, rack: &RackPlan) -> Result<Vec<String>> {
        Ok(match self.state.plan.tor {
            TorKind::Bird => bird::parse_route_prefixes(&self.birdc(rack, &["show", "route"])?),
            TorKind::Gobgp => gobgp::parse_rib_prefixes(
                &self.gobgp(rack, &["global", "rib", "-a", "ipv4", "-j"])?,
            )?,
            TorKind::None => Vec::new(),
        })
    }

    /// The routes `rack`'s routing daemon installed in the ToR's kernel
    /// (`proto bird`, or `proto bgp` from zebra).
    pub fn tor_kernel_routes(&self, rack: &RackPlan) -> Result<Vec<gobgp::KernelRoute>> {
        let proto = match self.state.plan.tor {
            TorKind::Gobgp => gobgp::KERNEL_PROTO,
            _ => "bird",
        };
        let text = in_netns(&rack.netns, "ip", &["-4", "route", "show", "proto", proto])?;
        Ok(gobgp::parse_kernel_routes(&text))
    }

    fn write_initial_manifests(&mut self) -> Result<()> {
        for (name, text) in manifests::initial_files(&self.state.plan) {
            self.write_manifest(&name, &text)?;
        }
        Ok(())
    }

    /// Writes one file of the shared manifest directory atomically.
    pub fn write_manifest(&self, file: &str, text: &str) -> Result<()> {
        exec::write_atomic(&self.manifest_dir().join(file), text)
    }

    /// Removes one file of the manifest directory (missing is fine).
    pub fn remove_manifest(&self, file: &str) -> Result<()> {
        match std::fs::remove_file(self.manifest_dir().join(file)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing manifest {file}"))
            }
            _ => Ok(()),
        }
    }

    /// Starts (or restarts) `node`'s agent in its namespace.
    pub fn start_agent(&mut self, node: &str) -> Result<u32> {
        let n = self
            .state
            .plan
            .node(node)
            .cloned()
            .ok_or_else(|| anyhow!("no node {node} in the lab"))?;
        let mut cmd = netns_command(&n.netns, &self.state.tortie_bin);
        cmd.arg("agent")
            .arg("--node-name")
            .arg(&n.name)
            .arg("--datastore")
            .arg(format!("file:{}", self.manifest_dir().display()))
            .arg("--state-dir")
            .arg(self.agent_state_dir(node))
            .arg("--run-dir")
            .arg(self.agent_run_dir(node))
            .arg("--metrics-addr")
            .arg(n.metrics_addr());
        let pid = exec::spawn_daemon(cmd, &self.agent_log(node))?;
        self.state.set_process(ProcessRecord {
            role: format!("agent {node}"),
            pid,
            program: "tortie".into(),
            netns: n.netns.clone(),
        });
        self.save()?;
        Ok(pid)
    }

    /// Sends `sig` (`TERM`, `KILL`) to `node`'s agent and waits until it is
    /// gone.
    pub fn stop_agent(&mut self, node: &str, sig: &str) -> Result<()> {
        let rec = self
            .state
            .process(&format!("agent {node}"))
            .cloned()
            .ok_or_else(|| anyhow!("no agent recorded for {node}"))?;
        if exec::is_running(rec.pid, &rec.program) {
            exec::signal(rec.pid, sig);
        }
        wait_for(
            &format!("agent {node} (pid {}) to exit", rec.pid),
            Duration::from_secs(10),
            || (!exec::is_running(rec.pid, &rec.program)).then_some(()),
        )
    }

    /// Whether `node`'s recorded agent runs.
    pub fn agent_running(&self, node: &str) -> bool {
        self.state
            .process(&format!("agent {node}"))
            .is_some_and(|p| exec::is_running(p.pid, &p.program))
    }

    /// `tortie status` of `node`'s agent.
    pub fn agent_status(&self, node: &str) -> Result<Status> {
        let raw = crate::status_client::fetch(&self.agent_run_dir(node), false)?;
        serde_json::from_str(&raw).context("the agent's status document does not parse")
    }

    /// How `node`'s agent is doing, for failure messages: running, or how
    /// it ended (exit status, command line).
    pub fn agent_liveness(&self, node: &str) -> String {
        match self.state.process(&format!("agent {node}")) {
            None => "no agent recorded".into(),
            Some(p) if exec::is_running(p.pid, &p.program) => format!("running (pid {})", p.pid),
            Some(p) => exec::exit_description(p.pid),
        }
    }

    /// Waits until `node`'s agent answers on its socket; fails at once,
    /// with its exit status and log (its stdout and stderr), if it exits.
    pub fn wait_agent(&self, node: &str, timeout: Duration) -> Result<Status> {
        wait_for(
            &format!("agent {node} to answer `tortie status`"),
            timeout,
            || {
                if !self.agent_running(node) {
                    let log = self.agent_log(node);
                    let tail = exec::log_tail(&log, 20);
                    return Some(Err(anyhow!(
                        "agent {node} exited before answering: {}; its output ({}):\n{}",
                        self.agent_liveness(node),
                        log.display(),
                        if tail.is_empty() { "(empty)" } else { &tail }
                    )));
                }
                self.agent_status(node).ok().map(Ok)
            },
        )
        .with_context(|| {
            format!(
                "agent {node} {}; its output ({}):\n{}",
                self.agent_liveness(node),
                self.agent_log(node).display(),
                exec::log_tail(&self.agent_log(node), 20)
            )
        })?
    }

    /// Waits until every node's and every ToR's BGP sessions are
    /// Established.
    pub fn wait_sessions(&self, timeout: Duration) -> Result<()> {
        for node in &self.state.plan.nodes {
            let expect = self.expected_peers(node);
            wait_for(
                &format!("{expect} Established BGP sessions on {}", node.name),
                timeout,
                || {
                    let s = self.agent_status(&node.name).ok()?;
                    let up = s.peers.iter().filter(|p| p.state == "Established").count();
                    (up >= expect).then_some(())
                },
            )
            .with_context(|| self.node_context(&node.name))?;
        }
        for rack in self.tor_racks() {
            wait_for(
                &format!("the sessions of {}", rack.tor_name()),
                timeout,
                || {
                    if let Err(e) = self.tor_daemons_running(&rack) {
                        return Some(Err(e));
                    }
                    let s = self.tor_sessions(&rack).ok()?;
                    (!s.is_empty() && s.iter().all(|p| p.established)).then_some(Ok(()))
                },
            )??;
        }
        Ok(())
    }

    /// Fails, with the dead one's log tail, unless every process of
    /// `rack`'s ToR runs.
    fn tor_daemons_running(&self, rack: &RackPlan) -> Result<()> {
        for program in super::state::tor_programs(self.state.plan.tor) {
            let role = format!("{program} {}", rack.tor_name());
            if let Some(p) = self.state.process(&role) {
                if !exec::is_running(p.pid, &p.program) {
                    let log = self.tor_dir(rack).join(match *program {
                        "bird" => "bird.stderr".to_string(),
                        other => format!("{other}.log"),
                    });
                    bail!(
                        "{role} (pid {}) exited; its log ({}):\n{}",
                        p.pid,
                        log.display(),
                        exec::log_tail(&log, 15)
                    );
                }
            }
        }
        Ok(())
    }

    /// Sessions a node should have: its ToR, or every other node.
    fn expected_peers(&self, _node: &NodePlan) -> usize {
        match self.state.plan.tor {
            TorKind::None => self.state.plan.nodes.len().saturating_sub(1),
            _ => 1,
        }
    }

    /// The racks with a ToR router (none in the flat mesh).
    pub fn tor_racks(&self) -> Vec<RackPlan> {
        if self.state.plan.tor == TorKind::None {
            return Vec::new();
        }
        self.state
            .plan
            .racks
            .iter()
            .filter(|r| r.gateway.is_some())
            .cloned()
            .collect()
    }

    /// Waits until every ToR has every node's pod CIDR.
    pub fn wait_routes(&self, timeout: Duration) -> Result<()> {
        let all = |have: &[String]| {
            self.state
                .plan
                .nodes
                .iter()
                .all(|n| have.contains(&n.pod_cidr.to_string()))
        };
        for rack in self.tor_racks() {
            wait_for(
                &format!("every pod CIDR at {}", rack.tor_name()),
                timeout,
                || {
                    let have = self.tor_learned(&rack).ok()?;
                    all(&have).then_some(())
                },
            )?;
            // A GoBGP ToR forwards by what zebra installed, not by its RIB.
            if self.state.plan.tor == TorKind::Gobgp {
                wait_for(
                    &format!(
                        "zebra to install every pod CIDR in {}'s kernel",
                        rack.tor_name()
                    ),
                    timeout,
                    || {
                        let routes = self.tor_kernel_routes(&rack).ok()?;
                        let have: Vec<String> = routes.into_iter().map(|r| r.prefix).collect();
                        all(&have).then_some(())
                    },
                )
                .with_context(|| exec::log_tail(&self.tor_dir(&rack).join("zebra.log"), 10))?;
            }
        }
        Ok(())
    }

    /// The plugin configuration a kubelet passes on stdin (the conflist's
    /// plugin entry plus `cniVersion` and `name`).
    pub fn cni_config(&self, node: &str) -> String {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "tortie",
            "type": "tortie-cni",
            "agentSocket": self.agent_run_dir(node).join("agent.sock").display().to_string(),
            "mtu": 1500,
        })
        .to_string()
    }

    /// Runs `tortie-cni` in `pod`'s node namespace as a kubelet would;
    /// returns its stdout, or fails with the CNI error it printed.
    pub fn cni(&self, command: &str, pod: &PodPlan) -> Result<String> {
        let node = self
            .state
            .plan
            .node(&pod.node)
            .ok_or_else(|| anyhow!("pod {}: no node {}", pod.id(), pod.node))?;
        self.cni_with(
            netns_command(&node.netns, &self.state.cni_bin),
            command,
            pod,
        )
    }

    /// The `tortie-cni` binary the lab runs.
    pub fn cni_bin(&self) -> &Path {
        &self.state.cni_bin
    }

    /// [`Lab::cni`] with the plugin started by `cmd` (which must run
    /// [`Lab::cni_bin`], e.g. after entering the node's namespace some
    /// other way): the CNI environment and stdin are added here.
    pub fn cni_with(
        &self,
        mut cmd: std::process::Command,
        command: &str,
        pod: &PodPlan,
    ) -> Result<String> {
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &pod.container_id)
            .env("CNI_NETNS", format!("/var/run/netns/{}", pod.netns))
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
                    pod.namespace, pod.name, pod.container_id
                ),
            )
            .env(
                "CNI_PATH",
                self.state
                    .cni_bin
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            );
        let config = self.cni_config(&pod.node);
        let out = exec::run_unchecked(&mut cmd, Some(config.as_bytes()), CNI_TIMEOUT)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "CNI {command} for pod {} on {} failed ({}): {} {}",
                pod.id(),
                pod.node,
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(stdout)
    }

    /// Creates a pod the kubelet way: its Pod object in the manifests, its
    /// netns, CNI ADD, then `status.podIPs` written back. Returns its IPs.
    pub fn create_pod(&mut self, pod: &PodPlan) -> Result<Vec<IpAddr>> {
        self.prepare_pod(pod)?;
        let ips = self.cni_add(pod)?;
        self.finish_pod(pod, &ips)?;
        Ok(ips)
    }

    /// CNI ADD as a kubelet runs it: a "try again later" answer (CNI error
    /// 11: the agent has not seen the Pod object yet) is retried for a
    /// while, as the kubelet retries a sandbox.
    pub fn cni_add(&self, pod: &PodPlan) -> Result<Vec<IpAddr>> {
        let deadline = std::time::Instant::now() + CNI_TIMEOUT;
        loop {
            match self.cni("ADD", pod) {
                Ok(result) => {
                    return cni_result_ips(&result)
                        .with_context(|| format!("CNI ADD for pod {}: result {result}", pod.id()))
                }
                Err(e) if is_try_again(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The kubelet's part before CNI ADD: the Pod object (bound to its
    /// node, no IPs yet) and the sandbox's network namespace.
    pub fn prepare_pod(&mut self, pod: &PodPlan) -> Result<()> {
        if self.state.plan.pod(&pod.namespace, &pod.name).is_none() {
            self.state.plan.pods.push(pod.clone());
        }
        self.save()?;
        let file = manifests::pod_file(pod);
        self.write_manifest(
            &file,
            &manifests::to_yaml(&[manifests::pod_object(pod, &[])]),
        )?;
        if !self.state.namespaces.contains(&pod.netns) {
            self.add_netns(&pod.netns)?;
        }
        Ok(())
    }

    /// The kubelet's part after CNI ADD: `status.podIPs` written back.
    pub fn finish_pod(&mut self, pod: &PodPlan, ips: &[IpAddr]) -> Result<()> {
        self.write_manifest(
            &manifests::pod_file(pod),
            &manifests::to_yaml(&[manifests::pod_object(pod, ips)]),
        )?;
        self.state.pod_ips.insert(pod.id(), ips.to_vec());
        self.save()
    }

    /// Deletes a pod the kubelet way: CNI DEL, its netns, its Pod object.
    pub fn delete_pod(&mut self, namespace: &str, name: &str) -> Result<()> {
        let pod = self
            .state
            .plan
            .pod(namespace, name)
            .cloned()
            .ok_or_else(|| anyhow!("no pod {namespace}/{name} in the lab"))?;
        self.cni("DEL", &pod)?;
        exec::run(std::process::Command::new("ip").args(["netns", "del", &pod.netns]))?;
        self.state.namespaces.retain(|n| n != &pod.netns);
        self.remove_manifest(&manifests::pod_file(&pod))?;
        self.state
            .plan
            .pods
            .retain(|p| !(p.namespace == namespace && p.name == name));
        self.state.pod_ips.remove(&pod.id());
        self.save()
    }

    /// Adds a node to a running lab (in the last rack): namespace, link,
    /// Node object, agent. With ToRs the rack's BIRD needs a protocol for
    /// it, so this is for the flat mesh (`--tor none`).
    pub fn add_node(&mut self) -> Result<NodePlan> {
        if self.state.plan.tor != TorKind::None {
            bail!("adding a node is supported in the flat mesh (--tor none) only");
        }
        let index = self
            .state
            .plan
            .nodes
            .iter()
            .map(|n| n.index)
            .max()
            .unwrap_or(0)
            + 1;
        let rack = self.state.plan.racks.len().saturating_sub(1);
        let node = self.state.plan.node_plan(index, rack);
        self.state.plan.nodes.push(node.clone());
        self.save()?;
        self.make_node(&node)?;
        let text = manifests::to_yaml(&[manifests::node_object(&self.state.plan, &node)]);
        self.write_manifest(&manifests::node_file(&node), &text)?;
        self.start_agent(&node.name)?;
        self.wait_agent(&node.name, Duration::from_secs(30))?;
        Ok(node)
    }

    /// The first IP of a pod.
    pub fn pod_ip(&self, namespace: &str, name: &str) -> Option<IpAddr> {
        self.state
            .pod_ips
            .get(&format!("{namespace}/{name}"))
            .and_then(|v| v.first().copied())
    }

    /// One ping from a pod to an address (two echo requests 0.2 s apart,
    /// one second for an answer): whether anything answered.
    pub fn ping(&self, from: &PodPlan, to: IpAddr) -> bool {
        let to = to.to_string();
        exec::run_input(
            netns_command(&from.netns, "ping").args(["-c", "2", "-i", "0.2", "-W", "1", "-q", &to]),
            None,
            Duration::from_secs(5),
        )
        .is_ok()
    }

    /// Probes every pod pair with ping, in parallel.
    pub fn matrix(&self) -> Matrix {
        let pods: Vec<PodPlan> = self
            .state
            .plan
            .pods
            .iter()
            .filter(|p| self.state.pod_ips.contains_key(&p.id()))
            .cloned()
            .collect();
        let ips: Vec<Option<IpAddr>> = pods
            .iter()
            .map(|p| self.pod_ip(&p.namespace, &p.name))
            .collect();
        let pairs: Vec<(usize, usize)> = (0..pods.len())
            .flat_map(|i| {
                (0..pods.len())
                    .filter(move |j| *j != i)
                    .map(move |j| (i, j))
            })
            .collect();
        let mut results = BTreeMap::new();
        // At most 64 pings at once: enough for a 60-pod lab in a minute.
        for chunk in pairs.chunks(64) {
            let got: Vec<((usize, usize), bool)> = std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|&(i, j)| {
                        let (from, to) = (pods.get(i), ips.get(j).copied().flatten());
                        s.spawn(move || {
                            let ok = match (from, to) {
                                (Some(f), Some(t)) => self.ping(f, t),
                                _ => false,
                            };
                            ((i, j), ok)
                        })
                    })
                    .collect();
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            });
            results.extend(got);
        }
        Matrix::from_fn(pods.iter().map(PodPlan::id).collect(), |i, j| {
            results.get(&(i, j)).copied().unwrap_or(false)
        })
    }

    /// Every pair of the lab's pods reachable.
    pub fn open_matrix(&self) -> Matrix {
        let ids: Vec<String> = self
            .state
            .plan
            .pods
            .iter()
            .filter(|p| self.state.pod_ips.contains_key(&p.id()))
            .map(PodPlan::id)
            .collect();
        Matrix::from_fn(ids, |_, _| true)
    }

    /// Probes the matrix until it equals `want`; fails with the last
    /// difference.
    pub fn wait_matrix(&self, want: &Matrix, timeout: Duration) -> Result<Matrix> {
        let mut last = String::new();
        wait_for("the expected connectivity matrix", timeout, || {
            let m = self.matrix();
            match m.diff(want) {
                None => Some(m),
                Some(d) => {
                    last = d;
                    None
                }
            }
        })
        .with_context(|| format!("pairs still wrong:\n{last}"))
    }

    /// The sessions per ToR and per node, the pod CIDRs each ToR learned,
    /// and the pods; with `probe`, the matrix too.
    pub fn summary(&self, probe: bool) -> String {
        let mut s = String::new();
        let plan = &self.state.plan;
        for rack in self.tor_racks() {
            if plan.tor == TorKind::Gobgp {
                s.push_str(&self.gobgp_summary(&rack));
                continue;
            }
            s.push_str(&format!(
                "== ToR {} ({}, BIRD, AS {}): birdc show protocols\n",
                rack.tor_name(),
                rack.netns,
                rack.asn.unwrap_or_default()
            ));
            match self.birdc(&rack, &["show", "protocols"]) {
                Ok(t) => s.push_str(&indent(&bird_table(&t))),
                Err(e) => s.push_str(&format!("   error: {e:#}\n")),
            }
            s.push_str(&format!(
                "== ToR {}: pod CIDRs learned (birdc show route)\n",
                rack.tor_name()
            ));
            match self.birdc(&rack, &["show", "route"]) {
                Ok(t) => s.push_str(&indent(&bird_table(&t))),
                Err(e) => s.push_str(&format!("   error: {e:#}\n")),
            }
        }
        for node in &plan.nodes {
            s.push_str(&format!(
                "== node {} ({}, {}{}, pod CIDR {}): tortie status --run-dir {}\n",
                node.name,
                node.netns,
                node.address,
                node.asn.map(|a| format!(", AS {a}")).unwrap_or_default(),
                node.pod_cidr,
                self.agent_run_dir(&node.name).display()
            ));
            match self.agent_status(&node.name) {
                Ok(st) => s.push_str(&indent(&st.to_table())),
                Err(e) => s.push_str(&format!("   error: {e:#}\n")),
            }
        }
        s.push_str("== pods\n");
        for p in &plan.pods {
            let ips: Vec<String> = self
                .state
                .pod_ips
                .get(&p.id())
                .map(|v| v.iter().map(IpAddr::to_string).collect())
                .unwrap_or_default();
            s.push_str(&format!(
                "   {:<24} {:<16} node {:<4} netns {}\n",
                p.id(),
                if ips.is_empty() {
                    "-".to_string()
                } else {
                    ips.join(",")
                },
                p.node,
                p.netns
            ));
        }
        if probe {
            s.push_str("== pod-to-pod connectivity (ping)\n");
            s.push_str(&indent(&self.matrix().to_table()));
        }
        s
    }

    /// A GoBGP ToR's part of the summary: its sessions and RIB as the
    /// `gobgp` CLI shows them, and what zebra installed in its kernel.
    fn gobgp_summary(&self, rack: &RackPlan) -> String {
        let mut s = format!(
            "== ToR {} ({}, GoBGP + FRR zebra, AS {}): gobgp neighbor\n",
            rack.tor_name(),
            rack.netns,
            rack.asn.unwrap_or_default()
        );
        match self.gobgp(rack, &["neighbor"]) {
            Ok(t) => s.push_str(&indent(&t)),
            Err(e) => s.push_str(&format!("   error: {e:#}\n")),
        }
        s.push_str(&format!(
            "== ToR {}: pod CIDRs learned (gobgp global rib)\n",
            rack.tor_name()
        ));
        match self.gobgp(rack, &["global", "rib", "-a", "ipv4"]) {
            Ok(t) => s.push_str(&indent(&t)),
            Err(e) => s.push_str(&format!("   error: {e:#}\n")),
        }
        s.push_str(&format!(
            "== ToR {}: installed in its kernel by zebra (ip route show proto {})\n",
            rack.tor_name(),
            gobgp::KERNEL_PROTO
        ));
        match self.tor_kernel_routes(rack) {
            Ok(routes) => {
                for r in routes {
                    s.push_str(&format!(
                        "   {:<18} via {} dev {}\n",
                        r.prefix,
                        r.via.as_deref().unwrap_or("-"),
                        r.dev.as_deref().unwrap_or("-")
                    ));
                }
            }
            Err(e) => s.push_str(&format!("   error: {e:#}\n")),
        }
        s
    }

    fn node_context(&self, node: &str) -> String {
        let status = self
            .agent_status(node)
            .map(|s| s.to_table())
            .unwrap_or_else(|e| format!("{e:#}"));
        format!(
            "node {node}: {status}\nagent {}; log tail ({}):\n{}",
            self.agent_liveness(node),
            self.agent_log(node).display(),
            exec::log_tail(&self.agent_log(node), 15)
        )
    }

    /// What a failed `up` prints before cleaning up: each agent's last
    /// log lines and each ToR's sessions.
    fn failure_context(&self) -> String {
        let mut s = String::new();
        for node in &self.state.plan.nodes {
            let log = self.agent_log(&node.name);
            if log.exists() {
                s.push_str(&format!(
                    "--- agent {} ({}) log tail ({}):\n{}\n",
                    node.name,
                    self.agent_liveness(&node.name),
                    log.display(),
                    exec::log_tail(&log, 10)
                ));
            }
        }
        for rack in self.tor_racks() {
            if self.state.plan.tor == TorKind::Gobgp {
                if let Ok(t) = self.gobgp(&rack, &["neighbor"]) {
                    s.push_str(&format!("--- {} sessions:\n{t}", rack.tor_name()));
                }
                for log in ["gobgpd.log", "zebra.log"] {
                    let path = self.tor_dir(&rack).join(log);
                    if path.exists() {
                        s.push_str(&format!(
                            "--- {} {log} tail:\n{}\n",
                            rack.tor_name(),
                            exec::log_tail(&path, 8)
                        ));
                    }
                }
            } else if let Ok(t) = self.birdc(&rack, &["show", "protocols"]) {
                s.push_str(&format!(
                    "--- {} sessions:\n{}",
                    rack.tor_name(),
                    bird_table(&t)
                ));
            }
        }
        s
    }
}

/// Whether a failed CNI call answered CNI error 11 ("try again later").
pub fn is_try_again(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    text.contains("\"code\":11,") || text.contains("\"code\": 11,")
}

/// The IP addresses of a CNI result (`ips[].address`, `ADDR/LEN`).
pub fn cni_result_ips(result: &str) -> Result<Vec<IpAddr>> {
    let v: serde_json::Value =
        serde_json::from_str(result.trim()).context("the CNI result is not JSON")?;
    let ips: Vec<IpAddr> = v
        .get("ips")
        .and_then(|i| i.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|ip| ip.get("address")?.as_str())
                .filter_map(|s| s.parse::<ipnet::IpNet>().ok().map(|n| n.addr()))
                .collect()
        })
        .unwrap_or_default();
    if ips.is_empty() {
        bail!("the CNI result has no ips[].address");
    }
    Ok(ips)
}

/// What `down` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownReport {
    pub processes: Vec<String>,
    pub namespaces: Vec<String>,
    pub run_dir_removed: bool,
}

impl DownReport {
    pub fn anything(&self) -> bool {
        !self.processes.is_empty() || !self.namespaces.is_empty() || self.run_dir_removed
    }
}

impl std::fmt::Display for DownReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} processes stopped ({}), {} namespaces removed{}",
            self.processes.len(),
            self.processes.join(", "),
            self.namespaces.len(),
            if self.run_dir_removed {
                ", run directory removed"
            } else {
                ""
            }
        )
    }
}

/// `tortie lab down`: stops the processes recorded in `run_dir` (by PID,
/// agents first), removes every namespace named `PREFIX-*` and the run
/// directory. Idempotent: nothing there is not an error.
pub fn down(run_dir: &Path, prefix: &str) -> Result<DownReport> {
    super::plan::valid_prefix(prefix).map_err(|e| anyhow!(e))?;
    let mut report = DownReport::default();
    let state = Lab::load(run_dir).ok().map(|l| l.state);
    let prefix = state
        .as_ref()
        .map_or(prefix.to_string(), |s| s.plan.prefix.clone());
    if let Some(state) = &state {
        // Agents before the ToRs, so no agent logs its ToR vanishing.
        let mut procs = state.processes.clone();
        // gobgpd before its zebra, which then withdraws the ToR's routes.
        procs.sort_by_key(|p| match p.program.as_str() {
            "tortie" => 0,
            "zebra" => 2,
            _ => 1,
        });
        for p in procs {
            if exec::stop(p.pid, &p.program, Duration::from_secs(5)) {
                report.processes.push(format!("{} (pid {})", p.role, p.pid));
            }
        }
    }
    let listed = exec::run(std::process::Command::new("ip").args(["netns", "list"]))?;
    let all: Vec<String> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let mut ours = Plan::owned_namespaces(&prefix, &all);
    // Pods first, routers last (the reverse of creation).
    if let Some(state) = &state {
        let order: Vec<&String> = state.namespaces.iter().rev().collect();
        ours.sort_by_key(|n| order.iter().position(|o| *o == n).unwrap_or(0));
    }
    for ns in ours {
        exec::run(std::process::Command::new("ip").args(["netns", "del", &ns]))
            .with_context(|| format!("removing namespace {ns}"))?;
        report.namespaces.push(ns);
    }
    if state.is_some() || dir_is_empty(run_dir) {
        if run_dir.exists() {
            std::fs::remove_dir_all(run_dir)
                .with_context(|| format!("removing {}", run_dir.display()))?;
            report.run_dir_removed = true;
        }
    } else if run_dir.exists() {
        bail!(
            "{} has no {} and is not empty: not removing what the lab did not make",
            run_dir.display(),
            super::state::STATE_FILE
        );
    }
    exec::reap();
    Ok(report)
}

fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

fn check_root_and_tools(tor: TorKind) -> Result<()> {
    let uid = exec::run(std::process::Command::new("id").arg("-u"))?;
    if uid.trim() != "0" {
        bail!("run as root: the lab creates network namespaces");
    }
    let mut tools = vec!["ip", "ping", "sysctl", "kill", "iptables", "ipset"];
    match tor {
        TorKind::Bird => tools.extend(["bird", "birdc"]),
        TorKind::Gobgp => tools.extend(["gobgpd", "gobgp", "chown"]),
        TorKind::None => {}
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let mut missing: Vec<&str> = tools
        .into_iter()
        .filter(|t| {
            !path
                .split(':')
                .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
                .any(|d| Path::new(d).join(t).is_file())
        })
        .collect();
    if tor == TorKind::Gobgp
        && (!Path::new(gobgp::ZEBRA_BIN).is_file()
            || exec::run(std::process::Command::new("id").arg(gobgp::ZEBRA_USER)).is_err())
    {
        missing.push("FRR's zebra (the frr package)");
    }
    if !missing.is_empty() {
        bail!(
            "missing programs: {} (scripts/deps.sh installs them)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// birdc's output without its banner line.
fn bird_table(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("BIRD ") && !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect()
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}

fn plan_dir(opts: &LabOptions) -> PathBuf {
    opts.run_dir.join("manifests")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_result_addresses() {
        let r = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],
            "ips":[{"address":"10.244.1.2/32","interface":0},{"address":"fd00:244:1::2/128","interface":0}]}"#;
        let ips = cni_result_ips(r).unwrap();
        assert_eq!(ips.len(), 2);
        assert_eq!(ips[0].to_string(), "10.244.1.2");
        assert!(cni_result_ips(r#"{"ips":[]}"#).is_err());
        assert!(cni_result_ips("nope").is_err());
    }

    #[test]
    fn down_of_nothing_is_fine_and_refuses_foreign_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none");
        // `ip netns list` may not be allowed here (no root); only the
        // directory logic is checked then.
        if let Ok(r) = down(&missing, "zzlabtest") {
            assert!(!r.anything(), "{r}");
            std::fs::write(dir.path().join("foreign"), "x").unwrap();
            assert!(down(dir.path(), "zzlabtest").is_err());
        }
        assert!(down(&missing, "Bad-Prefix").is_err());
    }
}
