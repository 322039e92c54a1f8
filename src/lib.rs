//! cosigner: a policy-driven co-signer for 1BitPay MPC withdrawals. The binary is a thin shell
//! over this library so that every piece can be driven directly by tests. The `dev-tools`
//! feature (on by default, off in the production build) adds the sandbox, the demo, the fail
//! points and the test hooks.

pub mod check;
pub mod cli;
pub mod client;
pub mod collector;
pub mod config;
pub mod control;
pub mod daemon;
#[cfg(feature = "dev-tools")]
pub mod demo;
pub mod display;
pub mod explain;
pub mod failpoint;
pub mod http;
pub mod killswitch;
pub mod ledger;
pub mod metrics;
pub mod operator;
pub mod plan;
pub mod policy;
pub mod poller;
pub mod random;
pub mod replay;
#[cfg(feature = "dev-tools")]
pub mod sandbox;
pub mod signer;
pub mod systemd;
