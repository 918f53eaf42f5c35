//! keywheel rotates API keys and other secrets safely.

// Tests may unwrap: a panic there is a failed test, not a crash a user sees.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod exit;
pub mod fsutil;
pub mod host;
pub mod key;
pub mod retry;
pub mod run_id;
pub mod seal;
pub mod secret;
pub mod issuers;
pub mod playbook;
pub mod targets;
pub mod store;
