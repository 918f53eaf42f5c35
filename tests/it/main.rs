//! Integration tests: the keywheel binary against real servers started by
//! the dev stack (`scripts/test` starts and stops them).

// Tests may unwrap: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod authoring;
mod aws;
mod aws_crash;
mod broken_state;
mod command_issuer;
mod crash;
mod emergency;
mod fanout;
mod faults;
mod http_crash;
mod http_issuer;
mod journal;
mod kubernetes;
mod leak_scan;
mod local_targets;
mod locking;
mod operator;
mod playbook_errors;
mod support;
mod vault;
mod watch;
