//! Renderers from the IR to the kernel tools' restore formats.
pub mod ipset;
pub mod iptables;

pub use ipset::ipset_restore;
pub use iptables::{iptables_restore, iptables_restore_with, jumps_restore, RenderOptions};
