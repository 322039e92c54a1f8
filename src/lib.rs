//! cosigner: a policy-driven co-signer for 1BitPay MPC withdrawals. The binary is a thin shell
//! over this library so that every piece can be driven directly by tests.

pub mod cli;
pub mod client;
pub mod config;
pub mod ledger;
pub mod policy;
pub mod poller;
pub mod sandbox;
pub mod signer;
