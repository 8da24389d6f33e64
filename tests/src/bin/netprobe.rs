//! `netprobe`: the tiny server and prober the policy tests run inside pod
//! network namespaces (`ip netns exec POD netprobe ...`).
//!
//! ```text
//! netprobe serve --tcp 80,81 --udp 80,81
//!     answers every TCP connection and UDP datagram with "ok <token>"
//! netprobe probe (--tcp|--udp) ADDR:PORT [--timeout-ms N]
//!     exits 0 when the server answered, 1 when it did not
//! netprobe probe-many [--timeout-ms N] [--udp-src-base P] tcp:ADDR:PORT udp:ADDR:PORT ...
//!     probes all targets in parallel, prints "<target> ok|fail" per line, exits 0
//! ```
//!
//! netprobe serve-bench PORT
//!     TCP; a connection starting with 'E' is echoed byte for byte, one
//!     starting with 'S' is drained and answered with the byte count
//! netprobe bench (rr|crr|stream) ADDR:PORT [--count N] [--secs S]
//!     rr: N 1-byte round trips on one connection; crr: N connections each
//!     with one round trip; stream: S seconds of bulk data. Prints one line
//!     `<kind> <value> <unit>` (µs per round trip, median µs per
//!     connection, Gbit/s)
//! ```
//!
//! `--udp-src-base P` sends the k-th target's datagram from source port
//! P+k: a test that changes policy between rounds gives each round its own
//! ports, so no UDP probe rides on a conntrack entry of an earlier round.
//!
//! A reply proves the whole path (both directions, through conntrack); a
//! refused or silent port is a "fail". It never sends anything but to the
//! given addresses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netprobe: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let (cmd, rest) = args.split_first().ok_or_else(usage)?;
    match cmd.as_str() {
        "serve" => serve(rest),
        "probe" => {
            let mut timeout = Duration::from_millis(500);
            let mut target = None;
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--tcp" | "--udp" => {
                        let addr = it.next().ok_or_else(usage)?;
                        target = Some(format!("{}:{addr}", &a[2..]));
                    }
                    "--timeout-ms" => timeout = parse_timeout(it.next())?,
                    _ => return Err(usage()),
                }
            }
            let target = target.ok_or_else(usage)?;
            Ok(if probe(&target, timeout)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        "probe-many" => {
            let mut timeout = Duration::from_millis(500);
            let mut src_base: Option<u16> = None;
            let mut targets = Vec::new();
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                if a == "--timeout-ms" {
                    timeout = parse_timeout(it.next())?;
                } else if a == "--udp-src-base" {
                    let v = it.next().ok_or_else(usage)?;
                    src_base = Some(v.parse().map_err(|e| format!("--udp-src-base: {e}"))?);
                } else {
                    targets.push(a.clone());
                }
            }
            let handles: Vec<_> = targets
                .into_iter()
                .enumerate()
                .map(|(k, t)| {
                    let src = src_base.and_then(|b| b.checked_add(u16::try_from(k).ok()?));
                    std::thread::spawn(move || (probe_from_port(&t, timeout, src), t))
                })
                .collect();
            let mut out = String::new();
            for h in handles {
                let (res, t) = h.join().map_err(|_| "probe thread panicked".to_string())?;
                let verdict = match res {
                    Ok(true) => "ok".to_string(),
                    Ok(false) => "fail".to_string(),
                    Err(e) => format!("error {e}"),
                };
                out.push_str(&format!("{t} {verdict}\n"));
            }
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        "serve-bench" => {
            let port: u16 = rest
                .first()
                .ok_or_else(usage)?
                .parse()
                .map_err(|e| format!("port: {e}"))?;
            serve_bench(port)
        }
        "bench" => bench(rest),
        _ => Err(usage()),
    }
}

fn serve_bench(port: u16) -> Result<ExitCode, String> {
    let listener = TcpListener::bind(("::", port))
        .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
        .map_err(|e| format!("tcp {port}: {e}"))?;
    println!("ready");
    for conn in listener.incoming().flatten() {
        std::thread::spawn(move || bench_connection(conn));
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_connection(mut conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut mode = [0u8; 1];
    if conn.read_exact(&mut mode).is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        total += n as u64;
        if mode == *b"E" && conn.write_all(buf.get(..n).unwrap_or_default()).is_err() {
            return;
        }
    }
    if mode == *b"S" {
        let _ = conn.write_all(total.to_string().as_bytes());
    }
}

fn bench(args: &[String]) -> Result<ExitCode, String> {
    let (kind, rest) = args.split_first().ok_or_else(usage)?;
    let (addr, rest) = rest.split_first().ok_or_else(usage)?;
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr:?}: {e}"))?;
    let mut count: u64 = 10_000;
    let mut secs: f64 = 2.0;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(usage)?;
        match a.as_str() {
            "--count" => count = v.parse().map_err(|e| format!("--count: {e}"))?,
            "--secs" => secs = v.parse().map_err(|e| format!("--secs: {e}"))?,
            _ => return Err(usage()),
        }
    }
    let timeout = Duration::from_secs(5);
    let connect = || -> Result<TcpStream, String> {
        let s = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        Ok(s)
    };
    let round_trip = |s: &mut TcpStream| -> Result<(), String> {
        let mut b = [0u8; 1];
        s.write_all(b"x").map_err(|e| e.to_string())?;
        s.read_exact(&mut b).map_err(|e| e.to_string())
    };
    let start = std::time::Instant::now();
    match kind.as_str() {
        "rr" => {
            let mut s = connect()?;
            s.write_all(b"E").map_err(|e| e.to_string())?;
            round_trip(&mut s)?;
            let start = std::time::Instant::now();
            for _ in 0..count {
                round_trip(&mut s)?;
            }
            let us = start.elapsed().as_secs_f64() * 1e6 / count as f64;
            println!("rr {us:.2} us");
        }
        "crr" => {
            // The median, not the mean: one SYN retransmitted after 1 s
            // would otherwise dominate a whole run.
            let mut times = Vec::new();
            for _ in 0..count {
                let t = std::time::Instant::now();
                let mut s = connect()?;
                s.write_all(b"E").map_err(|e| e.to_string())?;
                round_trip(&mut s)?;
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
            times.sort_by(f64::total_cmp);
            let median = times.get(times.len() / 2).copied().unwrap_or_default();
            println!("crr {median:.1} us");
        }
        "stream" => {
            let mut s = connect()?;
            s.write_all(b"S").map_err(|e| e.to_string())?;
            let chunk = vec![0x5au8; 64 * 1024];
            let mut sent: u64 = 0;
            while start.elapsed().as_secs_f64() < secs {
                s.write_all(&chunk).map_err(|e| e.to_string())?;
                sent += chunk.len() as u64;
            }
            s.shutdown(std::net::Shutdown::Write)
                .map_err(|e| e.to_string())?;
            let mut reply = String::new();
            s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
            let elapsed = start.elapsed().as_secs_f64();
            if reply.trim() != sent.to_string() {
                return Err(format!("server counted {reply:?}, sent {sent}"));
            }
            println!("stream {:.2} Gbit/s", sent as f64 * 8.0 / elapsed / 1e9);
        }
        _ => return Err(usage()),
    }
    Ok(ExitCode::SUCCESS)
}

fn usage() -> String {
    "usage: netprobe serve [--tcp P,..] [--udp P,..] | probe (--tcp|--udp) ADDR:PORT \
     [--timeout-ms N] | probe-many [--timeout-ms N] (tcp|udp):ADDR:PORT .."
        .to_string()
}

fn parse_timeout(v: Option<&String>) -> Result<Duration, String> {
    let ms: u64 = v
        .ok_or_else(usage)?
        .parse()
        .map_err(|e| format!("--timeout-ms: {e}"))?;
    Ok(Duration::from_millis(ms))
}

fn parse_ports(v: Option<&String>) -> Result<Vec<u16>, String> {
    v.ok_or_else(usage)?
        .split(',')
        .map(|p| p.parse::<u16>().map_err(|e| format!("port {p:?}: {e}")))
        .collect()
}

fn serve(args: &[String]) -> Result<ExitCode, String> {
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tcp" => tcp = parse_ports(it.next())?,
            "--udp" => udp = parse_ports(it.next())?,
            _ => return Err(usage()),
        }
    }
    let mut threads = Vec::new();
    for port in tcp {
        // `[::]` is dual-stack in a fresh namespace (bindv6only=0); fall
        // back to IPv4 where IPv6 is off.
        let listener = TcpListener::bind(("::", port))
            .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
            .map_err(|e| format!("tcp {port}: {e}"))?;
        threads.push(std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || answer_tcp(conn));
            }
        }));
    }
    for port in udp {
        let sock = UdpSocket::bind(("::", port))
            .or_else(|_| UdpSocket::bind(("0.0.0.0", port)))
            .map_err(|e| format!("udp {port}: {e}"))?;
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = sock.recv_from(&mut buf) {
                let token = String::from_utf8_lossy(buf.get(..n).unwrap_or_default());
                let _ = sock.send_to(format!("ok {}", token.trim()).as_bytes(), peer);
            }
        }));
    }
    // Tell the parent we listen (it polls for this line or the ports).
    println!("ready");
    for t in threads {
        let _ = t.join();
    }
    Ok(ExitCode::SUCCESS)
}

fn answer_tcp(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 512];
    if let Ok(n) = conn.read(&mut buf) {
        let token = String::from_utf8_lossy(buf.get(..n).unwrap_or_default());
        let _ = conn.write_all(format!("ok {}", token.trim()).as_bytes());
    }
}

/// `target` is `tcp:ADDR:PORT` or `udp:ADDR:PORT` (IPv6 as `[ADDR]:PORT`).
fn probe(target: &str, timeout: Duration) -> Result<bool, String> {
    probe_from_port(target, timeout, None)
}

fn probe_from_port(target: &str, timeout: Duration, udp_src: Option<u16>) -> Result<bool, String> {
    let (proto, addr) = target.split_once(':').ok_or_else(usage)?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("target {target:?}: {e}"))?;
    let token = format!("{}-{}", std::process::id(), addr.port());
    let expected = format!("ok {token}");
    let mut buf = [0u8; 512];
    match proto {
        "tcp" => {
            let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
                return Ok(false);
            };
            let _ = s.set_read_timeout(Some(timeout));
            if s.write_all(token.as_bytes()).is_err() {
                return Ok(false);
            }
            let n = s.read(&mut buf).unwrap_or(0);
            Ok(buf.get(..n) == Some(expected.as_bytes()))
        }
        "udp" => {
            let any: std::net::IpAddr = if addr.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            };
            // A taken source port falls back to an ephemeral one.
            let s = udp_src
                .and_then(|p| UdpSocket::bind((any, p)).ok())
                .map_or_else(|| UdpSocket::bind((any, 0)), Ok)
                .map_err(|e| e.to_string())?;
            s.connect(addr).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            if s.send(token.as_bytes()).is_err() {
                return Ok(false);
            }
            let n = s.recv(&mut buf).unwrap_or(0);
            Ok(buf.get(..n) == Some(expected.as_bytes()))
        }
        _ => Err(format!("target {target:?}: protocol must be tcp or udp")),
    }
}
