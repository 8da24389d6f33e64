//! Speaker core tests on a virtual clock.
