//! Pods in network namespaces wired like the CNI wires them, and a probe
//! matrix over them.
//!
//! ```text
//!   pod netns <prefix>-x-a           node netns <prefix>-node
//!  ┌──────────────────────┐         ┌──────────────────────────────────────┐
//!  │ eth0 10.244.1.10/32  ├─ veth ──┤ tort<11hex>  proxy_arp=1             │
//!  │ default via          │         │ route 10.244.1.10/32 dev tort<11hex> │
//!  │  169.254.1.1 onlink  │         │ ip_forward=1                         │
//!  │ netprobe serve       │         │ up0 ── up1 (a default route so proxy │
//!  └──────────────────────┘         │   ARP answers for 169.254.1.1; the   │
//!        ... one per pod ...        │   pair never leaves the namespace)   │
//!                                   └──────────────────────────────────────┘
//! ```
//!
//! An IPv6 pod (single-stack) gets `fdXX::/128` on eth0 and a default route
//! via `fe80::1`, the link-local address of its host-side veth; the node
//! forwards IPv6 and routes `/128`s to the veths. DAD is off in the test
//! namespaces so addresses are usable at once.
//!
//! Owns: building that layout with the test's name prefix, starting a
//! `netprobe serve` in each pod, probing every pod from every pod in
//! parallel, and printing matrices and their differences. Everything lives
//! in namespaces the test made; the guards remove them on drop.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{run_with_timeout, unique_prefix, wait_for, Daemon, Netns};

/// One pod to create: its identity, address and host-side interface name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDef {
    pub namespace: String,
    pub name: String,
    /// The pod's one address (IPv4 or IPv6: single-stack pods).
    pub ip: IpAddr,
    /// Host-side veth name (`naming::host_interface_name(ns, pod)`).
    pub iface: String,
}

/// A running pod: its server stops before its namespace goes.
#[derive(Debug)]
pub struct PodNet {
    pub def: PodDef,
    server: Daemon,
    netns: Netns,
}

impl PodNet {
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    pub fn server_running(&mut self) -> bool {
        self.server.is_running()
    }

    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.def.namespace, self.def.name)
    }
}

/// Transport protocol of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// The ports every pod serves on both protocols.
pub const SERVED_PORTS: [u16; 2] = [80, 81];

/// A node namespace with pods wired to it.
#[derive(Debug)]
pub struct PodGrid {
    /// Pods first: their servers and namespaces go before the node's.
    pub pods: Vec<PodNet>,
    node: Netns,
    netprobe: PathBuf,
    prefix: String,
    /// UDP source ports handed out so far (see `probe_from`).
    round: std::sync::atomic::AtomicU32,
}

impl PodGrid {
    /// Creates the node namespace and every pod, wired and serving.
    pub fn build(tag: &str, defs: &[PodDef], netprobe: &Path) -> Result<PodGrid> {
        let prefix = unique_prefix(tag);
        let node = Netns::named(&format!("{prefix}-node"))?;
        node.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        node.run("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"])?;
        node.run("sysctl", &["-qw", "net.ipv6.conf.default.accept_dad=0"])?;
        node.run(
            "ip",
            &["link", "add", "up0", "type", "veth", "peer", "name", "up1"],
        )?;
        node.run("ip", &["link", "set", "up0", "up"])?;
        node.run("ip", &["link", "set", "up1", "up"])?;
        node.run("ip", &["route", "add", "default", "dev", "up0"])?;
        let mut grid = PodGrid {
            pods: Vec::new(),
            node,
            netprobe: netprobe.to_path_buf(),
            prefix,
            round: std::sync::atomic::AtomicU32::new(0),
        };
        for def in defs {
            let pod = grid.add_pod(def.clone())?;
            grid.pods.push(pod);
        }
        grid.wait_serving()?;
        Ok(grid)
    }

    pub fn node(&self) -> &Netns {
        &self.node
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn add_pod(&self, def: PodDef) -> Result<PodNet> {
        let ns = Netns::named(&format!("{}-{}-{}", self.prefix, def.namespace, def.name))?;
        let node = self.node.name();
        let v6 = def.ip.is_ipv6();
        let host_len = if v6 { 128 } else { 32 };
        let ip = format!("{}/{host_len}", def.ip);
        ns.run("sysctl", &["-qw", "net.ipv6.conf.default.accept_dad=0"])?;
        ns.run("sysctl", &["-qw", "net.ipv6.conf.all.accept_dad=0"])?;
        // The pair is made inside the pod namespace and one end moved to
        // the node: nothing is created in the machine's own namespace.
        ns.run(
            "ip",
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", &def.iface,
            ],
        )?;
        ns.run("ip", &["link", "set", &def.iface, "netns", node])?;
        let iface = &def.iface;
        if v6 {
            ns.run("ip", &["-6", "addr", "add", &ip, "dev", "eth0", "nodad"])?;
            ns.run("ip", &["link", "set", "eth0", "up"])?;
            ns.run(
                "ip",
                &[
                    "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
                ],
            )?;
            self.node.run(
                "ip",
                &["-6", "addr", "add", "fe80::1/64", "dev", iface, "nodad"],
            )?;
        } else {
            ns.run("ip", &["addr", "add", &ip, "dev", "eth0"])?;
            ns.run("ip", &["link", "set", "eth0", "up"])?;
            ns.run(
                "ip",
                &[
                    "route",
                    "add",
                    "169.254.1.1",
                    "dev",
                    "eth0",
                    "scope",
                    "link",
                ],
            )?;
            default_via_gateway(&ns)?;
            self.node.run(
                "sysctl",
                &["-qw", &format!("net.ipv4.conf.{iface}.proxy_arp=1")],
            )?;
            // Proxy ARP answers after a random delay up to proxy_delay by
            // default; a CNI sets it to 0 and so do we.
            self.node.run(
                "sysctl",
                &["-qw", &format!("net.ipv4.neigh.{iface}.proxy_delay=0")],
            )?;
        }
        self.node.run("ip", &["link", "set", iface, "up"])?;
        self.node
            .run("ip", &["route", "add", &ip, "dev", iface])
            .with_context(|| format!("host route for {}/{}", def.namespace, def.name))?;
        let netprobe = self.netprobe.to_string_lossy().into_owned();
        let server = ns.spawn(&netprobe, &["serve", "--tcp", "80,81", "--udp", "80,81"])?;
        Ok(PodNet {
            def,
            server,
            netns: ns,
        })
    }

    /// Waits until every pod answers itself on every served port.
    fn wait_serving(&self) -> Result<()> {
        for pod in &self.pods {
            let targets: Vec<(Proto, IpAddr, u16)> = [Proto::Tcp, Proto::Udp]
                .into_iter()
                .flat_map(|p| SERVED_PORTS.map(|port| (p, pod.def.ip, port)))
                .collect();
            wait_for(
                &format!("netprobe serving in {}", pod.id()),
                Duration::from_secs(10),
                || {
                    let res = self
                        .probe_from(pod, &targets, Duration::from_millis(200))
                        .ok()?;
                    res.iter().all(|ok| *ok).then_some(())
                },
            )?;
        }
        Ok(())
    }

    /// Probes `targets` from one pod, in parallel inside one netprobe.
    pub fn probe_from(
        &self,
        from: &PodNet,
        targets: &[(Proto, IpAddr, u16)],
        timeout: Duration,
    ) -> Result<Vec<bool>> {
        let specs: Vec<String> = targets
            .iter()
            .map(|(p, ip, port)| {
                format!("{}:{}", p.as_str(), std::net::SocketAddr::new(*ip, *port))
            })
            .collect();
        let ms = timeout.as_millis().to_string();
        // Source ports 20000..60000 handed out in order: ~1000 matrices of
        // 9x4 probes before one repeats (UDP conntrack entries live 30-120 s).
        let n = u32::try_from(specs.len()).unwrap_or(u32::MAX);
        let start = self
            .round
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        let start = if start % 40_000 + n > 40_000 {
            0
        } else {
            start % 40_000
        };
        let base = (20_000 + start).to_string();
        let netprobe = self.netprobe.to_string_lossy().into_owned();
        let mut cmd = from.netns.command(&netprobe);
        cmd.args(["probe-many", "--timeout-ms", &ms, "--udp-src-base", &base])
            .args(&specs);
        let out = run_with_timeout(&mut cmd, timeout + Duration::from_secs(10))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut verdicts = BTreeMap::new();
        for line in text.lines() {
            if let Some((target, verdict)) = line.split_once(' ') {
                verdicts.insert(target.to_string(), verdict.to_string());
            }
        }
        specs
            .iter()
            .map(|s| match verdicts.get(s).map(String::as_str) {
                Some("ok") => Ok(true),
                Some("fail") => Ok(false),
                other => bail!("netprobe in {}: {s}: {other:?}", from.id()),
            })
            .collect()
    }

    /// Probes every pod from every pod on `ports`, all sources in parallel.
    pub fn probe_matrix(&self, ports: &[(Proto, u16)], timeout: Duration) -> Result<Matrix> {
        let targets: Vec<(Proto, IpAddr, u16)> = self
            .pods
            .iter()
            .flat_map(|to| ports.iter().map(move |(p, port)| (*p, to.def.ip, *port)))
            .collect();
        let results: Vec<Result<Vec<bool>>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .pods
                .iter()
                .map(|from| s.spawn(|| self.probe_from(from, &targets, timeout)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| bail!("probe thread panicked")))
                .collect()
        });
        let mut m = Matrix::new(self.pod_ids(), ports.to_vec());
        for (from, res) in results.into_iter().enumerate() {
            let res = res?;
            for (k, ok) in res.into_iter().enumerate() {
                let to = k / ports.len();
                let port = ports.get(k % ports.len()).copied();
                if let Some((p, port)) = port {
                    m.set(from, to, p, port, ok);
                }
            }
        }
        Ok(m)
    }

    pub fn pod_ids(&self) -> Vec<String> {
        self.pods.iter().map(PodNet::id).collect()
    }

    /// A pod by `namespace/name`.
    pub fn pod(&self, id: &str) -> Option<&PodNet> {
        self.pods.iter().find(|p| p.id() == id)
    }
}

/// The pods' gateway: a link-local address every node answers for.
pub const POD_GATEWAY_V4: &str = "169.254.1.1";

/// A pod's IPv4 default route: via the gateway on eth0, `onlink` (no
/// subnet route leads to it).
fn default_via_gateway(pod: &Netns) -> Result<String> {
    pod.run(
        "ip",
        &[
            "route",
            "add",
            "default",
            "via",
            POD_GATEWAY_V4,
            "dev",
            "eth0",
            "onlink",
        ],
    )
}

/// A pod namespace behind a veth `host_if` of `node`, wired as the CNI
/// wires it but with the gateway address on the host side (so the pod's
/// ARP for it is answered without proxy ARP) and `addr/32` routed to the
/// veth; the node forwards.
pub fn pod_behind_veth(node: &Netns, tag: &str, host_if: &str, addr: &str) -> Result<Netns> {
    let p = Netns::new(tag)?;
    node.run(
        "ip",
        &[
            "link", "add", host_if, "type", "veth", "peer", "name", "eth0",
        ],
    )?;
    node.run("ip", &["link", "set", "eth0", "netns", p.name()])?;
    let gw = format!("{POD_GATEWAY_V4}/32");
    node.run("ip", &["addr", "add", &gw, "dev", host_if])?;
    node.run("ip", &["link", "set", host_if, "up"])?;
    node.run(
        "ip",
        &["route", "add", &format!("{addr}/32"), "dev", host_if],
    )?;
    node.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    p.run("ip", &["addr", "add", &format!("{addr}/32"), "dev", "eth0"])?;
    p.run("ip", &["link", "set", "eth0", "up"])?;
    default_via_gateway(&p)?;
    Ok(p)
}

/// Reachability of every (from, to, protocol, port), pods by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    pub pods: Vec<String>,
    pub ports: Vec<(Proto, u16)>,
    cells: BTreeMap<(usize, usize, Proto, u16), bool>,
}

impl Matrix {
    pub fn new(pods: Vec<String>, ports: Vec<(Proto, u16)>) -> Self {
        Matrix {
            pods,
            ports,
            cells: BTreeMap::new(),
        }
    }

    /// Fills a matrix from a rule (the expected side of a test).
    pub fn from_fn(
        pods: Vec<String>,
        ports: Vec<(Proto, u16)>,
        mut f: impl FnMut(&str, &str, Proto, u16) -> bool,
    ) -> Self {
        let mut m = Matrix::new(pods, ports);
        for from in 0..m.pods.len() {
            for to in 0..m.pods.len() {
                for (p, port) in m.ports.clone() {
                    let v = f(&m.pods[from], &m.pods[to], p, port);
                    m.set(from, to, p, port, v);
                }
            }
        }
        m
    }

    pub fn set(&mut self, from: usize, to: usize, proto: Proto, port: u16, allowed: bool) {
        self.cells.insert((from, to, proto, port), allowed);
    }

    pub fn get(&self, from: usize, to: usize, proto: Proto, port: u16) -> Option<bool> {
        self.cells.get(&(from, to, proto, port)).copied()
    }

    /// All cells, in order.
    pub fn cells(&self) -> impl Iterator<Item = ((usize, usize, Proto, u16), bool)> + '_ {
        self.cells.iter().map(|(k, v)| (*k, *v))
    }

    /// `None` when equal; else one table per protocol/port that differs:
    /// rows are sources, columns destinations; `.` allowed, `X` denied as
    /// expected, `A!` allowed but expected denied, `D!` denied but expected
    /// allowed.
    pub fn diff(&self, observed: &Matrix) -> Option<String> {
        let mut out = String::new();
        let mut mismatches = 0;
        for &(p, port) in &self.ports {
            let mut table = String::new();
            let mut bad = false;
            let _ = write!(table, "{:>6}", "");
            for to in &self.pods {
                let _ = write!(table, " {to:>5}");
            }
            table.push('\n');
            for (fi, from) in self.pods.iter().enumerate() {
                let _ = write!(table, "{from:>6}");
                for ti in 0..self.pods.len() {
                    let e = self.get(fi, ti, p, port);
                    let o = observed.get(fi, ti, p, port);
                    let cell = match (e, o) {
                        (Some(true), Some(true)) => ".",
                        (Some(false), Some(false)) => "X",
                        (Some(false), Some(true)) => "A!",
                        (Some(true), Some(false)) => "D!",
                        _ => "?",
                    };
                    if cell.ends_with('!') || cell == "?" {
                        bad = true;
                        mismatches += 1;
                    }
                    let _ = write!(table, " {cell:>5}");
                }
                table.push('\n');
            }
            if bad {
                let _ = writeln!(out, "{}/{port} (rows: from, columns: to):", p.as_str());
                out.push_str(&table);
            }
        }
        (mismatches > 0).then(|| {
            format!(
                "{mismatches} cells differ (. allowed, X denied, A! allowed but expected denied, \
                 D! denied but expected allowed)\n{out}"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_marks_only_mismatches() {
        let pods = vec!["x/a".to_string(), "x/b".to_string()];
        let ports = vec![(Proto::Tcp, 80), (Proto::Udp, 80)];
        let expected = Matrix::from_fn(pods.clone(), ports.clone(), |f, t, _, _| f == t);
        let mut observed = expected.clone();
        assert_eq!(expected.diff(&observed), None);
        observed.set(0, 1, Proto::Tcp, 80, true);
        let d = expected.diff(&observed).unwrap();
        assert!(d.starts_with("1 cells differ"), "{d}");
        assert!(d.contains("tcp/80") && !d.contains("udp/80"), "{d}");
        assert!(d.contains("A!"), "{d}");
    }
}
