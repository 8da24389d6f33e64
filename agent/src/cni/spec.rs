//! The CNI specification 1.0.0, the parts a plugin speaks: environment
//! parameters, the network configuration on stdin, the success result, the
//! error result and the VERSION answer. Pure: values in, values out.
//!
//! References are to the CNI spec 1.0.0 (`SPEC.md`), sections "Parameters"
//! (§ Section 2), "Result types" (§ Section 5) and "Error" (well-known
//! error codes).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The spec version this plugin implements.
pub const SPEC_VERSION: &str = "1.0.0";

/// Versions whose configuration and result this plugin understands.
/// 0.3.x and 0.4.0 results differ from 1.0.0 only by the `version` field of
/// each IP; CHECK needs 0.4.0 or later.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// The plugin's `type` in the conflist.
pub const PLUGIN_TYPE: &str = "tortie-cni";

/// The agent socket when the configuration names none.
pub const DEFAULT_AGENT_SOCKET: &str = "/run/tortie/agent.sock";

/// Pod interface MTU when the configuration names none.
pub const DEFAULT_MTU: u32 = 1500;

/// Well-known and tortie's own error codes (CNI spec 1.0.0, "Error").
/// Codes 0-99 are the spec's; 100 and up are plugin-specific.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables (CNI_COMMAND, ...).
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (stdin is not JSON, ...).
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: a transient condition (agent down, pod not seen yet).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// tortie: the node's pod CIDRs have no free address.
    pub const IPAM_EXHAUSTED: u32 = 100;
    /// tortie: the `tortie.io/ip-addrs` request cannot be met.
    pub const IPAM_REQUEST: u32 = 101;
    /// tortie: the IPAM state cannot be read or written.
    pub const IPAM_STATE: u32 = 102;
    /// tortie: creating or removing the pod's interfaces failed.
    pub const DATAPLANE: u32 = 103;
    /// tortie: the host route or the pod's policy could not be programmed.
    pub const PROGRAMMING: u32 = 104;
    /// tortie: CHECK found the pod's network not as it should be.
    pub const CHECK_FAILED: u32 = 105;
    /// tortie: the agent's answer could not be understood.
    pub const PROTOCOL: u32 = 106;
}

/// A CNI error result (CNI spec 1.0.0, "Error"): printed on stdout with a
/// non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The JSON the plugin prints.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = self.details.clone().into();
        }
        v
    }
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
        })
    }
}

/// `CNI_ARGS`: `KEY=VALUE;KEY=VALUE`, with Kubernetes' keys pulled out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniArgs {
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    /// Any other keys (`IgnoreUnknown`, `K8S_POD_INFRA_CONTAINER_ID`, ...).
    #[serde(default)]
    pub other: BTreeMap<String, String>,
}

/// Parses `CNI_ARGS`. Empty pairs are skipped (`;;`, a trailing `;`).
pub fn parse_cni_args(s: &str) -> Result<CniArgs, CniError> {
    let mut args = CniArgs::default();
    for pair in s.split(';').filter(|p| !p.trim().is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
            ));
        };
        let (k, v) = (k.trim(), v.trim().to_string());
        match k {
            "K8S_POD_NAMESPACE" => args.pod_namespace = Some(v),
            "K8S_POD_NAME" => args.pod_name = Some(v),
            "K8S_POD_UID" => args.pod_uid = Some(v),
            _ => {
                args.other.insert(k.to_string(), v);
            }
        }
    }
    Ok(args)
}

/// The environment parameters of one invocation (CNI spec 1.0.0,
/// "Parameters").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniEnv {
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for VERSION).
    pub container_id: String,
    /// `CNI_NETNS`: a path such as `/var/run/netns/cni-1234`. May be empty
    /// for DEL (the sandbox is gone).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    pub args: CniArgs,
    /// `CNI_PATH`, split.
    pub path: Vec<PathBuf>,
}

fn valid_ifname(s: &str) -> bool {
    // Linux IFNAMSIZ is 16 with the NUL; '/', ':' and whitespace are refused
    // by the kernel (dev_valid_name).
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

fn valid_container_id(s: &str) -> bool {
    // Spec: alphanumeric plus underscore, dot and hyphen, starting alphanumeric.
    s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Reads the parameters through `get` (`std::env::var` in the binary).
pub fn parse_env(get: impl Fn(&str) -> Option<String>) -> Result<CniEnv, CniError> {
    let command = match get("CNI_COMMAND").as_deref() {
        Some("ADD") => Command::Add,
        Some("DEL") => Command::Del,
        Some("CHECK") => Command::Check,
        Some("VERSION") => Command::Version,
        Some(other) => {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, VERSION"),
            ))
        }
        None => return Err(CniError::new(code::INVALID_ENV, "CNI_COMMAND is not set")),
    };
    let path = get("CNI_PATH")
        .map(|p| {
            p.split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    if command == Command::Version {
        return Ok(CniEnv {
            command,
            container_id: String::new(),
            netns: String::new(),
            ifname: String::new(),
            args: CniArgs::default(),
            path,
        });
    }
    let container_id = get("CNI_CONTAINERID").unwrap_or_default();
    if !valid_container_id(&container_id) {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!(
                "CNI_CONTAINERID {container_id:?} is missing or not [A-Za-z0-9][A-Za-z0-9_.-]*"
            ),
        ));
    }
    let netns = get("CNI_NETNS").unwrap_or_default();
    if netns.is_empty() && command != Command::Del {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_NETNS is not set (required for {command})"),
        ));
    }
    let ifname = get("CNI_IFNAME").unwrap_or_default();
    if !valid_ifname(&ifname) {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_IFNAME {ifname:?} is not a valid interface name (1-15 bytes, no '/', ':' or spaces)"),
        ));
    }
    let args = parse_cni_args(&get("CNI_ARGS").unwrap_or_default())?;
    if command != Command::Del && (args.pod_namespace.is_none() || args.pod_name.is_none()) {
        return Err(CniError::new(
            code::INVALID_ENV,
            "CNI_ARGS has no K8S_POD_NAMESPACE and K8S_POD_NAME: tortie-cni wires Kubernetes pods only",
        ));
    }
    Ok(CniEnv {
        command,
        container_id,
        netns,
        ifname,
        args,
        path,
    })
}

/// The plugin's entry of the network configuration list, with the
/// runtime-injected `cniVersion`, `name` and (CHECK) `prevResult`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The agent's socket; [`DEFAULT_AGENT_SOCKET`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_socket: Option<PathBuf>,
    /// Pod interface MTU; [`DEFAULT_MTU`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Seconds to wait for the agent's answer (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<serde_json::Value>,
}

impl NetConf {
    pub fn mtu(&self) -> u32 {
        self.mtu.unwrap_or(DEFAULT_MTU)
    }

    pub fn agent_socket(&self) -> PathBuf {
        self.agent_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_AGENT_SOCKET))
    }
}

/// Parses the configuration on stdin.
pub fn parse_netconf(bytes: &[u8]) -> Result<NetConf, CniError> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        CniError::new(
            code::DECODE,
            "the network configuration on stdin is not JSON",
        )
        .with_details(e.to_string())
    })?;
    // The version first: a newer layout may not parse as ours, and that is
    // an incompatibility, not a broken config.
    let version = v.get("cniVersion").and_then(|x| x.as_str()).unwrap_or("");
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {version:?} is not supported; tortie-cni supports {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let conf: NetConf = serde_json::from_value(v).map_err(|e| {
        CniError::new(
            code::INVALID_CONFIG,
            "invalid tortie-cni network configuration",
        )
        .with_details(e.to_string())
    })?;
    if let Some(mtu) = conf.mtu {
        if !(576..=65535).contains(&mtu) {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("mtu {mtu} is outside 576..65535"),
            ));
        }
    }
    if conf.timeout_seconds == Some(0) {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "timeoutSeconds must be at least 1",
        ));
    }
    Ok(conf)
}

/// An interface of a result (CNI spec 1.0.0 §5.1 "interfaces").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The netns path for an interface inside the sandbox; absent on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address of a result (CNI spec 1.0.0 §5.1 "ips").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfig {
    /// `ADDR/LEN`.
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route of a result (CNI spec 1.0.0 §5.1 "routes").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteConfig {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// The success result of ADD (CNI spec 1.0.0 §5.1), version-neutral:
/// [`CniResult::to_json`] renders it for the configuration's version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

impl CniResult {
    /// The JSON the plugin prints for `cni_version`: 0.3.x/0.4.0 results
    /// carry `"version": "4"|"6"` per IP, 1.0.0 results do not.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let old = cni_version.starts_with("0.");
        let ips: Vec<serde_json::Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut v = serde_json::to_value(ip).unwrap_or_default();
                if old {
                    v["version"] = if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    }
                    .into();
                }
                v
            })
            .collect();
        serde_json::json!({
            "cniVersion": cni_version,
            "interfaces": self.interfaces,
            "ips": ips,
            "routes": self.routes,
            "dns": {},
        })
    }

    /// Reads a `prevResult` (any supported version; `version` is ignored).
    pub fn from_prev(v: &serde_json::Value) -> Result<CniResult, CniError> {
        serde_json::from_value(v.clone()).map_err(|e| {
            CniError::new(code::INVALID_CONFIG, "prevResult is not a CNI result")
                .with_details(e.to_string())
        })
    }
}

/// The answer to VERSION (CNI spec 1.0.0 §5.3).
pub fn version_output(cni_version: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": cni_version,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/var/run/netns/cni-1"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1",
        ),
        ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
    ];

    #[test]
    fn parses_a_kubelet_add() {
        let e = parse_env(env(ADD)).expect("env");
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.container_id, "abc123");
        assert_eq!(e.netns, "/var/run/netns/cni-1");
        assert_eq!(e.ifname, "eth0");
        assert_eq!(e.args.pod_namespace.as_deref(), Some("default"));
        assert_eq!(e.args.pod_name.as_deref(), Some("web-0"));
        assert_eq!(e.args.pod_uid.as_deref(), Some("u-1"));
        assert_eq!(
            e.args.other.get("IgnoreUnknown").map(String::as_str),
            Some("1")
        );
        assert_eq!(
            e.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
    }

    fn without(key: &str) -> Vec<(&'static str, &'static str)> {
        ADD.iter().filter(|(k, _)| *k != key).copied().collect()
    }

    fn with(key: &'static str, val: &'static str) -> Vec<(&'static str, &'static str)> {
        let mut v = without(key);
        v.push((key, val));
        v
    }

    #[test]
    fn bad_environments_are_code_4_with_the_variable_named() {
        for (vars, needle) in [
            (without("CNI_COMMAND"), "CNI_COMMAND is not set"),
            (with("CNI_COMMAND", "GC"), "\"GC\" is not one of"),
            (without("CNI_CONTAINERID"), "CNI_CONTAINERID"),
            (with("CNI_CONTAINERID", "-x"), "CNI_CONTAINERID"),
            (
                without("CNI_NETNS"),
                "CNI_NETNS is not set (required for ADD)",
            ),
            (with("CNI_IFNAME", "a-very-long-ifname"), "CNI_IFNAME"),
            (with("CNI_IFNAME", "eth/0"), "CNI_IFNAME"),
            (with("CNI_ARGS", "K8S_POD_NAME=x"), "K8S_POD_NAMESPACE"),
            (with("CNI_ARGS", "novalue"), "not KEY=VALUE"),
        ] {
            let e = parse_env(env(&vars)).expect_err(needle);
            assert_eq!(e.code, code::INVALID_ENV, "{e}");
            assert!(e.msg.contains(needle), "{e} lacks {needle}");
        }
    }

    #[test]
    fn del_needs_neither_netns_nor_pod_args_and_version_needs_nothing() {
        let mut vars = with("CNI_COMMAND", "DEL");
        vars.retain(|(k, _)| *k != "CNI_NETNS" && *k != "CNI_ARGS");
        let e = parse_env(env(&vars)).expect("del");
        assert_eq!(e.netns, "");
        assert_eq!(e.args, CniArgs::default());
        let e = parse_env(env(&[("CNI_COMMAND", "VERSION")])).expect("version");
        assert_eq!(e.command, Command::Version);
    }

    #[test]
    fn parses_the_conflist_entry() {
        let c = parse_netconf(
            br#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"tortie-cni",
                 "agentSocket":"/run/tortie/agent.sock","mtu":1450,"unknownField":true}"#,
        )
        .expect("conf");
        assert_eq!(c.mtu(), 1450);
        assert_eq!(c.agent_socket(), PathBuf::from("/run/tortie/agent.sock"));
        assert_eq!(c.name, "k8s-pod-network");
        let c = parse_netconf(br#"{"cniVersion":"0.4.0","type":"tortie-cni"}"#).expect("min");
        assert_eq!(c.mtu(), DEFAULT_MTU);
        assert_eq!(c.agent_socket(), PathBuf::from(DEFAULT_AGENT_SOCKET));
    }

    #[test]
    fn bad_configs_get_the_right_codes() {
        for (raw, want) in [
            (&b"not json"[..], code::DECODE),
            (
                br#"{"cniVersion":"2.0.0","type":"tortie-cni"}"#,
                code::INCOMPATIBLE_VERSION,
            ),
            (br#"{"type":"tortie-cni"}"#, code::INCOMPATIBLE_VERSION),
            (
                br#"{"cniVersion":"1.0.0","type":"tortie-cni","mtu":"big"}"#,
                code::INVALID_CONFIG,
            ),
            (
                br#"{"cniVersion":"1.0.0","type":"tortie-cni","mtu":100}"#,
                code::INVALID_CONFIG,
            ),
            (br#"{"cniVersion":"1.0.0"}"#, code::INVALID_CONFIG),
        ] {
            let e = parse_netconf(raw).expect_err("bad");
            assert_eq!(e.code, want, "{e}");
        }
    }

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "tort0d7763386da".into(),
                    mac: "ee:ee:ee:ee:ee:ee".into(),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:01".into(),
                    sandbox: Some("/var/run/netns/cni-1".into()),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.244.1.7/32".parse().expect("net"),
                    gateway: Some("169.254.1.1".parse().expect("addr")),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00:1::7/128".parse().expect("net"),
                    gateway: Some("fe80::1".parse().expect("addr")),
                    interface: Some(1),
                },
            ],
            routes: vec![
                RouteConfig {
                    dst: "0.0.0.0/0".parse().expect("net"),
                    gw: Some("169.254.1.1".parse().expect("addr")),
                },
                RouteConfig {
                    dst: "::/0".parse().expect("net"),
                    gw: Some("fe80::1".parse().expect("addr")),
                },
            ],
        }
    }

    /// Golden: the result as a 1.0.0 runtime reads it.
    #[test]
    fn result_json_1_0_0() {
        let v = sample().to_json("1.0.0");
        let want = serde_json::json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "tort0d7763386da", "mac": "ee:ee:ee:ee:ee:ee"},
                {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/var/run/netns/cni-1"}
            ],
            "ips": [
                {"address": "10.244.1.7/32", "gateway": "169.254.1.1", "interface": 1},
                {"address": "fd00:1::7/128", "gateway": "fe80::1", "interface": 1}
            ],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
                {"dst": "::/0", "gw": "fe80::1"}
            ],
            "dns": {}
        });
        assert_eq!(v, want);
        assert_eq!(CniResult::from_prev(&v).expect("reads back"), sample());
    }

    #[test]
    fn result_json_0_4_0_has_ip_versions() {
        let v = sample().to_json("0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][1]["version"], "6");
        assert_eq!(CniResult::from_prev(&v).expect("reads back"), sample());
    }

    #[test]
    fn error_and_version_json() {
        let e = CniError::new(code::TRY_AGAIN_LATER, "no agent").with_details("connect: refused");
        assert_eq!(
            e.to_json("1.0.0"),
            serde_json::json!({"cniVersion":"1.0.0","code":11,"msg":"no agent","details":"connect: refused"})
        );
        assert_eq!(e.to_string(), "no agent: connect: refused");
        assert_eq!(
            version_output("1.0.0"),
            serde_json::json!({"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]})
        );
    }
}
