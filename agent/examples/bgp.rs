//! Temporary front end until main.rs wires `tortie bgp` and `tortie status`:
//! `cargo run -p tortie --example bgp -- bgp --config FILE ...` and
//! `cargo run -p tortie --example bgp -- status --run-dir DIR -o json`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tortie::bgp_cmd;
use tortie::status_client::{status_cmd, OutputFormat};

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Bgp(bgp_cmd::Args),
    Status {
        #[arg(long, default_value = "/run/tortie")]
        run_dir: PathBuf,
        #[arg(short = 'o', value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        #[arg(long)]
        routes: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bgp(a) => bgp_cmd::run(a),
        Command::Status {
            run_dir,
            output,
            routes,
        } => status_cmd(&run_dir, output, routes),
    }
}
