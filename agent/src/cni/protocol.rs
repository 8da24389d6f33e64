//! The CNI exchange on the agent's socket `RUN_DIR/agent.sock`.
//!
//! The same socket and framing as `tortie status` (one JSON line each way,
//! then close; agent/src/status_client.rs):
//!
//! ```text
//! -> {"cni":{"env":{"command":"ADD","containerId":"abc","netns":"/var/run/netns/x",
//!            "ifname":"eth0","args":{"podNamespace":"default","podName":"web-0",...},"path":[]},
//!           "config":{"cniVersion":"1.0.0","name":"k8s","type":"tortie-cni","mtu":1500,...}}}
//! <- {"cniResult":{"interfaces":[...],"ips":[...],"routes":[...]}}
//! <- {"cniError":{"code":100,"msg":"...","details":"..."}}
//! ```
//!
//! The result is version-neutral; the plugin renders it for the
//! configuration's `cniVersion`. DEL and CHECK answer an empty result.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::spec::{code, CniEnv, CniError, CniResult, NetConf};

/// One plugin invocation, forwarded to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CniRequest {
    pub env: CniEnv,
    pub config: NetConf,
}

/// The request line's envelope: `{"cni": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestLine {
    pub cni: CniRequest,
}

/// The agent's answer: `{"cniResult": ...}` or `{"cniError": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CniReply {
    CniResult(CniResult),
    CniError(CniError),
}

impl From<Result<CniResult, CniError>> for CniReply {
    fn from(r: Result<CniResult, CniError>) -> Self {
        match r {
            Ok(r) => CniReply::CniResult(r),
            Err(e) => CniReply::CniError(e),
        }
    }
}

/// The largest answer the plugin reads.
const MAX_REPLY: u64 = 1 << 20;

/// Whether a socket request line is a CNI request (`{"cni": ...}`), for the
/// agent's dispatcher.
pub fn is_cni_request(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line.trim())
        .ok()
        .is_some_and(|v| v.get("cni").is_some())
}

/// Parses a request line.
pub fn parse_request_line(line: &str) -> Result<CniRequest, CniError> {
    serde_json::from_str::<RequestLine>(line.trim())
        .map(|l| l.cni)
        .map_err(|e| {
            CniError::new(code::DECODE, "the agent could not decode the CNI request")
                .with_details(e.to_string())
        })
}

/// Sends `req` to the agent on `socket` and waits up to `timeout` for the
/// answer. An agent that is not there is code 11 (try again later) naming
/// the socket.
pub fn call(socket: &Path, req: &CniRequest, timeout: Duration) -> Result<CniResult, CniError> {
    let shown = socket.display();
    let mut s = UnixStream::connect(socket).map_err(|e| {
        CniError::new(
            code::TRY_AGAIN_LATER,
            format!("the tortie agent is not answering on {shown}: is it running on this node?"),
        )
        .with_details(e.to_string())
    })?;
    let io_err = |what: &str, e: std::io::Error| {
        let code = if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            code::TRY_AGAIN_LATER
        } else {
            code::IO_FAILURE
        };
        CniError::new(code, format!("{what} the tortie agent on {shown}"))
            .with_details(e.to_string())
    };
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(Duration::from_secs(5))))
        .map_err(|e| io_err("setting timeouts for", e))?;
    let mut line = serde_json::to_string(&RequestLine { cni: req.clone() }).map_err(|e| {
        CniError::new(code::PROTOCOL, "encoding the request").with_details(e.to_string())
    })?;
    line.push('\n');
    s.write_all(line.as_bytes())
        .map_err(|e| io_err("sending the request to", e))?;
    let mut answer = String::new();
    BufReader::new((&s).take(MAX_REPLY))
        .read_line(&mut answer)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => CniError::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "no answer from the tortie agent on {shown} within {}s",
                    timeout.as_secs()
                ),
            ),
            _ => io_err("reading the answer of", e),
        })?;
    if answer.trim().is_empty() {
        return Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("the tortie agent on {shown} closed the connection without answering"),
        ));
    }
    match serde_json::from_str::<CniReply>(answer.trim()) {
        Ok(CniReply::CniResult(r)) => Ok(r),
        Ok(CniReply::CniError(e)) => Err(e),
        Err(_) => {
            // An agent without CNI support answers {"error": "..."}.
            let v: Option<serde_json::Value> = serde_json::from_str(answer.trim()).ok();
            let msg = v
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(|e| e.as_str())
                .map(str::to_string);
            Err(match msg {
                Some(m) => CniError::new(
                    code::PROTOCOL,
                    format!("the agent on {shown} refused the CNI request: {m}"),
                ),
                None => CniError::new(
                    code::PROTOCOL,
                    format!("the agent on {shown} answered something that is not a CNI reply"),
                )
                .with_details(answer.trim().chars().take(200).collect::<String>()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::spec::{parse_env, parse_netconf};

    fn sample() -> CniRequest {
        let vars = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"),
        ];
        CniRequest {
            env: parse_env(|k| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            })
            .expect("env"),
            config: parse_netconf(br#"{"cniVersion":"1.0.0","name":"k","type":"tortie-cni"}"#)
                .expect("conf"),
        }
    }

    #[test]
    fn request_line_round_trips_and_is_recognised() {
        let line = serde_json::to_string(&RequestLine { cni: sample() }).expect("json");
        assert!(
            line.starts_with(r#"{"cni":{"env":{"command":"ADD","containerId":"abc""#),
            "{line}"
        );
        assert!(is_cni_request(&line));
        assert!(!is_cni_request(r#"{"get":"status"}"#));
        assert_eq!(parse_request_line(&line).expect("parse"), sample());
        assert_eq!(
            parse_request_line("{}").expect_err("bad").code,
            code::DECODE
        );
    }

    #[test]
    fn reply_envelopes() {
        let e = CniReply::CniError(CniError::new(100, "full"));
        assert_eq!(
            serde_json::to_string(&e).expect("json"),
            r#"{"cniError":{"code":100,"msg":"full"}}"#
        );
        let r = CniReply::CniResult(CniResult::default());
        assert_eq!(
            serde_json::to_string(&r).expect("json"),
            r#"{"cniResult":{"interfaces":[],"ips":[],"routes":[]}}"#
        );
    }

    #[test]
    fn no_agent_is_try_again_later_naming_the_socket() {
        let dir = tempfile::tempdir().expect("tmp");
        let sock = dir.path().join("agent.sock");
        let e = call(&sock, &sample(), Duration::from_secs(1)).expect_err("nobody");
        assert_eq!(e.code, code::TRY_AGAIN_LATER);
        assert!(e.msg.contains(&sock.display().to_string()), "{e}");
    }

    #[test]
    fn a_silent_agent_times_out() {
        let dir = tempfile::tempdir().expect("tmp");
        let sock = dir.path().join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        let t = std::thread::spawn(move || {
            // Accept and hold the connection without answering.
            let c = listener.accept();
            std::thread::sleep(Duration::from_millis(1500));
            drop(c);
        });
        let e = call(&sock, &sample(), Duration::from_millis(300)).expect_err("timeout");
        assert_eq!(e.code, code::TRY_AGAIN_LATER, "{e}");
        assert!(e.msg.contains("no answer"), "{e}");
        let _ = t.join();
    }
}
