//! `tortie`: the node agent, its CLI, the standalone BGP speaker and the lab.
//!
//! Subcommands follow the contract in DESIGN.md. A subcommand whose issue has
//! not landed yet says so and exits non-zero; none of them pretends to work.

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "tortie", version, about = "tortie node networking agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node agent.
    Agent,
    /// Ask a running agent or speaker for its status.
    Status,
    /// Run the BGP speaker on its own.
    Bgp,
    /// Compile, apply or explain NetworkPolicy without the agent.
    Policy,
    /// A virtual cluster in network namespaces.
    Lab,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let name = match cli.command {
        Command::Agent => "agent",
        Command::Status => "status",
        Command::Bgp => "bgp",
        Command::Policy => "policy",
        Command::Lab => "lab",
    };
    bail!("`tortie {name}` is not implemented yet in this build; see the open issues")
}
