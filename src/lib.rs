//! cosigner: a policy-driven co-signer for 1BitPay MPC withdrawals. The binary (`main.rs`) is a
//! thin shell over this library, so that every piece can be driven directly by tests. The
//! `test-hooks` feature (on for `cargo test` and `cargo bench` only) adds the fail points and the
//! test hooks; the sandbox and the demo are a crate of their own, `cosigner-sandbox` (`sandbox/`). The library exports what the binary, the benches and the
//! tests use; everything else is `pub(crate)`, and `unreachable_pub` keeps it so.
//!
//! # Map
//!
//! | layer | modules |
//! |---|---|
//! | the domain core (no dependency on any other module) | [`domain`] (a [`domain::Withdrawal`] as listed, its [`domain::TxId`], [`domain::Action`] and [`domain::Verdict`], the exact texts the key shard signs, exact amounts, what is known about the clock) |
//! | decisions (pure, no I/O) | [`plan`] (what to do with one listed transaction: the one place every rule of the promise lives), [`policy`] (the merchant's rules, parsed and evaluated, and window usage; canonical address forms and account identity in `policy::address`) |
//! | what an operator steers | [`control`] (the policy in force and the kill-switch mode [`control::Mode`]: reload, pause, resume and restore at start or takeover, through [`control::Control`]), [`killswitch`] (pause/resume from the command line), [`operator`] (the operator API) |
//! | persistence | [`ledger`] (the hash-chained decision ledger: decisions, outcomes, events, collections; SQLite in [`ledger::SqliteLedger`], or PostgreSQL in `ledger::postgres`), used through its async face `ledger::LedgerHandle`; [`leader`] (which of a pair sharing a PostgreSQL ledger leads, and its fencing epoch) |
//! | effects | [`cycle`] (one pending cycle: list → plan → record → sign → send → record outcomes), `collector` (sweeps), [`signer`] (the key shard: RSA `data`), [`client`] (the 1BitPay wire format and HTTP, with its MD5 request signature in `client::signature`; it turns the wire into domain types at the edge) |
//! | the process | [`daemon`] (scheduler, listeners, shutdown), [`clock`] (the one wall clock, injected: the system's, or in a pair the database's carried on the monotonic clock), `http` (metrics and health routes), [`listener`] (the accept loops: a connection cap, a header-read timeout), `health` (readiness and liveness), [`metrics`] (numbers and labels only), [`systemd`] (notify and watchdog), [`config`], [`cli`] (one file per command under `cli/`), [`check`] (the preflight check) |
//! | reading the ledger | [`explain`] (`policy explain`), `replay` (`policy replay`), `display` (chain names, short addresses, hex) |
//! | development | `failpoint` (the crash suite's fail points), `random` (OpenSSL's CSPRNG, or an error) |
//!
//! # Who uses whom
//!
//! Each module uses only modules listed before it (a module's own submodules aside), so there
//! is no cycle; `cargo test --test it module_map::` fails when a module's `crate::` paths and its
//! line here disagree:
//!
//! ```text
//! domain, display, listener, metrics, random, signer, systemd, clock   (nothing)
//! policy      domain display
//! client      domain display metrics random clock
//! failpoint   random
//! ledger      domain display policy clock
//! leader      ledger
//! control     domain client leader ledger metrics policy
//! plan        domain control ledger policy
//! health      clock leader
//! explain     domain control ledger plan policy
//! replay      domain client control ledger plan policy
//! collector   domain client control leader ledger metrics signer
//! cycle       domain client clock control failpoint leader ledger metrics plan policy signer
//! operator    domain client control cycle display health leader ledger metrics random
//! http        health metrics operator
//! config      client cycle health ledger listener operator signer
//! check       domain client clock config ledger policy signer
//! killswitch  config control ledger
//! daemon      client clock collector config control cycle health http leader ledger listener
//!             metrics operator policy random signer systemd
//! cli         (the commands: any of the above)
//! ```
//!
//! # One cycle
//!
//! [`cycle::Engine::cycle_once`] reads every page of the pending list (de-duplicating by id,
//! marking ids listed twice with different fields; a listing beyond `poll.max_items` items is
//! refused whole, an item beyond `poll.max_item_bytes` kept only as a bounded prefix and held),
//! then page by page, all of it within `poll.cycle_timeout`:
//!
//! 1. **plan**: `plan::plan` decides each transaction from the policy in force, the mode, the
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
//!   `plan::plan` (re-check before a re-send), `cycle::Engine::gate` (before every attempt),
//!   `control::Control` (generation and change signal).
//! - One id, one signed text, for ever: `plan::plan` with `ledger::TxState::decided_other`; only
//!   a cycle records decisions, one cycle at a time (`cycle::Engine::decide` says why that
//!   keeps a page's states true until its decisions are recorded).
//! - Nothing leaves before it is recorded: [`cycle`] records a page (and its `resend` events)
//!   before spawning its sends; a ledger error stops the page.
//! - Doubt holds: canonical forms and malformed fields in [`policy`] (`check_fields`), member
//!   twins in `client::types`, the clock in `cycle::Engine::prepare` (`cycle/decide.rs`) and the
//!   gate (`cycle/submit.rs`).
//! - Windows count each approval once, from the last moment it may have left: one
//!   implementation, `policy::Usage::at` (in `policy/usage.rs`), fed by
//!   `ledger::SqliteLedger::usage_with_slack` (the daemon, `policy explain`) and by `replay`
//!   (`policy replay`); metrics only read its result. No
//!   attempt leaves more than [`policy::LATE_SEND`] after the stamp of the record it leaves on
//!   (`cycle::Engine::gate`), and windows reach [`policy::window_slack`] further back, which
//!   covers any two clocks the check lets through ([`domain::clock_bound`]).
//! - The chain is intact: `ledger/verify.rs` walks it in constant memory: `ledger verify` whole,
//!   the daemon at start what its first decisions read and what was added since the last
//!   verified point ([`ledger::SqliteLedger::verify_at_start`]), the rest behind it
//!   (`daemon`'s `watch_chain`, which holds everything on a break).

#![warn(missing_docs)]

pub mod check;
pub mod cli;
pub mod client;
pub mod clock;
mod collector;
pub mod config;
pub mod control;
pub mod cycle;
pub mod daemon;
pub mod display;
pub mod domain;
pub mod explain;
mod failpoint;
mod health;
mod http;
pub mod killswitch;
pub mod leader;
pub mod ledger;
pub mod listener;
pub mod metrics;
pub mod operator;
pub mod plan;
pub mod policy;
pub mod random;
mod replay;
pub mod signer;
pub mod systemd;
