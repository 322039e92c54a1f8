//! Integration tests: the real binary and the library against the built-in sandbox.

mod attack10;
mod attack9;
mod attack9b;
mod backup;
mod client;
mod clock;
mod commands;
mod config_errors;
mod crash;
mod cycle;
mod daemon;
mod files;
mod first_hour;
mod fuzz_regressions;
mod network;
mod operator;
mod pg;
mod pg_leader;
mod pg_ledger;
mod policy;
mod promise;
mod properties;
mod reliability;
mod signing;
mod support;
mod watchdog;
