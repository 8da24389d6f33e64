//! The thin applier: runs `ipset restore` and `iptables-restore --noflush` (placeholder).
