//! keywheel rotates API keys and other secrets safely.
//!
//! A playbook ([`playbook`]) describes one credential: the issuer that makes
//! its keys ([`issuers`]) and the targets that hold it ([`targets`]). The
//! engine ([`engine`]) walks the rotation as a journaled, resumable state
//! machine with rollback, storing journals and locks through [`store`] and
//! sealing every secret it must remember with [`seal`]. Probes
//! ([`verify`]) check that a new key works before the old one is revoked,
//! and [`watch`] samples the service's error rates after the push and
//! decides whether to roll back.

// Tests may unwrap: a panic there is a failed test, not a crash a user sees.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod aws;
pub mod engine;
pub mod exit;
pub mod fsutil;
pub mod host;
pub mod http_client;
pub mod issuers;
pub mod key;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod playbook;
pub mod retry;
pub mod run_id;
pub mod seal;
pub mod secret;
pub mod store;
pub mod targets;
pub mod template;
pub mod timings;
pub mod verify;
pub mod watch;
