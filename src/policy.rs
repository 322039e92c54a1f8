//! The merchant's policy: parsed and validated whole at load, then evaluated purely — a pending
//! transaction plus window usage in, an action with its rule, reason and trace out.

mod address;
mod parse;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::Serialize;

pub(crate) use address::Format;
pub use address::{AddressMatcher, AddressSet};
use address::{account_of, address_problem, chain_problem, describe_char, is_hex_spelling};
pub use parse::{PolicyError, load, parse};

use crate::domain::{
    Action, ClockCheck, Decision, Verdict, Withdrawal, decision_text_len, parse_decimal,
};

/// Longest amount text considered; anything longer is held as malformed.
pub(crate) const MAX_AMOUNT_TEXT: usize = 64;

/// Pseudo-rule recorded when no rule matched.
pub(crate) const RULE_DEFAULT: &str = "(default)";
/// Pseudo-rule recorded when the transaction itself is malformed.
pub(crate) const RULE_MALFORMED: &str = "(malformed)";
/// Pseudo-rule recorded when the guard cap turned an approval into a hold.
pub(crate) const RULE_GUARD: &str = "(guard)";
/// Pseudo-rule recorded when the clock is behind the ledger and an approval waits.
pub(crate) const RULE_CLOCK: &str = "(clock)";
/// Pseudo-rule recorded when an approve rule would match but for the spelling of an account it
/// names (`0x…` for an entry written `T…`): held for a person.
pub(crate) const RULE_SPELLING: &str = "(spelling)";

/// A rolling-window limit on what one approve rule may approve.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WindowLimit {
    /// Length of the rolling window.
    pub(crate) window: Duration,
    /// Largest sum of amounts approved by the rule in the window, this one included.
    pub(crate) max_total: Option<Decimal>,
    /// Largest number of approvals by the rule in the window, this one included.
    pub(crate) max_count: Option<u64>,
}

/// One rule; all its present conditions must hold for it to decide.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name, shown in logs, metrics and the ledger.
    pub name: String,
    /// What the rule decides.
    pub(crate) action: Action,
    /// `chainId` values it applies to, as numbers; any chain when `None`. A canonical chain id
    /// is digits without a leading zero, so its number is the id, and a transaction's chain is
    /// compared once per rule as one integer rather than as text.
    pub(crate) chains: Option<Vec<u128>>,
    /// Source addresses it applies to.
    pub(crate) from: Option<AddressMatcher>,
    /// Destination addresses it applies to.
    pub(crate) to: Option<AddressMatcher>,
    /// Smallest amount, inclusive.
    pub(crate) min_amount: Option<Decimal>,
    /// Largest amount, inclusive.
    pub(crate) max_amount: Option<Decimal>,
    /// Rolling-window limits.
    pub(crate) limit: Option<WindowLimit>,
}

/// A cap over all approvals, whatever rule: beyond it, hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    /// Length of the rolling window.
    pub(crate) window: Duration,
    /// Most approvals in the window, this one included.
    pub(crate) max_approvals: u64,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Where it was read from.
    pub(crate) source: PathBuf,
    /// What happens when no rule matches.
    pub default: Action,
    /// Rules in file order.
    pub rules: Vec<Rule>,
    /// The global approval cap.
    pub guard: Option<Guard>,
    /// The named address lists, as rules share them (to name the entry a look-alike imitates).
    pub lists: BTreeMap<String, Arc<AddressSet>>,
    /// SHA-256 (hex) of the policy text and its list files: the policy's version.
    pub sha256: String,
    /// Chain names for display: the built-in ones plus the policy's `[chains]` table.
    pub chains: crate::display::ChainNames,
    /// The address format the `[chains]` table requires of a chain (by chain id), where the
    /// merchant knows it; no other chain's format is assumed.
    pub(crate) formats: HashMap<u128, Format>,
}

/// Approvals a rule (or the guard) made inside its window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WindowUsage {
    /// Sum of approved amounts.
    pub total: Decimal,
    /// Number of approvals.
    pub count: u64,
}

/// Window usage as of now, from the ledger.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Per rule name, within that rule's window.
    pub rules: HashMap<String, WindowUsage>,
    /// All approvals within the guard's window.
    pub guard_approvals: u64,
    /// Where each recorded approval (by ledger sequence number) is counted, so that one can be
    /// taken out when it is checked again, and counted once however often it is re-sent.
    pub counted: HashMap<u64, Counted>,
}

/// One approval as windows count it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Approval<'a> {
    /// Which recorded approval (its ledger sequence number): it counts once per window however
    /// many times it appears (record, re-sends).
    pub(crate) key: u64,
    /// The rule that approved it (at this time).
    pub(crate) rule: &'a str,
    /// Its amount.
    pub(crate) amount: Decimal,
    /// When (ms since the epoch).
    pub(crate) at_ms: i64,
}

/// Where one recorded approval is counted.
#[derive(Debug, Clone, Default)]
pub struct Counted {
    /// Its amount.
    pub amount: Decimal,
    /// The rules whose windows count it.
    pub rules: Vec<String>,
    /// Whether the guard's window counts it.
    pub guard: bool,
}

impl Usage {
    /// Counts one more approval of `amount` by `rule` (used within a cycle, before the ledger
    /// is read again).
    pub fn add_approval(&mut self, rule: &str, amount: Decimal) {
        let u = self.rules.entry(rule.to_string()).or_default();
        u.total = u.total.checked_add(amount).unwrap_or(Decimal::MAX);
        u.count += 1;
        self.guard_approvals += 1;
    }

    /// Counts the recorded approval `seq` in `rule`'s window (when given) and the guard's (when
    /// `guard`), unless it is counted there already.
    pub(crate) fn count_recorded(
        &mut self,
        seq: u64,
        amount: Decimal,
        rule: Option<&str>,
        guard: bool,
    ) {
        let c = self.counted.entry(seq).or_insert_with(|| Counted {
            amount,
            ..Counted::default()
        });
        if let Some(rule) = rule
            && !c.rules.iter().any(|r| r == rule)
        {
            c.rules.push(rule.to_string());
            let u = self.rules.entry(rule.to_string()).or_default();
            u.total = u.total.checked_add(amount).unwrap_or(Decimal::MAX);
            u.count += 1;
        }
        if guard && !c.guard {
            c.guard = true;
            self.guard_approvals += 1;
        }
    }

    /// Window usage for `policy` at `now_ms` from `approvals`: the one place windows are
    /// computed (the ledger's usage and `policy replay` both come here). Each approval counts once
    /// per window whose span holds any of its times (its record, its re-sends).
    ///
    /// Each window reaches `slack` further back than its length: the daemon passes
    /// [`window_slack`], so that records stamped by clocks the check lets through can never fit
    /// an extra approval into a window (the arithmetic is written there).
    pub(crate) fn at<'a>(
        policy: &Policy,
        now_ms: i64,
        slack: Duration,
        approvals: impl IntoIterator<Item = Approval<'a>>,
    ) -> Usage {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let inside = |window: Duration, at: i64| {
            at > now_ms.saturating_sub(ms(window.saturating_add(slack)))
        };
        let mut usage = Usage::default();
        for rule in &policy.rules {
            if rule.limit.is_some() {
                usage
                    .rules
                    .insert(rule.name.clone(), WindowUsage::default());
            }
        }
        for a in approvals {
            let in_rule = policy
                .rules
                .iter()
                .find(|r| r.name == a.rule)
                .and_then(|r| r.limit.as_ref())
                .is_some_and(|l| inside(l.window, a.at_ms));
            let in_guard = policy
                .guard
                .as_ref()
                .is_some_and(|g| inside(g.window, a.at_ms));
            if in_rule || in_guard {
                usage.count_recorded(a.key, a.amount, in_rule.then_some(a.rule), in_guard);
            }
        }
        usage
    }

    /// The usage without the recorded approval `seq` (to check it again without counting it
    /// twice). Which approvals are counted where is not carried over.
    #[must_use]
    pub(crate) fn without(&self, seq: u64) -> Usage {
        let mut u = Usage {
            rules: self.rules.clone(),
            guard_approvals: self.guard_approvals,
            counted: HashMap::new(),
        };
        if let Some(c) = self.counted.get(&seq) {
            for r in &c.rules {
                if let Some(w) = u.rules.get_mut(r) {
                    w.count = w.count.saturating_sub(1);
                    w.total = (w.total - c.amount).max(Decimal::ZERO);
                }
            }
            if c.guard {
                u.guard_approvals = u.guard_approvals.saturating_sub(1);
            }
        }
        u
    }
}

/// How long after the moment its latest record (decision or `resend` event) was stamped an
/// approval's attempt may still leave on that record. It is measured on the monotonic clock from
/// before the stamp was taken (so a slow commit, a wait for the pool or a slow re-send event
/// counts against it); an attempt later than this records a `resend` event first, or waits for
/// the next cycle.
pub const LATE_SEND: Duration = Duration::from_secs(1);

/// How much further back than its length every window reaches, for `api.max_clock_skew` = M:
/// `2 × clock_bound(M) + LATE_SEND` = 2 × (M + 1 s for `Date`'s whole seconds + 1 s for the
/// answer's travel) + 1 s; 65 s for the default M = 30 s.
///
/// Why it is enough. Times are the server's (it times arrivals); a clock reads the server's time
/// plus its offset `o`, and the check (`domain::judge_clock`, before a cycle decides and before
/// every attempt) lets through only clocks with `|o| ≤ clock_bound(M)`. Approval A carries the
/// stamp `T_A`, taken at true time `T_A - o_A`, and leaves by `T_A - o_A + LATE_SEND`. A later
/// approval B of the same window `L` is decided when the clock reads `now_B = t_B + o_B` and
/// leaves at `t_B` or later. A is counted unless `T_A ≤ now_B - L - slack`; when it is not,
///
/// `t_B - t_A ≥ (now_B - o_B) - (T_A - o_A + LATE_SEND) ≥ L + slack - (o_B - o_A) - LATE_SEND`,
///
/// which is at least `L` as `o_B - o_A ≤ 2 × clock_bound(M)`. The tests beside it put A and B
/// at the two ends of the bound and B one millisecond either side of `t_A + L`.
#[must_use]
pub fn window_slack(max_clock_skew: Duration) -> Duration {
    crate::domain::clock_bound(max_clock_skew)
        .saturating_mul(2)
        .saturating_add(LATE_SEND)
}

/// What the evaluation may rely on besides the transaction.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Window usage.
    pub usage: &'a Usage,
    /// Longest text the key can sign.
    pub max_sign_len: usize,
    /// Whether the wall clock can be trusted for windows: approvals wait when it cannot.
    pub clock: ClockCheck,
}

/// How one rule fared.
#[derive(Debug, Clone, Serialize)]
pub struct RuleTrace {
    /// The rule's name.
    pub(crate) rule: String,
    /// Whether every condition held.
    pub(crate) matched: bool,
    /// The first condition that failed.
    pub why_not: Option<String>,
    /// Window usage the rule saw, when it has a limit.
    pub window: Option<WindowUsage>,
}

/// The outcome of evaluating one transaction.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// What to do.
    pub action: Action,
    /// The rule that decided, or a pseudo-rule such as `(default)` (borrowed: deciding a
    /// transaction that no rule matches allocates nothing for it).
    pub rule: Cow<'static, str>,
    /// Why, as one sentence a person can read (`Display`).
    pub reason: Reason,
    /// The transaction's amount, when it parsed.
    #[serde(skip)]
    pub amount: Option<Decimal>,
    /// Every rule tried, in order.
    pub trace: Vec<RuleTrace>,
}

/// Why an evaluation ended as it did, kept as data: the sentence is written only when a person
/// or the ledger needs it (`Display`, `to_string`), so deciding a transaction writes no text.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// A sentence written already (malformed fields, the clock, the guard, operator modes).
    Text(String),
    /// The rule of this name matched.
    Matched(String),
    /// No rule matched and the policy default applies; with the rule that got furthest (as far
    /// as the amount or the window) and why it missed, when one did.
    NoRule(Option<(String, NearMiss)>),
}

/// How a rule that got as far as the amount or the window missed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearMiss {
    miss: Miss,
    amount: Decimal,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Text(text) => f.write_str(text),
            Reason::Matched(rule) => write!(f, "matched rule {rule:?}"),
            Reason::NoRule(None) => f.write_str("no rule matched; the policy default applies"),
            Reason::NoRule(Some((rule, near))) => write!(
                f,
                "no rule matched (nearest, {rule:?}: {}); the policy default applies",
                near.miss.describe_amount(near.amount)
            ),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What makes two holds (or two waits of one recorded decision) the same: the deciding rule and
/// the kind of reason, whatever numbers its sentence carries (a window's count or total, a
/// clock's skew, a size, a time). A hold is recorded when its key changes, not when its numbers
/// move: the ledger keeps the first sentence, and `policy explain` shows the current numbers.
/// Every feature that acts once per hold (a notification, a list of holds) keys on this.
///
/// The kind is the sentence with every number written outside quotes replaced by `#`: quoted
/// text (rule names, addresses, a hash) is kept whole, so two rules or two contents never
/// share a key.
///
/// It has no `Display`: nothing shows a key to a person (the reason's sentence is what they read).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct HoldKey {
    /// The deciding rule or pseudo-rule.
    pub rule: String,
    /// The reason's sentence with its numbers masked.
    pub kind: String,
}

impl HoldKey {
    /// The key of a hold by `rule` for `reason` (as recorded or about to be).
    #[must_use]
    pub fn of(rule: &str, reason: &str) -> Self {
        Self {
            rule: rule.to_string(),
            kind: reason_kind(reason),
        }
    }
}

/// `reason` with each number outside double quotes (digits, with any `.` or `,` between
/// digits) replaced by `#`. Inside quotes (as Rust's `{:?}` and JSON write them, `\"` escaped)
/// everything is kept.
fn reason_kind(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut quoted = false;
    let mut escaped = false;
    let mut chars = reason.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        if c == '"' {
            quoted = true;
            out.push(c);
        } else if c.is_ascii_digit() {
            // One number: digits, and separators followed by a digit.
            loop {
                match chars.peek() {
                    Some(d) if d.is_ascii_digit() => {
                        chars.next();
                    }
                    Some('.' | ',') => {
                        let mut ahead = chars.clone();
                        ahead.next();
                        if ahead.peek().is_some_and(char::is_ascii_digit) {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            out.push('#');
        } else {
            out.push(c);
        }
    }
    out
}

/// A transaction whose fields passed the malformed-field checks.
struct Checked<'a> {
    from: &'a str,
    to: &'a str,
    chain: &'a str,
    /// `chain` as a number (it is canonical: at most 20 digits).
    chain_no: u128,
    amount: Decimal,
}

/// A transaction that cannot be decided, and which address (if any) made it so.
struct Malformed<'a> {
    reason: String,
    /// The field and the address that is not canonical.
    address: Option<(&'a str, &'a str)>,
}

impl From<String> for Malformed<'_> {
    fn from(reason: String) -> Self {
        Malformed {
            reason,
            address: None,
        }
    }
}

/// Checks the fields every decision depends on, canonical forms included; `Err` is the reason to
/// hold.
fn check_fields<'a>(
    tx: &'a Withdrawal,
    max_sign_len: usize,
    formats: &HashMap<u128, Format>,
) -> Result<Checked<'a>, Malformed<'a>> {
    if !tx.problems.is_empty() {
        return Err(tx.problems.join("; ").into());
    }
    let field = |v: &'a Option<String>, name: &str| -> Result<&'a str, Malformed<'a>> {
        match v.as_deref() {
            None => Err(format!("{name} is missing").into()),
            Some("") => Err(format!("{name} is empty").into()),
            Some(s) => Ok(s),
        }
    };
    let chain = field(&tx.chain_id, "chainId")?;
    if let Some(p) = chain_problem(chain) {
        return Err(format!("chainId {chain:?} {p}").into());
    }
    let chain_no: u128 = chain
        .parse()
        .map_err(|_| format!("chainId {chain:?} is not a chain id"))?;
    let format = formats.get(&chain_no).copied();
    let address = |name: &'static str, v: &'a Option<String>| -> Result<&'a str, Malformed<'a>> {
        let a = field(v, name)?;
        match address_problem(a, format) {
            None => Ok(a),
            Some(p) => Err(Malformed {
                reason: format!("{name} {a:?} {p}"),
                address: Some((name, a)),
            }),
        }
    };
    let from = address("fromAddress", &tx.from)?;
    let to = address("toAddress", &tx.to)?;
    let amount_text = field(&tx.amount, "amount")?;
    if amount_text.len() > MAX_AMOUNT_TEXT {
        return Err(format!(
            "amount is {} characters long (at most {MAX_AMOUNT_TEXT})",
            amount_text.len()
        )
        .into());
    }
    let amount = parse_decimal(amount_text).ok_or_else(|| {
        format!("amount {amount_text:?} is not a plain decimal that can be compared exactly")
    })?;
    if amount_text.starts_with('-') {
        return Err(format!("amount {amount_text:?} is negative").into());
    }
    let len = decision_text_len(&Decision {
        id: tx.id,
        from,
        to,
        value: amount_text,
        chain_id: chain,
        verdict: Verdict::Approve,
    });
    if len > max_sign_len {
        return Err(format!(
            "the text to sign is {len} bytes; the key signs at most {max_sign_len}"
        )
        .into());
    }
    Ok(Checked {
        from,
        to,
        chain,
        chain_no,
        amount,
    })
}

/// Why a rule did not match, kept as data: the sentence is built only when someone reads it
/// (a trace, or the nearest rule of a hold), so a miss costs no allocation.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Miss {
    Chain,
    From,
    To,
    Below(Decimal),
    Above(Decimal),
    Total {
        after: Option<Decimal>,
        limit: Decimal,
        window: Duration,
    },
    Count {
        count: u64,
        limit: u64,
        window: Duration,
    },
    /// An approve rule whose every condition holds, but whose `from` (`true`) or `to` names the
    /// account in another spelling: held, never approved.
    Spelling {
        from: bool,
    },
}

impl Miss {
    /// How far the transaction got: 0 chain, 1 source, 2 destination, 3 amount, 4 window, 5 all
    /// but the spelling.
    fn stage(self) -> u8 {
        match self {
            Miss::Chain => 0,
            Miss::From => 1,
            Miss::To => 2,
            Miss::Below(_) | Miss::Above(_) => 3,
            Miss::Total { .. } | Miss::Count { .. } => 4,
            Miss::Spelling { .. } => 5,
        }
    }

    fn describe(self, c: &Checked<'_>) -> String {
        match self {
            Miss::Chain => format!("chain {} is not in chains", c.chain),
            Miss::From => format!("from {} is not in from", c.from),
            Miss::To => format!("to {} is not in to", c.to),
            Miss::Spelling { from } => format!(
                "{} {} names an account of `{}` in another spelling; an approve rule matches only \
                 the spelling its entry is written in",
                if from { "from" } else { "to" },
                if from { c.from } else { c.to },
                if from { "from" } else { "to" },
            ),
            _ => self.describe_amount(c.amount),
        }
    }

    /// [`Miss::describe`] for a miss at the amount or the window, which needs only the amount.
    fn describe_amount(self, amount: Decimal) -> String {
        match self {
            Miss::Chain => "the chain is not in chains".into(),
            Miss::From => "the source is not in from".into(),
            Miss::To => "the destination is not in to".into(),
            Miss::Spelling { .. } => "an account is named in another spelling".into(),
            Miss::Below(min) => format!("amount {amount} is below min_amount {min}"),
            Miss::Above(max) => format!("amount {amount} is above max_amount {max}"),
            Miss::Total {
                after,
                limit,
                window,
            } => format!(
                "window total would be {} (limit {limit} per {})",
                after.map_or("too large".into(), |t| t.to_string()),
                humantime::format_duration(window)
            ),
            Miss::Count {
                count,
                limit,
                window,
            } => format!(
                "window count would be {count} (limit {limit} per {})",
                humantime::format_duration(window)
            ),
        }
    }
}

/// How an address of the transaction stands against a rule's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Named as spelled.
    Spelled,
    /// Its account is named, in another spelling only.
    Account,
    /// Not named.
    No,
}

/// An address of the transaction as address sets look it up, with the answers of the lists seen
/// so far: rules usually share a few large lists, and each is asked once per evaluation. Kept
/// on the stack: an evaluation allocates nothing to look addresses up.
struct Lookup<'a> {
    /// The address as sets key its spelling: a hex spelling lowercased (into the caller's
    /// buffer), any other as written.
    key: &'a str,
    /// The account it names, for a `T…`, `41…` or `0x…` spelling.
    account: Option<[u8; 20]>,
    /// The lists asked so far and their answers (beyond [`MEMO`] lists, the others are asked
    /// each time).
    lists: [(*const AddressSet, Found); MEMO],
    asked: usize,
}

/// Lists whose answers one evaluation remembers.
const MEMO: usize = 8;

impl<'a> Lookup<'a> {
    /// `addr` as sets key it; a hex spelling is lowercased into `buf`.
    fn new(addr: &'a str, buf: &'a mut [u8; 42]) -> Self {
        let key = if is_hex_spelling(addr) {
            buf.copy_from_slice(addr.as_bytes());
            buf.make_ascii_lowercase();
            // Lowercased ASCII: always UTF-8.
            std::str::from_utf8(&buf[..]).unwrap_or_default()
        } else {
            addr
        };
        Self {
            key,
            account: account_of(addr),
            lists: [(std::ptr::null(), Found::No); MEMO],
            asked: 0,
        }
    }

    fn in_set(&self, set: &AddressSet) -> Found {
        if set.contains_key(self.key) {
            Found::Spelled
        } else if self.account.is_some_and(|a| set.contains_account(&a)) {
            Found::Account
        } else {
            Found::No
        }
    }

    fn in_matcher(&mut self, m: &AddressMatcher) -> Found {
        // An empty own set answers `No` by itself (no spelling, no account): no shortcut for it.
        let mut found = self.in_set(m.own());
        for (_, l) in m.lists() {
            if found == Found::Spelled {
                break;
            }
            let ptr = Arc::as_ptr(l);
            let here = match self.lists[..self.asked]
                .iter()
                .find(|(p, _)| std::ptr::eq(*p, ptr))
            {
                Some(&(_, f)) => f,
                None => {
                    let f = self.in_set(l);
                    if let Some(slot) = self.lists.get_mut(self.asked) {
                        *slot = (ptr, f);
                        self.asked += 1;
                    }
                    f
                }
            };
            if here != Found::No {
                found = here;
            }
        }
        found
    }
}

impl Rule {
    /// Why this rule does not match, or `None` when it does.
    fn why_not<'l>(
        &self,
        c: &Checked<'_>,
        usage: &Usage,
        from: &mut Lookup<'l>,
        to: &mut Lookup<'l>,
    ) -> Option<Miss> {
        if let Some(chains) = &self.chains
            && !chains.contains(&c.chain_no)
        {
            return Some(Miss::Chain);
        }
        // A reject or hold rule names accounts: every spelling of one matches. An approve rule
        // matches only the spelling its entry is written in; another spelling of it is noted,
        // and if every other condition holds, the transaction is held for a person.
        let accounts = self.action != Action::Approve;
        let mut spelling = None;
        for (is_from, m, lookup) in [(true, &self.from, from), (false, &self.to, to)] {
            let Some(m) = m else { continue };
            match lookup.in_matcher(m) {
                Found::Spelled => {}
                Found::Account if accounts => {}
                Found::Account => {
                    spelling.get_or_insert(Miss::Spelling { from: is_from });
                }
                Found::No if is_from => return Some(Miss::From),
                Found::No => return Some(Miss::To),
            }
        }
        if let Some(min) = self.min_amount
            && c.amount < min
        {
            return Some(Miss::Below(min));
        }
        if let Some(max) = self.max_amount
            && c.amount > max
        {
            return Some(Miss::Above(max));
        }
        if let Some(limit) = &self.limit {
            let used = usage.rules.get(&self.name).copied().unwrap_or_default();
            if let Some(max_total) = limit.max_total {
                let after = used.total.checked_add(c.amount);
                if after.is_none_or(|t| t > max_total) {
                    return Some(Miss::Total {
                        after,
                        limit: max_total,
                        window: limit.window,
                    });
                }
            }
            if let Some(max_count) = limit.max_count
                && used.count + 1 > max_count
            {
                return Some(Miss::Count {
                    count: used.count + 1,
                    limit: max_count,
                    window: limit.window,
                });
            }
        }
        spelling
    }
}

impl Policy {
    /// Decides what to do with `tx`, with the trace of every rule tried (for `policy explain`).
    /// Pure: the same inputs always give the same answer.
    #[must_use]
    pub fn evaluate(&self, tx: &Withdrawal, ctx: Context<'_>) -> Evaluation {
        self.evaluate_with(tx, ctx, true)
    }

    /// [`Policy::evaluate`] without the trace: what the cycle runs for every transaction.
    #[must_use]
    pub fn decide(&self, tx: &Withdrawal, ctx: Context<'_>) -> Evaluation {
        self.evaluate_with(tx, ctx, false)
    }

    fn evaluate_with(&self, tx: &Withdrawal, ctx: Context<'_>, traced: bool) -> Evaluation {
        let checked = match check_fields(tx, ctx.max_sign_len, &self.formats) {
            Ok(c) => c,
            Err(m) => {
                let like = m
                    .address
                    .and_then(|(field, a)| self.lookalike(a).map(|like| (field, a, like)));
                let reason = match like {
                    Some((field, a, like)) => {
                        format!("{field} {a:?} is a look-alike, not an address: {like}")
                    }
                    None => m.reason,
                };
                return Evaluation {
                    action: Action::Hold,
                    rule: Cow::Borrowed(RULE_MALFORMED),
                    reason: Reason::Text(reason),
                    amount: None,
                    trace: Vec::new(),
                };
            }
        };
        let mut trace = Vec::with_capacity(if traced { self.rules.len() } else { 0 });
        let mut decided: Option<&Rule> = None;
        // An approve rule that matched but for the spelling of an account it names.
        let mut respelled: Option<(&Rule, bool)> = None;
        // The rule the transaction got furthest in: what a person looking at a hold wants.
        let mut nearest: Option<(&Rule, Miss)> = None;
        let (mut from_buf, mut to_buf) = ([0u8; 42], [0u8; 42]);
        let mut from = Lookup::new(checked.from, &mut from_buf);
        let mut to = Lookup::new(checked.to, &mut to_buf);
        for rule in &self.rules {
            let miss = rule.why_not(&checked, ctx.usage, &mut from, &mut to);
            if let Some(m) = miss
                && m.stage() >= 3
                && nearest.is_none_or(|(_, n)| m.stage() > n.stage())
            {
                nearest = Some((rule, m));
            }
            if traced {
                trace.push(RuleTrace {
                    rule: rule.name.clone(),
                    matched: miss.is_none(),
                    why_not: miss.map(|m| m.describe(&checked)),
                    window: rule
                        .limit
                        .as_ref()
                        .map(|_| ctx.usage.rules.get(&rule.name).copied().unwrap_or_default()),
                });
            }
            if miss.is_none() {
                decided = Some(rule);
                break;
            }
            if let Some(Miss::Spelling { from: is_from }) = miss {
                respelled = Some((rule, is_from));
                break;
            }
        }
        if let Some((r, is_from)) = respelled {
            let (field, addr, lookup, m) = if is_from {
                ("fromAddress", checked.from, &from, &r.from)
            } else {
                ("toAddress", checked.to, &to, &r.to)
            };
            let entry = lookup
                .account
                .zip(m.as_ref())
                .and_then(|(a, m)| m.entry_naming(&a))
                .unwrap_or_else(|| "an entry".into());
            return Evaluation {
                action: Action::Hold,
                rule: Cow::Borrowed(RULE_SPELLING),
                reason: Reason::Text(format!(
                    "{field} {addr} is another spelling of {entry}: rule {:?} approves only the \
                     spelling its entry is written in, so a person decides",
                    r.name
                )),
                amount: Some(checked.amount),
                trace,
            };
        }
        let (mut action, mut rule, mut reason) = match decided {
            Some(r) => (
                r.action,
                Cow::Owned(r.name.clone()),
                Reason::Matched(r.name.clone()),
            ),
            None => (
                self.default,
                Cow::Borrowed(RULE_DEFAULT),
                Reason::NoRule(nearest.map(|(r, miss)| {
                    (
                        r.name.clone(),
                        NearMiss {
                            miss,
                            amount: checked.amount,
                        },
                    )
                })),
            ),
        };
        if action == Action::Approve {
            if ctx.clock == ClockCheck::BehindLedger {
                action = Action::Hold;
                reason = Reason::Text(format!(
                    "{rule} would approve, but the clock is behind the newest ledger record; \
                     approvals wait until it catches up"
                ));
                rule = Cow::Borrowed(RULE_CLOCK);
            } else if let ClockCheck::OffServer(doubt) = ctx.clock {
                action = Action::Hold;
                reason = Reason::Text(format!(
                    "{rule} would approve, but {doubt}; approvals wait until the clock can be \
                     trusted (windows depend on it)"
                ));
                rule = Cow::Borrowed(RULE_CLOCK);
            } else if let Some(g) = &self.guard
                && ctx.usage.guard_approvals + 1 > g.max_approvals
            {
                action = Action::Hold;
                reason = Reason::Text(format!(
                    "{rule} would approve, but the guard allows {} approvals per {}",
                    g.max_approvals,
                    humantime::format_duration(g.window)
                ));
                rule = Cow::Borrowed(RULE_GUARD);
            }
        }
        Evaluation {
            action,
            rule,
            reason,
            amount: Some(checked.amount),
            trace,
        }
    }

    /// Says which policy address `addr` (not canonical) imitates, if it differs from one only in
    /// characters that are not ASCII.
    fn lookalike(&self, addr: &str) -> Option<String> {
        let lists = self
            .lists
            .iter()
            .map(|(name, set)| (format!("list {name:?}"), set.as_ref()));
        let own = self.rules.iter().flat_map(|r| {
            [("from", &r.from), ("to", &r.to)]
                .into_iter()
                .filter_map(move |(key, m)| {
                    m.as_ref()
                        .map(|m| (format!("rule {:?} `{key}`", r.name), m.own()))
                })
        });
        lists.chain(own).find_map(|(place, set)| {
            set.iter().find_map(|entry| {
                address::lookalike_of(addr, entry).map(|(at, c)| {
                    format!(
                        "it differs from {place} entry {entry} at character {at}: {}",
                        describe_char(c)
                    )
                })
            })
        })
    }

    /// The longest window any limit uses (what the ledger must look back over).
    #[must_use]
    pub(crate) fn longest_window(&self) -> Option<Duration> {
        self.rules
            .iter()
            .filter_map(|r| r.limit.as_ref().map(|l| l.window))
            .chain(self.guard.as_ref().map(|g| g.window))
            .max()
    }

    /// The names of the rules with a window limit.
    pub(crate) fn limited_rules(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .filter(|r| r.limit.is_some())
            .map(|r| r.name.as_str())
    }

    /// Each limited rule's share of its window limit that `usage` uses (the larger of total and
    /// count), for the `cosigner_window_used_ratio` gauge. A gauge, not money: `f64` is fine.
    pub(crate) fn window_used<'a>(
        &'a self,
        usage: &'a Usage,
    ) -> impl Iterator<Item = (&'a str, f64)> {
        self.rules.iter().filter_map(move |r| {
            let limit = r.limit.as_ref()?;
            let used = usage.rules.get(&r.name).copied().unwrap_or_default();
            let mut ratio: f64 = 0.0;
            if let Some(max) = limit.max_total
                && !max.is_zero()
            {
                let q = used.total / max;
                ratio = ratio.max(q.to_string().parse().unwrap_or(1.0));
            }
            if let Some(max) = limit.max_count {
                ratio = ratio.max(used.count as f64 / max as f64);
            }
            Some((r.name.as_str(), ratio))
        })
    }

    /// Warnings for `cosigner check` and `policy check`: allowed, but worth a second look.
    #[must_use]
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.default == Action::Approve {
            w.push(
                "default = \"approve\": every transaction no rule matches is approved".to_string(),
            );
        }
        for r in &self.rules {
            if r.action == Action::Approve
                && r.to.is_none()
                && r.max_amount.is_none()
                && r.limit.is_none()
            {
                w.push(format!(
                    "rule {:?} approves any destination with no amount or window limit",
                    r.name
                ));
            }
        }
        if self.guard.is_none() && self.rules.iter().any(|r| r.action == Action::Approve) {
            w.push("no [guard]: nothing caps the number of approvals per window".to_string());
        }
        w
    }
}

#[cfg(test)]
mod hold_key_tests;
#[cfg(test)]
mod property_tests;
#[cfg(test)]
mod semantics_tests;
#[cfg(test)]
mod usage_tests;
#[cfg(test)]
mod window_tests;
