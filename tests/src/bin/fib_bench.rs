//! `fib_bench`: installing and withdrawing N routes in a fresh network
//! namespace, tortie's FIB writer side by side with BIRD's kernel protocol,
//! `ip -batch`, and a bare batched netlink writer (the limit).
//!
//! A bench, not a test: run it by hand as root, never from the suite:
//! `cargo run --release -p tortie-integration --bin fib_bench [-- --quick]`
//! (`--ipv6`: /124s of fd00::/16 via 2001:db8::2 instead;
//! `--quick`: 10k and 100k routes instead of 100k and 1M; `--sizes
//! 1000000` any list; `--only bare,tortie` a subset of the writers
//! (`bare`, `spread`, `tortie`, `bird`, `ip`), for iterating on one of
//! them; the published table runs them all).
//!
//! The bare writer runs twice: in key order (the limit the issue names)
//! and in the bit-reversed order tortie sends large plans in, which the
//! kernel's IPv4 trie handles much faster; the second isolates that
//! choice from the rest of tortie's work.
//!
//! ```text
//!   ns "fib" (fresh for every measurement)      ns "gw"
//!   fb0 192.0.2.1/24  ───────── veth ─────────  gw0 192.0.2.2/24
//!   N routes 10.0.0.0/8 split in /28s, via 192.0.2.2
//!   (--ipv6: 2001:db8::1/64 ── 2001:db8::2/64, /124s of fd00::/16)
//! ```
//!
//! No packet is sent anywhere: only routes are written. Timing starts when
//! the writer starts and stops when the kernel holds every route (for BIRD:
//! from `birdc enable` of a static protocol holding the routes until a dump
//! of BIRD's kernel routes counts N).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use tortie::fib::netlink::{RouteSocket, BATCH_MESSAGES};
use tortie::fib::route::MAIN_TABLE;
use tortie::fib::{KernelRoute, NextHop, Reconciler, RouteKey, RTPROT_TORTIE};
use tortie_integration::bgp_util::in_netns;
use tortie_integration::{require_netns, run_with_timeout, wait_for, Netns};

const GW4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// `--ipv6`: the routes are /124s of fd00::/16 via 2001:db8::2.
static IPV6: AtomicBool = AtomicBool::new(false);

fn ipv6() -> bool {
    IPV6.load(Ordering::Relaxed)
}

fn gw() -> IpAddr {
    if ipv6() {
        IpAddr::V6(GW6)
    } else {
        IpAddr::V4(GW4)
    }
}
const RTPROT_BARE: u8 = 53;
const RTPROT_IP: u8 = 54;
const RTPROT_BIRD: u8 = 12;

fn prefix(i: u32) -> IpNet {
    if ipv6() {
        let addr = (0xfd00u128 << 112) | (u128::from(i) << 4);
        return IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), 124).expect("/124 is valid"));
    }
    // 10.0.0.0/8 holds 2^20 /28s.
    let addr = 0x0a00_0000u32 | (i << 4);
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), 28).expect("/28 is valid"))
}

fn fresh_pair() -> Result<(Netns, Netns)> {
    let fib = Netns::new("fib")?;
    let gw = Netns::new("gw")?;
    fib.run(
        "ip",
        &["link", "add", "fb0", "type", "veth", "peer", "name", "gw0"],
    )?;
    fib.run("ip", &["link", "set", "gw0", "netns", gw.name()])?;
    fib.run("ip", &["addr", "add", "192.0.2.1/24", "dev", "fb0"])?;
    fib.run(
        "ip",
        &["addr", "add", "2001:db8::1/64", "dev", "fb0", "nodad"],
    )?;
    fib.run("ip", &["link", "set", "fb0", "up"])?;
    gw.run("ip", &["addr", "add", "192.0.2.2/24", "dev", "gw0"])?;
    gw.run(
        "ip",
        &["addr", "add", "2001:db8::2/64", "dev", "gw0", "nodad"],
    )?;
    gw.run("ip", &["link", "set", "gw0", "up"])?;
    Ok((fib, gw))
}

/// Counts routes of `protocol` with one netlink dump in `ns`.
fn count(ns: &Netns, protocol: u8) -> Result<usize> {
    in_netns(ns.name(), move || {
        let mut s = RouteSocket::open()?;
        Ok(s.dump(protocol)?.len())
    })
}

#[derive(Debug, Default, Clone, Copy)]
struct Timing {
    add: Duration,
    del: Duration,
}

fn tortie(n: u32) -> Result<Timing> {
    let (ns, _gw) = fresh_pair()?;
    let timing = in_netns(ns.name(), move || -> Result<Timing> {
        let mut sock = RouteSocket::open()?;
        let mut r = Reconciler::new();
        r.mark_synced();
        let via_gw = KernelRoute::unicast(prefix(0), vec![NextHop::via(gw())]).target;
        let routes: Vec<KernelRoute> = (0..n)
            .map(|i| KernelRoute {
                key: RouteKey {
                    table: MAIN_TABLE,
                    dst: prefix(i),
                },
                // As the FIB's composer hands them over: the routes
                // through one peer share one next-hop set.
                target: via_gw.clone(),
            })
            .collect();
        let t0 = Instant::now();
        r.set_all(routes);
        let set = t0.elapsed();
        // As the FIB service does it: planned batch by batch, each batch
        // encoded and its outcomes recorded while the kernel works on the
        // one before.
        let mut failed = 0usize;
        let now = Instant::now();
        let mut apply = |r: &mut Reconciler, sock: &mut RouteSocket| {
            r.start_plan(now);
            sock.apply_planned(
                RTPROT_TORTIE,
                r,
                |r| r.next_ops(BATCH_MESSAGES),
                |r, o| {
                    failed += usize::from(o.result.is_err());
                    r.record_one(o, now);
                },
            )
        };
        apply(&mut r, &mut sock)?;
        let add = t0.elapsed();
        eprintln!(
            "fib_bench: tortie {n}: set_all {:.3} s, plan+netlink+record {:.3} s",
            set.as_secs_f64(),
            (add - set).as_secs_f64(),
        );
        ensure!(
            r.installed() == n as usize,
            "tortie recorded {} routes",
            r.installed()
        );
        let t1 = Instant::now();
        r.set_all(Vec::new());
        let set = t1.elapsed();
        apply(&mut r, &mut sock)?;
        eprintln!(
            "fib_bench: tortie {n} withdraw: set_all {:.3} s, plan+netlink+record {:.3} s",
            set.as_secs_f64(),
            (t1.elapsed() - set).as_secs_f64(),
        );
        ensure!(failed == 0, "{failed} routes refused");
        Ok(Timing {
            add,
            del: t1.elapsed(),
        })
    })?;
    ensure!(count(&ns, RTPROT_TORTIE)? == 0, "tortie left routes behind");
    Ok(timing)
}

/// Route indices `0..n` in bit-reversed order (index `rev(0)`, `rev(1)`,
/// ... over enough bits for `n`), the order tortie sends a large plan in
/// (`fib::reconcile::PlanOrder`); written out here again so that the bench
/// checks the kernel's side of that choice on its own.
fn bit_reversed(n: u32) -> Vec<u32> {
    let bits = n.max(2).next_power_of_two().trailing_zeros();
    (0..1u32 << bits)
        .map(|i| i.reverse_bits() >> (32 - bits))
        .filter(|&i| i < n)
        .collect()
}

/// The limit: hand-encoded RTM_NEWROUTE/RTM_DELROUTE, 1024 per sendmsg,
/// one ack per batch, nothing else; routes in the given order.
fn bare_batch(sock: &Socket, order: &[u32], msg_type: u16) -> Result<()> {
    const BATCH: usize = 1024;
    let v6 = ipv6();
    let mut buf: Vec<u8> = Vec::with_capacity(BATCH * 68);
    let mut rbuf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut seq = 0u32;
    for chunk in order.chunks(BATCH) {
        buf.clear();
        for (k, &i) in chunk.iter().enumerate() {
            seq += 1;
            let last = k + 1 == chunk.len();
            let flags: u16 =
                1 | if msg_type == 24 { 0x400 | 0x100 } else { 0 } | if last { 4 } else { 0 };
            // nlmsghdr, rtmsg (family, dst_len, src_len, tos, table,
            // protocol, scope, type, flags), RTA_DST, RTA_GATEWAY.
            let (family, addr_len, dst_len) = if v6 { (10u8, 16u16, 124u8) } else { (2, 4, 28) };
            let len = 16 + 12 + 2 * u32::from(4 + addr_len);
            buf.extend_from_slice(&len.to_ne_bytes());
            buf.extend_from_slice(&msg_type.to_ne_bytes());
            buf.extend_from_slice(&flags.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&[family, dst_len, 0, 0, 254, RTPROT_BARE, 0, 1]);
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&(4 + addr_len).to_ne_bytes());
            buf.extend_from_slice(&1u16.to_ne_bytes());
            match prefix(i) {
                IpNet::V4(p) => buf.extend_from_slice(&p.network().octets()),
                IpNet::V6(p) => buf.extend_from_slice(&p.network().octets()),
            }
            buf.extend_from_slice(&(4 + addr_len).to_ne_bytes());
            buf.extend_from_slice(&5u16.to_ne_bytes());
            match gw() {
                IpAddr::V4(g) => buf.extend_from_slice(&g.octets()),
                IpAddr::V6(g) => buf.extend_from_slice(&g.octets()),
            }
        }
        sock.send(&buf, 0).context("bare send")?;
        'acks: loop {
            rbuf.clear();
            sock.recv(&mut rbuf, 0).context("bare recv")?;
            let mut off = 0;
            while off + 16 <= rbuf.len() {
                let len = u32::from_ne_bytes(rbuf[off..off + 4].try_into()?) as usize;
                let ty = u16::from_ne_bytes(rbuf[off + 4..off + 6].try_into()?);
                let s = u32::from_ne_bytes(rbuf[off + 8..off + 12].try_into()?);
                if ty == 2 {
                    let code = i32::from_ne_bytes(rbuf[off + 16..off + 20].try_into()?);
                    if code != 0 {
                        bail!("bare writer: kernel error {code} on seq {s}");
                    }
                    if s == seq {
                        break 'acks;
                    }
                }
                if len < 16 {
                    break;
                }
                off += (len + 3) & !3;
            }
        }
    }
    Ok(())
}

fn bare(n: u32, spread: bool) -> Result<Timing> {
    let order: Vec<u32> = if spread {
        bit_reversed(n)
    } else {
        (0..n).collect()
    };
    let (ns, _gw) = fresh_pair()?;
    let timing = in_netns(ns.name(), move || -> Result<Timing> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        sock.set_cap_ack(true)?;
        sock.set_rx_buf_sz(1usize << 20)?;
        let t0 = Instant::now();
        bare_batch(&sock, &order, 24)?;
        let add = t0.elapsed();
        let t1 = Instant::now();
        bare_batch(&sock, &order, 25)?;
        Ok(Timing {
            add,
            del: t1.elapsed(),
        })
    })?;
    ensure!(count(&ns, RTPROT_BARE)? == 0);
    Ok(timing)
}

fn ip_batch(n: u32) -> Result<Timing> {
    let (ns, _gw) = fresh_pair()?;
    let dir = tempfile::tempdir()?;
    let add_file = dir.path().join("add");
    let del_file = dir.path().join("del");
    let mut add = String::with_capacity(n as usize * 50);
    let mut del = String::with_capacity(n as usize * 40);
    for i in 0..n {
        let p = prefix(i);
        let _ = writeln!(add, "route add {p} via {} proto {RTPROT_IP}", gw());
        let _ = writeln!(del, "route del {p} proto {RTPROT_IP}");
    }
    std::fs::write(&add_file, add)?;
    std::fs::write(&del_file, del)?;
    let limit = Duration::from_secs(600);
    let t0 = Instant::now();
    run_with_timeout(
        ns.command("ip")
            .args(["-batch", &add_file.to_string_lossy()]),
        limit,
    )?;
    let add = t0.elapsed();
    ensure!(count(&ns, RTPROT_IP)? == n as usize);
    let t1 = Instant::now();
    run_with_timeout(
        ns.command("ip")
            .args(["-batch", &del_file.to_string_lossy()]),
        limit,
    )?;
    Ok(Timing {
        add,
        del: t1.elapsed(),
    })
}

fn bird(n: u32) -> Result<Timing> {
    let (ns, _gw) = fresh_pair()?;
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("bird.conf");
    let ctl = dir.path().join("bird.ctl");
    let mut c = String::with_capacity(n as usize * 40);
    c.push_str("router id 192.0.2.1;\nprotocol device {}\n");
    let channel = if ipv6() { "ipv6" } else { "ipv4" };
    let _ = writeln!(
        c,
        "protocol kernel kern {{ {channel} {{ export all; }}; merge paths off; }}"
    );
    let _ = writeln!(
        c,
        "protocol static bench {{ disabled; {channel}; check link off;"
    );
    for i in 0..n {
        let _ = writeln!(c, "  route {} via {};", prefix(i), gw());
    }
    c.push_str("}\n");
    std::fs::write(&conf, c)?;
    let conf_s = conf.to_string_lossy().to_string();
    let ctl_s = ctl.to_string_lossy().to_string();
    let mut daemon = ns.spawn("bird", &["-f", "-c", &conf_s, "-s", &ctl_s])?;
    let birdc = |args: &[&str]| -> Result<String> {
        let mut all = vec!["-s", ctl_s.as_str()];
        all.extend_from_slice(args);
        let out = run_with_timeout(ns.command("birdc").args(&all), Duration::from_secs(30))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    wait_for("BIRD's control socket", Duration::from_secs(60), || {
        birdc(&["show", "status"])
            .ok()
            .filter(|s| s.contains("Daemon is up"))
    })?;
    let target = n as usize;
    let t0 = Instant::now();
    birdc(&["enable", "bench"])?;
    wait_for(
        "BIRD to install every route",
        Duration::from_secs(600),
        || count(&ns, RTPROT_BIRD).ok().filter(|c| *c >= target),
    )?;
    let add = t0.elapsed();
    let t1 = Instant::now();
    birdc(&["disable", "bench"])?;
    wait_for(
        "BIRD to remove every route",
        Duration::from_secs(600),
        || count(&ns, RTPROT_BIRD).ok().filter(|c| *c == 0),
    )?;
    let del = t1.elapsed();
    daemon.stop();
    Ok(Timing { add, del })
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn main() -> Result<()> {
    if !require_netns("fib_bench", &["ip", "bird", "birdc"]) {
        bail!("fib_bench needs root, ip and BIRD");
    }
    let args: Vec<String> = std::env::args().collect();
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let quick = args.iter().any(|a| a == "--quick");
    IPV6.store(args.iter().any(|a| a == "--ipv6"), Ordering::Relaxed);
    let sizes: Vec<u32> = match value_of("--sizes") {
        Some(list) => list
            .split(',')
            .map(|n| n.parse().context("--sizes takes a list of route counts"))
            .collect::<Result<_>>()?,
        None if quick => vec![10_000, 100_000],
        None => vec![100_000, 1_000_000],
    };
    let only = value_of("--only").unwrap_or_else(|| "bare,spread,tortie,bird,ip".into());
    let runs = |name: &str| only.split(',').any(|w| w == name);
    ensure!(
        runs("bare"),
        "--only must include bare: every ratio is against it"
    );
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| routes | writer | install | withdraw | install vs bare | withdraw vs bare |"
    );
    let _ = writeln!(table, "|---:|---|---:|---:|---:|---:|");
    let mut same_order = String::new();
    for &n in &sizes {
        eprintln!("fib_bench: {n} routes: bare writer");
        let b = bare(n, false)?;
        let mut rows = vec![("bare batched netlink, key order (limit)", b)];
        let mut spread = None;
        if runs("spread") {
            eprintln!("fib_bench: {n} routes: bare writer, bit-reversed order");
            let t = bare(n, true)?;
            spread = Some(t);
            rows.push(("bare batched netlink, bit-reversed order", t));
        }
        if runs("tortie") {
            eprintln!("fib_bench: {n} routes: tortie");
            let t = tortie(n)?;
            // tortie spreads IPv4 only (fib::reconcile::Spread).
            let (order, same) = if ipv6() {
                ("key", Some(b))
            } else {
                ("bit-reversed", spread)
            };
            if let Some(same) = same {
                let _ = writeln!(
                    same_order,
                    "{n} routes: tortie vs the bare writer in tortie's ({order}) order: \
                     install {:.2}x, withdraw {:.2}x",
                    t.add.as_secs_f64() / same.add.as_secs_f64(),
                    t.del.as_secs_f64() / same.del.as_secs_f64()
                );
            }
            rows.push(("**tortie**", t));
        }
        if runs("bird") {
            eprintln!("fib_bench: {n} routes: BIRD kernel protocol");
            rows.push(("BIRD 2 kernel protocol", bird(n)?));
        }
        if runs("ip") {
            eprintln!("fib_bench: {n} routes: ip -batch");
            rows.push(("`ip -batch`", ip_batch(n)?));
        }
        for (name, tm) in rows {
            let _ = writeln!(
                table,
                "| {n} | {name} | {} | {} | {:.2}x | {:.2}x |",
                secs(tm.add),
                secs(tm.del),
                tm.add.as_secs_f64() / b.add.as_secs_f64(),
                tm.del.as_secs_f64() / b.del.as_secs_f64()
            );
        }
    }
    println!("{table}");
    print!("{same_order}");
    Ok(())
}
