//! cosigner: a policy-driven co-signer for 1BitPay MPC withdrawals. The binary (`main.rs`) is a
//! thin shell over this library, so that every piece can be driven directly by tests. The
//! `dev-tools` feature (on by default, off in the production build) adds the sandbox, the demo,
//! the fail points and the test hooks.
//!
//! # Map
//!
//! | layer | modules |
//! |---|---|
//! | decisions (pure, no I/O) | [`plan`] (what to do with one listed transaction: the one place every rule of the promise lives), [`policy`] (the merchant's rules, parsed and evaluated; canonical address forms in `policy::address`) |
//! | what an operator steers | [`control`] (the policy in force and the kill-switch mode), [`killswitch`] (pause/resume from the command line), [`operator`] (the operator API) |
//! | persistence | [`ledger`] (the hash-chained decision ledger: decisions, outcomes, events, collections; SQLite, or PostgreSQL in `ledger::postgres`), used through its async face [`ledger::LedgerHandle`]; [`leader`] (which of a pair sharing a PostgreSQL ledger leads, and its fencing epoch) |
//! | effects | [`cycle`] (one pending cycle: list → plan → record → sign → send → record outcomes), [`collector`] (sweeps), [`signer`] (the key shard: RSA `data`), [`client`] (the 1BitPay wire format and HTTP, with its MD5 request signature in `client::sign`) |
//! | the process | [`daemon`] (scheduler, listeners, shutdown), [`clock`] (the one wall clock, injected), [`http`] (metrics and health), [`metrics`], [`systemd`] (notify and watchdog), [`config`], [`cli`] (one file per command under `cli/`), [`check`] (the preflight check) |
//! | reading the ledger | [`explain`] (`policy explain`), [`replay`] (`policy replay`), [`display`] (chain names, short addresses) |
//! | development | `sandbox` (a strict local 1BitPay), `demo`, [`failpoint`], [`random`] (OpenSSL's CSPRNG, or an error) |
//!
//! # One cycle
//!
//! [`cycle::Engine::cycle_once`] reads every page of the pending list (de-duplicating by id,
//! marking ids listed twice with different fields), then page by page:
//!
//! 1. **plan**: [`plan::plan`] decides each transaction from the policy in force, the mode, the
//!    window usage and what the ledger holds for its id: a new decision, a re-send of the
//!    recorded one, a wait, or nothing;
//! 2. **record**: the page's new decisions are committed to the ledger in one durable
//!    transaction, and re-sends of approvals as `resend` events, before anything leaves;
//! 3. **sign**: approvals and rejections are signed on the blocking pool, across the cores;
//! 4. **send**: each request asks a gate before every attempt (shutdown, mode, policy
//!    generation, the server's clock), while the next page is planned;
//! 5. **record outcomes**: what the server said, for re-sends next cycle.
//!
//! # Invariants, and where each is enforced
//!
//! - An approval leaves only if the policy and mode in force at that attempt allow it:
//!   [`plan::plan`] (re-check before a re-send), `cycle::Engine::gate` (before every attempt),
//!   [`control::Control`] (generation and change signal).
//! - One id, one signed text, for ever: [`plan::plan`] with `ledger::TxState::decided_other`; only
//!   a cycle records decisions, one cycle at a time (`cycle::Engine::decide` says why that
//!   keeps a page's states true until its decisions are recorded).
//! - Nothing leaves before it is recorded: [`cycle`] records a page (and its `resend` events)
//!   before spawning its sends; a ledger error stops the page.
//! - Doubt holds: canonical forms and malformed fields in [`policy`] (`check_fields`), member
//!   twins in `client::types`, the clock in `cycle::Engine::prepare` and the gate.
//! - Windows count each approval once, from the last moment it may have left:
//!   [`policy::Usage::at`], fed by [`ledger::Ledger::usage_with_slack`].
//! - The chain is intact: [`ledger::Ledger::verify`], run by the daemon at start.

#![warn(missing_docs)]

pub mod check;
pub mod cli;
pub mod client;
pub mod clock;
pub mod collector;
pub mod config;
pub mod control;
pub mod cycle;
pub mod daemon;
#[cfg(feature = "dev-tools")]
pub mod demo;
pub mod display;
pub mod domain;
pub mod explain;
pub mod failpoint;
pub mod health;
pub mod http;
pub mod killswitch;
pub mod leader;
pub mod ledger;
pub mod metrics;
pub mod operator;
pub mod plan;
pub mod policy;
pub mod random;
pub mod replay;
#[cfg(feature = "dev-tools")]
pub mod sandbox;
pub mod signer;
pub mod systemd;
