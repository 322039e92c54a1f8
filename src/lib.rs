//! cosigner: a policy-driven co-signer for 1BitPay MPC withdrawals. The binary is a thin shell
//! over this library so that every piece can be driven directly by tests.

pub mod check;
pub mod cli;
pub mod client;
pub mod collector;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod display;
pub mod failpoint;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod operator;
pub mod plan;
pub mod policy;
pub mod poller;
pub mod replay;
pub mod sandbox;
pub mod signer;
pub mod systemd;
