//! `tortie`: the node agent, its CLI, the standalone BGP speaker and the lab.
//!
//! Subcommands follow the contract in DESIGN.md. A subcommand whose issue has
//! not landed yet says so and exits non-zero; none of them pretends to work.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tortie::manifests::{self, Manifests};
use tortie::status_client::OutputFormat;
use tortie_policy::apply::{Applier, Dataplane, ProcessRunner, Runner};
use tortie_policy::backend::{self, Backend};
use tortie_policy::model::Snapshot;
use tortie_policy::{
    compile, explain, ipset_restore, iptables_restore, Compiled, Endpoint, Family, Flow, Protocol,
};

#[derive(Debug, Parser)]
#[command(name = "tortie", version, about = "tortie node networking agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node agent.
    Agent(tortie::daemon::Args),
    /// Ask a running agent or speaker for its status (RUN_DIR/agent.sock).
    Status {
        /// The run directory of the agent or speaker to ask.
        #[arg(long, default_value = "/run/tortie")]
        run_dir: std::path::PathBuf,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        /// Also list the routes the speaker holds (`rib` in the JSON).
        #[arg(long)]
        routes: bool,
    },
    /// Run the BGP speaker on its own (route reflector, route server,
    /// tests, benchmarks). The config's peer fields are spelled as in
    /// BGPPeer.spec; see examples/bgp/tortie-node.yaml.
    Bgp(tortie::bgp_cmd::Args),
    /// Compile, apply or explain NetworkPolicy without the agent.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// A virtual cluster in network namespaces.
    #[command(subcommand)]
    Lab(tortie::lab::LabCommand),
    /// Print the CustomResourceDefinitions of BGPConfiguration, BGPPeer and IPPool (YAML).
    Crds,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Print the ipset and iptables-restore payloads for a node's workloads.
    ///
    /// Policies that fail validation are reported on stderr, one line each
    /// naming the object and field, and left out; everything else compiles.
    /// Exit status: 0, or 2 on an error (with --strict: also when a
    /// manifest or policy was rejected).
    Compile {
        #[command(flatten)]
        input: Input,
        /// Address families to print.
        #[arg(long, value_enum, default_value_t = FamilyArg::Both)]
        family: FamilyArg,
        /// Exit 2 when any manifest or policy was rejected.
        #[arg(long)]
        strict: bool,
    },
    /// Apply a node's ruleset once (ipset restore, then iptables-restore
    /// --noflush), or remove everything tortie made with --remove.
    ///
    /// Exit status: 0 applied, 2 on an error (the previous rules stay in
    /// force), or with --strict also when a manifest or policy was rejected
    /// (the rest is applied all the same).
    Apply {
        /// Directory of Kubernetes YAML manifests (read recursively).
        #[arg(long, required_unless_present = "remove")]
        manifests: Option<PathBuf>,
        /// The node whose local workloads get chains.
        #[arg(long, required_unless_present = "remove")]
        node: Option<String>,
        /// iptables backend; default: detected like kubelet does (kube
        /// canary chains, then which backend holds rules, then `iptables`).
        #[arg(long, value_enum)]
        iptables_backend: Option<BackendArg>,
        /// Run the tools inside this network namespace (`ip netns exec`).
        #[arg(long)]
        netns: Option<String>,
        /// Address families to program.
        #[arg(long, value_enum, default_value_t = FamilyArg::Both)]
        family: FamilyArg,
        /// Remove tortie's chains, jumps and sets instead of applying.
        #[arg(long)]
        remove: bool,
        /// Exit 2 when any manifest or policy was rejected.
        #[arg(long)]
        strict: bool,
    },
    /// Explain one flow's verdict from the compiled ruleset.
    ///
    /// Egress is judged on the source pod's node and ingress on the
    /// destination pod's node (or both on --node). Exit status: 0 allowed,
    /// 1 denied, 2 on an error.
    Explain {
        /// Directory of Kubernetes YAML manifests (read recursively).
        #[arg(long)]
        manifests: PathBuf,
        /// Judge both sides on this node instead of each pod's own node.
        #[arg(long)]
        node: Option<String>,
        /// Source: NAMESPACE/POD or an IP address.
        #[arg(long)]
        from: String,
        /// Destination: NAMESPACE/POD or an IP address.
        #[arg(long)]
        to: String,
        /// Destination port and protocol: 80/TCP, 53/UDP, 80 (= TCP).
        #[arg(long)]
        port: String,
    },
}

#[derive(Debug, Args)]
struct Input {
    /// Directory of Kubernetes YAML manifests (read recursively).
    #[arg(long)]
    manifests: PathBuf,
    /// The node whose local workloads (pods with spec.nodeName == NODE)
    /// get chains.
    #[arg(long)]
    node: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FamilyArg {
    V4,
    V6,
    Both,
}

impl FamilyArg {
    fn families(self) -> Vec<Family> {
        match self {
            FamilyArg::V4 => vec![Family::V4],
            FamilyArg::V6 => vec![Family::V6],
            FamilyArg::Both => vec![Family::V4, Family::V6],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Nft,
    Legacy,
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Nft => Backend::Nft,
            BackendArg::Legacy => Backend::Legacy,
        }
    }
}

/// Exit status for a command that failed (as opposed to "denied").
const EXIT_ERROR: u8 = 2;

// Every subcommand now exists; each arm returns its own exit status in
// the same shape, so helpers can add arms without touching the others.
#[allow(clippy::needless_return)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Policy(cmd) => {
            return match run_policy(cmd) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(EXIT_ERROR)
                }
            }
        }
        Command::Agent(args) => {
            return match tortie::daemon::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Status {
            run_dir,
            output,
            routes,
        } => {
            return match tortie::status_client::status_cmd(&run_dir, output, routes) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Bgp(args) => {
            return match tortie::bgp_cmd::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Lab(cmd) => {
            return match tortie::lab::run(cmd) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Crds => {
            print!("{}", tortie::crd::crds_yaml());
            return ExitCode::SUCCESS;
        }
    }
}

/// Runs a `tortie policy` subcommand; returns the exit status.
fn run_policy(cmd: PolicyCommand) -> Result<u8> {
    match cmd {
        PolicyCommand::Compile {
            input,
            family,
            strict,
        } => {
            let (manifests, snapshot) = load(&input.manifests, &input.node)?;
            let compiled = compile(&snapshot);
            let rejected = report_rejections(&manifests, &compiled);
            print!("{}", render(&compiled, &family.families()));
            Ok(strict_exit(strict, rejected))
        }
        PolicyCommand::Apply {
            manifests,
            node,
            iptables_backend,
            netns,
            family,
            remove,
            strict,
        } => {
            let runner = match &netns {
                Some(ns) => ProcessRunner::in_netns(ns),
                None => ProcessRunner::host(),
            };
            let decision = backend::detect(&runner, iptables_backend.map(Backend::from))
                .context("choosing the iptables backend")?;
            eprintln!(
                "iptables backend: {} ({})",
                decision.backend, decision.reason
            );
            let dataplane = Dataplane::new(Box::new(runner.clone()), decision.backend)
                .with_families(&family.families());
            let mut applier = Applier::new(dataplane);
            if remove {
                applier
                    .remove()
                    .context("removing tortie's chains, jumps and sets")?;
                eprintln!("removed tortie's chains, jumps and sets");
                return Ok(0);
            }
            let (Some(dir), Some(node)) = (manifests, node) else {
                bail!("--manifests and --node are required unless --remove");
            };
            let (manifests, mut snapshot) = load(&dir, &node)?;
            snapshot.unknown_interfaces = unknown_interfaces(&runner, &snapshot)
                .context("listing the node's workload interfaces")?;
            let compiled = compile(&snapshot);
            let rejected = report_rejections(&manifests, &compiled);
            let report = applier.apply(&compiled).context("applying the ruleset")?;
            eprintln!(
                "applied for node {}: {} workloads, {} policies; sets changed: {}, \
                 v4 rules changed: {}, v6 rules changed: {}, jumps fixed: {:?}, sets destroyed: {:?}",
                node,
                snapshot.local.len(),
                snapshot.policies.len(),
                report.ipset_changed,
                report.iptables_v4_changed,
                report.iptables_v6_changed,
                report.jumps_fixed,
                report.sets_destroyed
            );
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            Ok(strict_exit(strict, rejected))
        }
        PolicyCommand::Explain {
            manifests,
            node,
            from,
            to,
            port,
        } => {
            let loaded = load_manifests(&manifests)?;
            for e in &loaded.errors {
                eprintln!("manifest rejected: {e}");
            }
            let from = parse_endpoint(&from).context("--from")?;
            let to = parse_endpoint(&to).context("--to")?;
            for (flag, e) in [("--from", &from), ("--to", &to)] {
                if let Endpoint::Pod { namespace, name } = e {
                    if find_pod(&loaded, namespace, name).is_none() {
                        bail!(
                            "{flag}: no pod {namespace}/{name} in {}",
                            manifests.display()
                        );
                    }
                }
            }
            let (port, protocol) = parse_port(&port).context("--port")?;
            let flow = Flow {
                from: from.clone(),
                to: to.clone(),
                port,
                protocol,
            };
            // Each side is judged where it is enforced: egress on the
            // source's node, ingress on the destination's node.
            let egress_node = node.clone().or_else(|| pod_node(&loaded, &from));
            let ingress_node = node.or_else(|| pod_node(&loaded, &to));
            let judge = |n: &Option<String>| {
                let snapshot = loaded.policy_snapshot(n.as_deref().unwrap_or(""));
                let compiled = compile(&snapshot);
                explain(&compiled, &snapshot, &flow)
            };
            let on_src = judge(&egress_node);
            let on_dst = judge(&ingress_node);
            let show = |n: &Option<String>| n.clone().unwrap_or_else(|| "-".into());
            println!("flow: {from} -> {to} port {port}/{protocol}");
            println!("egress  (node {}): {}", show(&egress_node), on_src.egress);
            println!("ingress (node {}): {}", show(&ingress_node), on_dst.ingress);
            let allowed = side_allows(&on_src.egress) && side_allows(&on_dst.ingress);
            println!("verdict: {}", if allowed { "allowed" } else { "denied" });
            Ok(if allowed { 0 } else { 1 })
        }
    }
}

fn load_manifests(dir: &std::path::Path) -> Result<Manifests> {
    manifests::load_dir(dir).with_context(|| format!("loading manifests from {}", dir.display()))
}

fn load(dir: &std::path::Path, node: &str) -> Result<(Manifests, Snapshot)> {
    let m = load_manifests(dir)?;
    if !m.nodes.is_empty()
        && !m
            .nodes
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some(node))
    {
        eprintln!(
            "warning: no Node {node} in {}; no pod is local to it",
            dir.display()
        );
    }
    let snapshot = m.policy_snapshot(node);
    Ok((m, snapshot))
}

/// Prints every rejected manifest and policy; returns how many.
fn report_rejections(m: &Manifests, compiled: &Compiled) -> usize {
    for e in &m.errors {
        eprintln!("manifest rejected: {e}");
    }
    for e in &compiled.errors {
        eprintln!("policy rejected: {e}");
    }
    m.errors.len() + compiled.errors.len()
}

fn strict_exit(strict: bool, rejected: usize) -> u8 {
    if strict && rejected > 0 {
        eprintln!("--strict: {rejected} objects rejected");
        EXIT_ERROR
    } else {
        0
    }
}

/// Both payloads per family, each under a `#` comment header (a comment
/// for both `ipset restore` and `iptables-restore`).
fn render(compiled: &Compiled, families: &[Family]) -> String {
    let mut out = String::new();
    for &f in families {
        let name = family_name(f);
        out.push_str(&format!("# ipset restore ({name})\n"));
        out.push_str(&ipset_restore(&compiled.ruleset, f));
        out.push_str(&format!("# iptables-restore --noflush ({name})\n"));
        out.push_str(&iptables_restore(&compiled.ruleset, f));
    }
    out
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// Workload-looking interfaces (`tort...`) in the target namespace that no
/// local pod owns: the compiler drops their traffic (fail closed).
fn unknown_interfaces(runner: &dyn Runner, snapshot: &Snapshot) -> Result<Vec<String>> {
    let out = runner.run("ip", &["-o", "link", "show"], None)?;
    let mut unknown: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
        .filter(|n| n.starts_with(tortie_policy::naming::INTERFACE_PREFIX))
        .filter(|n| !snapshot.local.iter().any(|w| &w.interface == n))
        .collect();
    unknown.sort();
    unknown.dedup();
    Ok(unknown)
}

fn parse_endpoint(s: &str) -> Result<Endpoint> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Endpoint::Ip(ip));
    }
    match s.split_once('/') {
        Some((ns, pod)) if !ns.is_empty() && !pod.is_empty() && !pod.contains('/') => {
            Ok(Endpoint::Pod {
                namespace: ns.to_string(),
                name: pod.to_string(),
            })
        }
        _ => bail!("{s:?} is neither NAMESPACE/POD nor an IP address"),
    }
}

fn parse_port(s: &str) -> Result<(u16, Protocol)> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "TCP"));
    let port: u16 = port
        .parse()
        .with_context(|| format!("{port:?} is not a port number"))?;
    let protocol = Protocol::from_api(&proto.to_ascii_uppercase())
        .with_context(|| format!("{proto:?} is not TCP, UDP or SCTP"))?;
    Ok((port, protocol))
}

fn find_pod<'m>(
    m: &'m Manifests,
    namespace: &str,
    name: &str,
) -> Option<&'m tortie_policy::SlimPod> {
    m.pods
        .iter()
        .find(|p| *p.namespace == *namespace && *p.name == *name)
        .map(|p| &**p)
}

fn pod_node(m: &Manifests, e: &Endpoint) -> Option<String> {
    let Endpoint::Pod { namespace, name } = e else {
        return None;
    };
    find_pod(m, namespace, name).and_then(|p| p.node_name.as_deref().map(String::from))
}

fn side_allows(v: &tortie_policy::SideVerdict) -> bool {
    use tortie_policy::SideVerdict::*;
    !matches!(v, Denied { .. } | Dropped { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_ports_parse() {
        assert_eq!(
            parse_endpoint("x/a").unwrap(),
            Endpoint::Pod {
                namespace: "x".into(),
                name: "a".into()
            }
        );
        assert!(matches!(
            parse_endpoint("10.0.0.1").unwrap(),
            Endpoint::Ip(_)
        ));
        assert!(parse_endpoint("x/").is_err());
        assert!(parse_endpoint("x").is_err());
        assert_eq!(parse_port("80/TCP").unwrap(), (80, Protocol::Tcp));
        assert_eq!(parse_port("53/udp").unwrap(), (53, Protocol::Udp));
        assert_eq!(parse_port("81").unwrap(), (81, Protocol::Tcp));
        assert!(parse_port("80/ICMP").is_err());
        assert!(parse_port("http").is_err());
    }

    fn policy(args: &[&str]) -> u8 {
        let mut argv = vec!["tortie", "policy"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Policy(cmd) => run_policy(cmd).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn examples() -> String {
        format!("{}/../examples/policy", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn explain_exit_status_is_the_verdict() {
        let dir = examples();
        let explain = |from: &str, to: &str, port: &str| {
            policy(&[
                "explain",
                "--manifests",
                &dir,
                "--from",
                from,
                "--to",
                to,
                "--port",
                port,
            ])
        };
        // examples/policy/policies.yaml: x/a accepts y's pods on TCP 80 only.
        assert_eq!(explain("y/b", "x/a", "80/TCP"), 0);
        assert_eq!(explain("y/b", "x/a", "81/TCP"), 1);
        assert_eq!(explain("z/b", "x/a", "80"), 1);
        assert_eq!(explain("x/a", "y/b", "81/udp"), 0);
    }

    #[test]
    fn compile_reports_rejections_and_strict_fails() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            format!("{}/cluster.yaml", examples()),
            dir.path().join("cluster.yaml"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("bad.yaml"),
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {name: bad-cidr, namespace: x}\nspec:\n  podSelector: {}\n  \
             ingress: [{from: [{ipBlock: {cidr: 10.0.0.300/8}}]}]\n",
        )
        .unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(policy(&["compile", "--manifests", d, "--node", "n1"]), 0);
        assert_eq!(
            policy(&["compile", "--manifests", d, "--node", "n1", "--strict"]),
            EXIT_ERROR
        );
    }

    #[test]
    fn cli_parses_the_contract() {
        Cli::try_parse_from([
            "tortie",
            "policy",
            "compile",
            "--manifests",
            "d",
            "--node",
            "n",
            "--family",
            "v4",
        ])
        .unwrap();
        Cli::try_parse_from([
            "tortie",
            "policy",
            "apply",
            "--manifests",
            "d",
            "--node",
            "n",
            "--iptables-backend",
            "legacy",
        ])
        .unwrap();
        Cli::try_parse_from([
            "tortie",
            "policy",
            "explain",
            "--manifests",
            "d",
            "--from",
            "x/a",
            "--to",
            "1.2.3.4",
            "--port",
            "80/TCP",
        ])
        .unwrap();
    }
}
