//! `tortie-cni`: the CNI plugin (CNI spec 1.0.0), a thin client of the
//! agent's socket. Until the agent issue lands it answers VERSION and
//! reports every other command as a CNI error.

use std::io::Write;

const SUPPORTED: &str = r#"{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}"#;

fn main() {
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if command == "VERSION" {
        let _ = writeln!(out, "{SUPPORTED}");
        return;
    }
    let _ = writeln!(
        out,
        r#"{{"cniVersion":"1.0.0","code":4,"msg":"tortie-cni: command {command:?} is not implemented yet in this build"}}"#
    );
    std::process::exit(1);
}
