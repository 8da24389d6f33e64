//! The real `tortie-cni` binary, run the way a container runtime runs it,
//! against a CniServer served in this process on a Unix socket.
//!
//! ```text
//!  tortie-cni (child process)      this test process
//!   env CNI_*, stdin conflist ──► RUN_DIR/agent.sock ──► CniServer ──► dataplane
//!   stdout result / error JSON                                          │
//!                                   pod netns <p>-pp ── veth ── "host" netns <p>-cph
//! ```
//!
//! Set `TORTIE_CNI_BIN` to a private copy of the binary when other builds
//! share the target dir (see the brief).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tortie::cni::dataplane::Dataplane;
use tortie::cni::netns::NetnsHandle;
use tortie::cni::{is_cni_request, CniServer};
use tortie_integration::cni_util::{netns_path, ping, result_ips, run_plugin, TestCtx};
use tortie_integration::{require_netns, Netns};

const TIMEOUT: Duration = Duration::from_secs(30);

fn conf(socket: &str, extra: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"tortie-cni","agentSocket":"{socket}","mtu":1450{extra}}}"#
    )
}

#[test]
fn plugin_binary_add_check_del_against_an_in_process_agent() -> Result<()> {
    if !require_netns("cni plugin binary", &["ip", "ping"]) {
        return Ok(());
    }
    let host = Netns::new("cph")?;
    host.run("ip", &["addr", "add", "192.0.2.1/32", "dev", "lo"])?;
    host.run("ip", &["addr", "add", "2001:db8::1/128", "dev", "lo"])?;
    let ctx = TestCtx::new(&host, &["10.244.7.0/24", "fd00:7::/64"])?;
    let state = tempfile::tempdir()?;
    let run = tempfile::tempdir()?;
    let sock = run.path().join("agent.sock");
    let sock_s = sock.display().to_string();
    let server = Arc::new(CniServer::with_dataplane(
        state.path(),
        ctx.clone(),
        Dataplane::new(NetnsHandle::open(std::path::Path::new(&netns_path(&host)))?),
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = {
        let _guard = rt.enter();
        let server = Arc::clone(&server);
        tortie::status_client::serve_with(&sock, move |line| {
            let server = Arc::clone(&server);
            async move {
                if is_cni_request(&line) {
                    server.handle_line(&line).await
                } else {
                    r#"{"error":"not a CNI request"}"#.to_string()
                }
            }
        })?
    };

    let pod = Netns::new("pp")?;
    let pod_path = netns_path(&pod);
    ctx.add_pod("web", "front-0", None);
    let env = |cmd: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", cmd.to_string()),
            ("CNI_CONTAINERID", "0123abcd".to_string()),
            ("CNI_NETNS", pod_path.clone()),
            ("CNI_IFNAME", "eth0".to_string()),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=front-0".to_string(),
            ),
            ("CNI_PATH", "/opt/cni/bin".to_string()),
        ]
    };
    let call = |cmd: &'static str, stdin: &str| {
        let vars = env(cmd);
        let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_plugin(&refs, stdin, TIMEOUT)
    };

    // VERSION needs no agent.
    let v = call("VERSION", "")?;
    assert_eq!(v.exit, Some(0), "{v:?}");
    assert_eq!(v.json()?["supportedVersions"][3], "1.0.0");

    // ADD.
    let t = Instant::now();
    let add = call("ADD", &conf(&sock_s, ""))?;
    let add_ms = t.elapsed().as_secs_f64() * 1000.0;
    eprintln!("ADD latency through the tortie-cni binary: {add_ms:.1} ms");
    assert_eq!(add.exit, Some(0), "{add:?}");
    let result = add.json()?;
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(
        result_ips(&result),
        vec![
            "10.244.7.1".parse::<std::net::IpAddr>()?,
            "fd00:7::1".parse()?
        ]
    );
    assert_eq!(result["interfaces"][1]["sandbox"], pod_path.as_str());
    assert_eq!(result["ips"][0]["interface"], 1);
    assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0");
    let mtu = pod.run("ip", &["link", "show", "eth0"])?;
    assert!(mtu.contains("mtu 1450"), "{mtu}");
    ping(&pod, "192.0.2.1".parse()?)?;
    ping(&pod, "2001:db8::1".parse()?)?;

    // A 0.4.0 runtime gets a 0.4.0 result.
    let old = call("ADD", &conf(&sock_s, "").replace("\"1.0.0\"", "\"0.4.0\""))?;
    assert_eq!(old.exit, Some(0), "{old:?}");
    assert_eq!(old.json()?["ips"][0]["version"], "4");

    // CHECK with prevResult: success prints nothing.
    let check = call(
        "CHECK",
        &conf(&sock_s, &format!(r#","prevResult":{result}"#)),
    )?;
    assert_eq!(check.exit, Some(0), "{check:?}");
    assert_eq!(check.stdout.trim(), "");

    // DEL twice: idempotent, silent.
    for _ in 0..2 {
        let del = call("DEL", &conf(&sock_s, ""))?;
        assert_eq!(del.exit, Some(0), "{del:?}");
        assert_eq!(del.stdout.trim(), "");
    }
    assert!(server.assigned().is_empty());

    // Errors are CNI error JSON with a non-zero exit.
    let bad = call("ADD", r#"{"cniVersion":"9.9.9","type":"tortie-cni"}"#)?;
    assert_eq!(bad.exit, Some(1));
    assert_eq!(bad.json()?["code"], 1);
    let missing = {
        let mut vars = env("ADD");
        vars.retain(|(k, _)| *k != "CNI_ARGS");
        let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_plugin(&refs, &conf(&sock_s, ""), TIMEOUT)?
    };
    assert_eq!(missing.exit, Some(1));
    assert_eq!(missing.json()?["code"], 4);

    // The agent is down: code 11 naming the socket.
    served.abort();
    let _ = rt.block_on(served);
    let _ = std::fs::remove_file(&sock);
    let down = call("ADD", &conf(&sock_s, ""))?;
    assert_eq!(down.exit, Some(1), "{down:?}");
    let e = down.json()?;
    assert_eq!(e["code"], 11);
    let msg = e["msg"].as_str().unwrap_or_default();
    if !msg.contains(&sock_s) {
        bail!("the error does not name the socket: {e}");
    }
    Ok(())
}
