//! cosigner-sandbox: what a developer runs cosigner against, kept out of the daemon. [`server`]
//! is a strict local 1BitPay (the wire format and checks of `cosigner::client`, the admin routes
//! the tests steer it with, hostile bodies on request); [`demo`] runs the daemon against it with
//! a throwaway key shard and prints each decision; [`cli`] is the `cosigner-sandbox` binary's
//! command line (`serve`, `demo`); [`background`] runs the server on a thread of its own, in place
//! of a process, for the tests and benches of `cosigner`.

#![warn(missing_docs)]

pub mod background;
pub mod cli;
pub mod demo;
pub mod server;

pub use background::Background;
pub use server::{Sandbox, SandboxConfig, Scenario, serve};
