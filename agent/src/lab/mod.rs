//! `tortie lab up|status|down`: a virtual cluster in network namespaces on
//! one machine, with real parts (BIRD or GoBGP ToRs, tortie agents, pods
//! created through `tortie-cni`), as the README's main command.
//!
//! Owns: the lab's topology ([`plan`]), its manifests ([`manifests`]), the
//! ToRs' BIRD configs ([`bird`]) or GoBGP and zebra configs ([`gobgp`]),
//! the connectivity matrix ([`matrix`]) —
//! all pure — and the shell that makes and removes it ([`cluster`],
//! [`exec`]), which the integration tests also use as a library.
//!
//! Must never: touch the machine's own network namespace, or stop a
//! process or remove a namespace the lab did not make.

pub mod bird;
pub mod cluster;
pub mod exec;
pub mod gobgp;
pub mod manifests;
pub mod matrix;
pub mod plan;
pub mod state;

use std::path::PathBuf;

use anyhow::Result;

pub use cluster::{down, Binaries, DownReport, Lab};
pub use plan::{LabOptions, Plan, PodPlan, TorKind};

use crate::status_client::OutputFormat;

/// `tortie lab ...`.
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Build the lab: ToR routers running BIRD or GoBGP, nodes running `tortie
    /// agent`, pods created through `tortie-cni`; show sessions, routes and
    /// the pod-to-pod matrix before and after the example policies.
    Up(UpArgs),
    /// Show the lab again (sessions, routes, pods, a fresh matrix), or as
    /// JSON (nodes and pods).
    Status {
        #[arg(long, default_value = "/run/tortie-lab")]
        run_dir: PathBuf,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Remove everything the lab made (idempotent).
    Down {
        #[arg(long, default_value = "/run/tortie-lab")]
        run_dir: PathBuf,
        /// Namespaces `PREFIX-*` are removed when the run directory has no
        /// record of the lab.
        #[arg(long, default_value = "tl")]
        prefix: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    #[arg(long, default_value_t = 2)]
    pub pods_per_node: u32,
    /// What the top-of-rack routers run: bird; gobgp (gobgpd with an FRR
    /// zebra per ToR for its kernel routes; needs the `frr` package); or
    /// none for one switch and an iBGP full mesh between the nodes.
    #[arg(long, default_value = "bird")]
    pub tor: TorKind,
    /// Racks (ToRs) the nodes are spread over: 1 or 2 (default 2 with two
    /// nodes or more).
    #[arg(long)]
    pub racks: Option<u32>,
    /// Prefix of every namespace the lab makes.
    #[arg(long, default_value = "tl")]
    pub prefix: String,
    #[arg(long, default_value = "/run/tortie-lab")]
    pub run_dir: PathBuf,
    /// Stop after the first matrix; do not apply examples/lab/policies.yaml.
    #[arg(long)]
    pub no_policies: bool,
}

/// Runs a `tortie lab` subcommand.
pub fn run(cmd: LabCommand) -> Result<()> {
    match cmd {
        LabCommand::Up(a) => {
            let opts = LabOptions {
                nodes: a.nodes,
                pods_per_node: a.pods_per_node,
                tor: a.tor,
                racks: a.racks,
                prefix: a.prefix,
                run_dir: a.run_dir,
            };
            let bins = Binaries::from_env()?;
            match Lab::up_with(&opts, &bins, !a.no_policies, &mut std::io::stdout()) {
                Ok(_) => Ok(()),
                // `up` printed the whole story already; say it once.
                Err(e) => match e.downcast_ref::<cluster::StepError>() {
                    Some(s) => Err(anyhow::anyhow!(
                        "lab up failed at step {} ({}); what it made was removed",
                        s.step,
                        s.what
                    )),
                    None => Err(e),
                },
            }
        }
        LabCommand::Status { run_dir, output } => {
            let lab = Lab::load(&run_dir)?;
            match output {
                OutputFormat::Json => {
                    println!("{}", serde_json::to_string_pretty(&lab.document())?)
                }
                OutputFormat::Table => print!("{}", lab.summary(true)),
            }
            Ok(())
        }
        LabCommand::Down { run_dir, prefix } => {
            let r = down(&run_dir, &prefix)?;
            println!("lab down: {r}");
            Ok(())
        }
    }
}
