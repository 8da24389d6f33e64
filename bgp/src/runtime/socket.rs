//! Socket options a BGP session needs that std and tokio do not expose:
//! TCP MD5 signatures (RFC 2385) and the Generalized TTL Security Mechanism
//! (RFC 5082), plus binding the local side to a configured source address.
//!
//! Linux only. Everything here works on a raw socket descriptor before or
//! after `connect`/`listen`, so the listener and the active connector share
//! it.

// setsockopt(TCP_MD5SIG) and setsockopt(IP_MINTTL/IPV6_MINHOPCOUNT) have no
// safe wrapper in std, socket2 or tokio; the calls below pass a pointer to a
// properly sized, initialised repr(C) value and check the return code.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

/// The longest key Linux accepts for TCP-MD5 (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` from `<linux/tcp.h>`; libc does not define it.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MD5_MAX_KEY_LEN],
}

/// Errors setting a session's socket options.
#[derive(Debug, thiserror::Error)]
pub enum SocketOptError {
    #[error("TCP-MD5 password for {peer} is {len} bytes; Linux accepts at most {MD5_MAX_KEY_LEN}")]
    KeyTooLong { peer: IpAddr, len: usize },
    #[error("setsockopt {option} for {peer}: {source}")]
    Setsockopt {
        option: &'static str,
        peer: IpAddr,
        #[source]
        source: io::Error,
    },
}

fn sockaddr_storage(addr: IpAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        IpAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in is smaller than sockaddr_storage and both
            // are repr(C) POD; we copy its bytes into the start of storage.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (&sin as *const libc::sockaddr_in).cast::<u8>(),
                    (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
                    size_of::<libc::sockaddr_in>(),
                );
            }
        }
        IpAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, sockaddr_in6 fits in sockaddr_storage.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (&sin6 as *const libc::sockaddr_in6).cast::<u8>(),
                    (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
                    size_of::<libc::sockaddr_in6>(),
                );
            }
        }
    }
    storage
}

fn setsockopt<T>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
    option: &'static str,
    peer: IpAddr,
) -> Result<(), SocketOptError> {
    let len = libc::socklen_t::try_from(size_of::<T>()).unwrap_or(libc::socklen_t::MAX);
    // SAFETY: `value` points to an initialised T of exactly `len` bytes that
    // outlives the call; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SocketOptError::Setsockopt {
            option,
            peer,
            source: io::Error::last_os_error(),
        })
    }
}

/// Sets (or, with an empty key, removes) the TCP-MD5 key used for segments
/// exchanged with `peer`. On a listening socket this lets the peer's
/// connection in; on a connecting socket it signs our SYN.
pub fn set_md5_key(fd: &impl AsRawFd, peer: IpAddr, key: &[u8]) -> Result<(), SocketOptError> {
    if key.len() > MD5_MAX_KEY_LEN {
        return Err(SocketOptError::KeyTooLong {
            peer,
            len: key.len(),
        });
    }
    let mut sig = TcpMd5Sig {
        addr: sockaddr_storage(peer),
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; MD5_MAX_KEY_LEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    setsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_MD5SIG,
        &sig,
        "TCP_MD5SIG",
        peer,
    )
}

/// GTSM (RFC 5082 §3): send with TTL (hop limit) 255 and drop segments that
/// arrive with less than `255 - (hops - 1)`. `hops` is 1 for a directly
/// connected peer.
pub fn set_gtsm(fd: &impl AsRawFd, peer: IpAddr, hops: u8) -> Result<(), SocketOptError> {
    let min: libc::c_int = 256 - libc::c_int::from(hops.max(1));
    let max: libc::c_int = 255;
    match peer {
        IpAddr::V4(_) => {
            setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &max, "IP_TTL", peer)?;
            setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MINTTL,
                &min,
                "IP_MINTTL",
                peer,
            )
        }
        IpAddr::V6(_) => {
            setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_UNICAST_HOPS,
                &max,
                "IPV6_UNICAST_HOPS",
                peer,
            )?;
            setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MINHOPCOUNT,
                &min,
                "IPV6_MINHOPCOUNT",
                peer,
            )
        }
    }
}

/// Creates a TCP socket for an active connection to `peer`, with the
/// session's options applied before the SYN goes out: source binding,
/// TCP-MD5 and GTSM.
pub fn connecting_socket(
    peer: SocketAddr,
    source: Option<IpAddr>,
    md5_key: Option<&[u8]>,
    gtsm_hops: Option<u8>,
) -> Result<tokio::net::TcpSocket, SocketOptError> {
    let wrap = |option: &'static str| {
        move |source: io::Error| SocketOptError::Setsockopt {
            option,
            peer: peer.ip(),
            source,
        }
    };
    let socket = if peer.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(wrap("socket"))?;
    socket.set_nodelay(true).map_err(wrap("TCP_NODELAY"))?;
    if let Some(src) = source {
        socket
            .bind(SocketAddr::new(src, 0))
            .map_err(wrap("bind source address"))?;
    }
    if let Some(key) = md5_key {
        set_md5_key(&socket, peer.ip(), key)?;
    }
    if let Some(hops) = gtsm_hops {
        set_gtsm(&socket, peer.ip(), hops)?;
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn listener_with_key(key: Option<&[u8]>) -> (tokio::net::TcpListener, SocketAddr) {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        if let Some(key) = key {
            set_md5_key(&sock, "127.0.0.1".parse().expect("ip"), key).expect("md5 on listener");
        }
        let listener = sock.listen(16).expect("listen");
        let addr = listener.local_addr().expect("local addr");
        (listener, addr)
    }

    async fn try_connect(addr: SocketAddr, key: Option<&[u8]>) -> bool {
        let sock = connecting_socket(addr, None, key, None).expect("socket");
        matches!(
            tokio::time::timeout(Duration::from_millis(700), sock.connect(addr)).await,
            Ok(Ok(_))
        )
    }

    #[tokio::test]
    async fn md5_same_key_connects_wrong_or_missing_key_does_not() {
        let (listener, addr) = listener_with_key(Some(b"s3cret")).await;
        let accept = tokio::spawn(async move {
            let _ = listener.accept().await;
        });
        assert!(
            try_connect(addr, Some(b"s3cret")).await,
            "same key must connect"
        );
        accept.abort();

        let (_listener, addr) = listener_with_key(Some(b"s3cret")).await;
        assert!(
            !try_connect(addr, Some(b"wrong")).await,
            "wrong key must not connect"
        );
        assert!(!try_connect(addr, None).await, "no key must not connect");
    }

    #[test]
    fn md5_key_too_long_is_an_error() {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        let err = set_md5_key(&sock, "192.0.2.1".parse().expect("ip"), &[b'x'; 81])
            .expect_err("81-byte key");
        assert!(err.to_string().contains("at most 80"), "{err}");
    }

    #[test]
    fn gtsm_sets_min_ttl() {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        set_gtsm(&sock, "192.0.2.1".parse().expect("ip"), 1).expect("gtsm v4");
        let sock6 = tokio::net::TcpSocket::new_v6().expect("socket");
        set_gtsm(&sock6, "2001:db8::1".parse().expect("ip"), 2).expect("gtsm v6");
    }
}
