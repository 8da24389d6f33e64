//! `tortie-cni`'s `main`: read the environment and stdin, answer VERSION
//! locally, forward everything else to the agent, print the result or the
//! CNI error JSON (non-zero exit).

use std::io::{Read, Write};
use std::time::Duration;

use super::protocol::{call, CniRequest};
use super::spec::{
    code, parse_env, parse_netconf, version_output, CniError, Command, SPEC_VERSION,
};

/// How long the plugin waits for the agent when the config says nothing.
/// ADD waits for policy programming; kubelet retries on failure.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest network configuration read from stdin.
const MAX_STDIN: u64 = 1 << 20;

/// Runs one invocation; returns the JSON to print and the exit code.
pub fn run(
    get_env: impl Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
) -> (serde_json::Value, i32) {
    let env = match parse_env(&get_env) {
        Ok(e) => e,
        Err(e) => return (e.to_json(SPEC_VERSION), 1),
    };
    if env.command == Command::Version {
        return (version_output(SPEC_VERSION), 0);
    }
    let mut raw = Vec::new();
    if let Err(e) = stdin.take(MAX_STDIN).read_to_end(&mut raw) {
        let err = CniError::new(
            code::IO_FAILURE,
            "reading the network configuration from stdin",
        )
        .with_details(e.to_string());
        return (err.to_json(SPEC_VERSION), 1);
    }
    let config = match parse_netconf(&raw) {
        Ok(c) => c,
        Err(e) => return (e.to_json(SPEC_VERSION), 1),
    };
    let version = config.cni_version.clone();
    let socket = config.agent_socket();
    let timeout = config
        .timeout_seconds
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let command = env.command;
    match call(&socket, &CniRequest { env, config }, timeout) {
        // DEL and CHECK print nothing on success (CNI spec 1.0.0 §5).
        Ok(_) if command != Command::Add => (serde_json::Value::Null, 0),
        Ok(r) => (r.to_json(&version), 0),
        Err(e) => (e.to_json(&version), 1),
    }
}

/// The binary's entry point.
pub fn main() -> ! {
    let (out, code) = run(|k| std::env::var(k).ok(), &mut std::io::stdin().lock());
    let mut stdout = std::io::stdout().lock();
    if !out.is_null() {
        let _ = writeln!(stdout, "{out}");
    }
    let _ = stdout.flush();
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_needs_no_agent() {
        let (out, code) = run(
            |k| (k == "CNI_COMMAND").then(|| "VERSION".to_string()),
            &mut std::io::empty(),
        );
        assert_eq!(code, 0);
        assert_eq!(out["supportedVersions"][3], "1.0.0");
    }

    #[test]
    fn agent_down_is_code_11_naming_the_socket() {
        let dir = tempfile::tempdir().expect("tmp");
        let sock = dir.path().join("agent.sock");
        let conf = format!(
            r#"{{"cniVersion":"1.0.0","name":"k","type":"tortie-cni","agentSocket":"{}"}}"#,
            sock.display()
        );
        let vars = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=a"),
        ];
        let (out, code) = run(
            |k| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            },
            &mut conf.as_bytes(),
        );
        assert_eq!(code, 1);
        assert_eq!(out["code"], 11);
        assert_eq!(out["cniVersion"], "1.0.0");
        assert!(
            out["msg"]
                .as_str()
                .is_some_and(|m| m.contains(&sock.display().to_string())),
            "{out}"
        );
    }

    #[test]
    fn bad_env_is_code_4() {
        let (out, code) = run(|_| None, &mut std::io::empty());
        assert_eq!(code, 1);
        assert_eq!(out["code"], 4);
    }
}
