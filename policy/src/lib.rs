//! tortie's NetworkPolicy engine.
//!
//! Planned layout (issue "NetworkPolicy to iptables"): `model` (the snapshot
//! the compiler reads), `selector` (label selectors), `compile` (model to a
//! ruleset IR, pure), `naming` (stable chain and set names), `render`
//! (iptables-restore and ipset restore text), `diff`, `explain`, and `apply`
//! (the thin edge that runs iptables-restore and ipset).

pub mod apply;
pub mod backend;
