//! Integration tests: the real binary and the library against the built-in sandbox.

mod client;
mod config_errors;
mod policy;
mod signing;
mod support;
