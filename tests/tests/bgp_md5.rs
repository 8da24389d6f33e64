//! TCP MD5 signatures (RFC 2385) between tortie and BIRD / GoBGP (issue 3
//! §3.3): the same password establishes; a wrong one never does.
//!
//! ```text
//!   ns mdX-t (ToR)                        ns mdX-n (node)
//!   BIRD | gobgpd  AS 65001               tortie bgp  AS 64512
//!   tor0 192.0.2.1  2001:db8::1  ─veth─   node0 192.0.2.11  2001:db8::11
//!   password "s3cret" (or "wrong")        password {value: s3cret}
//! ```

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use tortie_integration::bird::Bird;
use tortie_integration::gobgp::Gobgp;
use tortie_integration::tortie_bgp::{
    bird_tor, gobgp_tor, require, tor_and_node, tortie_node, Tortie, NODE_V4, TOR_V4, TOR_V6,
};

const T: Duration = Duration::from_secs(30);
/// How long a wrong password is given to (not) establish: several connect
/// retries of both sides (1 s each).
const NEVER: Duration = Duration::from_secs(8);
const TOR_AS: u32 = 65001;
const NODE_AS: u32 = 64512;
const PASSWORD: &str = "    password: {value: s3cret}";

#[test]
fn md5_bird_same_password_establishes() -> Result<()> {
    if !require("md5_bird_same_password") {
        return Ok(());
    }
    let (tor, node) = tor_and_node("mdbs")?;
    let bird = Bird::start(
        &tor,
        &bird_tor(TOR_AS, NODE_AS, 6, r#"password "s3cret";"#, "")?,
    )?;
    let tortie = Tortie::start(&node, &tortie_node(NODE_AS, TOR_AS, 6, PASSWORD, "")?)?;
    bird.wait_established("tortie4", T)?;
    bird.wait_established("tortie6", T)?;
    tortie.wait_established(TOR_V4, T)?;
    tortie.wait_established(TOR_V6, T)?;
    tortie.wait_route("10.245.1.0/24", T, |_| true)?;
    Ok(())
}

/// Polls both ends for `NEVER` and fails if either reports Established.
fn never_established(tortie: &Tortie, other: impl Fn() -> bool, what: &str) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < NEVER {
        let t = tortie
            .peer(TOR_V4)
            .map(|p| p.established())
            .unwrap_or(false);
        ensure!(
            !t,
            "{what}: tortie established with a wrong password\n{}",
            tortie.describe()
        );
        ensure!(
            !other(),
            "{what}: the peer established with a wrong password"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

#[test]
fn md5_bird_wrong_password_never_establishes() -> Result<()> {
    if !require("md5_bird_wrong_password") {
        return Ok(());
    }
    let (tor, node) = tor_and_node("mdbw")?;
    let bird = Bird::start(
        &tor,
        &bird_tor(TOR_AS, NODE_AS, 6, r#"password "wrong";"#, "")?,
    )?;
    let tortie = Tortie::start(&node, &tortie_node(NODE_AS, TOR_AS, 6, PASSWORD, "")?)?;
    never_established(&tortie, || bird.established("tortie4"), "BIRD")?;
    // And a peer without any password does not get in either.
    bird.configure(&bird_tor(TOR_AS, NODE_AS, 6, "", "")?)?;
    never_established(
        &tortie,
        || bird.established("tortie4"),
        "BIRD without password",
    )?;
    Ok(())
}

#[test]
fn md5_gobgp_same_password_establishes() -> Result<()> {
    if !require("md5_gobgp_same_password") {
        return Ok(());
    }
    let (tor, node) = tor_and_node("mdgs")?;
    let gobgp = Gobgp::start(
        &tor,
        &gobgp_tor(TOR_AS, NODE_AS, 6, "    auth-password = \"s3cret\"", "", "")?,
    )?;
    let tortie = Tortie::start(&node, &tortie_node(NODE_AS, TOR_AS, 6, PASSWORD, "")?)?;
    gobgp.wait_established(NODE_V4, T)?;
    tortie.wait_established(TOR_V4, T)?;
    tortie.wait_established(TOR_V6, T)?;
    Ok(())
}

#[test]
fn md5_gobgp_wrong_password_never_establishes() -> Result<()> {
    if !require("md5_gobgp_wrong_password") {
        return Ok(());
    }
    let (tor, node) = tor_and_node("mdgw")?;
    let gobgp = Gobgp::start(
        &tor,
        &gobgp_tor(TOR_AS, NODE_AS, 6, "    auth-password = \"wrong\"", "", "")?,
    )?;
    let tortie = Tortie::start(&node, &tortie_node(NODE_AS, TOR_AS, 6, PASSWORD, "")?)?;
    never_established(&tortie, || gobgp.established(NODE_V4), "GoBGP")?;
    Ok(())
}
