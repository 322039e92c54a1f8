//! Evaluation: the rules tried in order against the checked fields, the address look-ups, the near
//! misses, and the reason a decision gives.

use std::borrow::Cow;
use std::time::Duration;

use rust_decimal::Decimal;

use crate::domain::{Action, ClockCheck, Withdrawal};

use super::address::{account_of, describe_char, is_hex_spelling};
use super::{
    AddressMatcher, AddressSet, Checked, Context, Evaluation, NearMiss, Policy, RULE_CLOCK,
    RULE_DEFAULT, RULE_GUARD, RULE_MALFORMED, RULE_SPELLING, Reason, Rule, RuleTrace, Usage,
    address, check_fields,
};

/// Why a rule did not match, kept as data: the sentence is built only when someone reads it
/// (a trace, or the nearest rule of a hold), so a miss costs no allocation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Miss {
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
    pub(super) fn describe_amount(self, amount: Decimal) -> String {
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
pub(super) enum Found {
    /// Named as spelled.
    Spelled,
    /// Its account is named, in another spelling only.
    Account,
    /// Not named.
    No,
}

/// An address of the transaction as address sets look it up. Kept on the stack: an evaluation
/// allocates nothing to look addresses up. Each list is asked again by each rule that names it:
/// a hash look-up, and a whole evaluation is about a microsecond beside the ~1 ms of CPU a
/// decision takes (`docs/performance.md`).
pub(super) struct Lookup<'a> {
    /// The address as sets key its spelling: a hex spelling lowercased (into the caller's
    /// buffer), any other as written.
    pub(super) key: &'a str,
    /// The account it names, for a `T…`, `41…` or `0x…` spelling.
    pub(super) account: Option<[u8; 20]>,
}

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
            let here = self.in_set(l);
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

    pub(super) fn evaluate_with(
        &self,
        tx: &Withdrawal,
        ctx: Context<'_>,
        traced: bool,
    ) -> Evaluation {
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
    pub(super) fn lookalike(&self, addr: &str) -> Option<String> {
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
}
