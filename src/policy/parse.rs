//! Reading a policy file: TOML syntax, unknown keys, and every semantic check, each error naming
//! the file, the rule and the key.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openssl::sha::Sha256;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::{
    Action, AddressMatcher, AddressSet, Format, Guard, Policy, Rule, WindowLimit, address_problem,
    chain_problem,
};
use crate::display::hex;
use crate::domain::{UnknownAction, parse_decimal};

/// A policy that cannot be used, and where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy file {}: {}{}", .file.display(), .place.as_deref().map(|p| format!("{p}: ")).unwrap_or_default(), .message)]
pub struct PolicyError {
    /// The policy file.
    pub(crate) file: PathBuf,
    /// `rule "name": key `max_amount`` or similar, when the problem has a place.
    pub(crate) place: Option<String>,
    /// What is wrong.
    pub(crate) message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Option<String>,
    #[serde(default)]
    lists: BTreeMap<String, toml::Spanned<toml::Value>>,
    #[serde(default)]
    rule: Vec<toml::Table>,
    guard: Option<toml::Table>,
    #[serde(default)]
    chains: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    action: Option<String>,
    chains: Option<Vec<String>>,
    from: Option<Vec<String>>,
    to: Option<Vec<String>>,
    min_amount: Option<toml::Value>,
    max_amount: Option<toml::Value>,
    window: Option<String>,
    max_total: Option<toml::Value>,
    max_count: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuard {
    window: Option<String>,
    max_approvals: Option<i64>,
}

/// The line of every entry of the inline address lists, read in a second pass over the text (a
/// `toml::Value` keeps no positions).
#[derive(Deserialize, Default)]
struct ListLines {
    #[serde(default)]
    lists: BTreeMap<String, EntryLines>,
}

/// Byte offsets of an inline list's entries; empty for a `{ file = ... }` list.
#[derive(Default)]
struct EntryLines(Vec<usize>);

impl<'de> Deserialize<'de> for EntryLines {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EntryLines;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<EntryLines, A::Error> {
                let mut at = Vec::new();
                while let Some(e) = seq.next_element::<toml::Spanned<serde::de::IgnoredAny>>()? {
                    at.push(e.span().start);
                }
                Ok(EntryLines(at))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<EntryLines, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(EntryLines::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// 1-based lines of byte offsets in a text, counted on from the offset asked for before: a
/// list's entries come in order, so their lines take one pass over the text, not one each (a
/// 100,000-address list loaded in seconds otherwise).
struct Lines<'t> {
    text: &'t [u8],
    offset: usize,
    line: usize,
}

impl<'t> Lines<'t> {
    fn new(text: &'t str) -> Self {
        Self {
            text: text.as_bytes(),
            offset: 0,
            line: 1,
        }
    }

    fn line_of(&mut self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        if offset < self.offset {
            (self.offset, self.line) = (0, 1);
        }
        self.line += self.text[self.offset..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.offset = offset;
        self.line
    }
}

/// Reads and validates the policy at `path`, list files included.
pub fn load(path: &Path) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
        file: path.to_owned(),
        place: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, path, &|p: &Path| std::fs::read_to_string(p))
}

struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, place: Option<String>, message: impl Into<String>) -> PolicyError {
        PolicyError {
            file: self.file.to_owned(),
            place,
            message: message.into(),
        }
    }
}

/// Longest rule name, in bytes.
const MAX_RULE_NAME: usize = 200;

fn rule_place(name: &str, key: &str) -> Option<String> {
    Some(format!("rule {name:?}: key `{key}`"))
}

fn duration(ctx: &Ctx<'_>, place: Option<String>, text: &str) -> Result<Duration, PolicyError> {
    let d = humantime::parse_duration(text).map_err(|e| {
        ctx.err(
            place.clone(),
            format!("invalid duration {text:?} ({e}); write it like \"1h\" or \"24h\""),
        )
    })?;
    if d.is_zero() {
        return Err(ctx.err(place, "a window must be longer than zero"));
    }
    Ok(d)
}

fn amount(ctx: &Ctx<'_>, place: Option<String>, v: &toml::Value) -> Result<Decimal, PolicyError> {
    let text = v.as_str().ok_or_else(|| {
        ctx.err(
            place.clone(),
            format!("write amounts as strings so they stay exact, e.g. \"{v}\""),
        )
    })?;
    let d = parse_decimal(text).ok_or_else(|| {
        ctx.err(
            place.clone(),
            format!("{text:?} is not a plain decimal such as \"1000.50\""),
        )
    })?;
    if text.starts_with('-') {
        return Err(ctx.err(place, format!("{text:?} is negative")));
    }
    Ok(d)
}

/// The TOML type a key must have.
#[derive(Clone, Copy)]
enum Kind {
    /// Text, with an example.
    Text(&'static str),
    TextList,
    WholeNumber,
    Table,
    TableList,
}

const TOP_KINDS: &[(&str, Kind)] = &[
    ("default", Kind::Text("\"hold\"")),
    ("lists", Kind::Table),
    ("rule", Kind::TableList),
    ("guard", Kind::Table),
    ("chains", Kind::Table),
];
const RULE_KINDS: &[(&str, Kind)] = &[
    ("name", Kind::Text("\"treasury payouts\"")),
    ("action", Kind::Text("\"approve\"")),
    ("chains", Kind::TextList),
    ("from", Kind::TextList),
    ("to", Kind::TextList),
    ("window", Kind::Text("\"24h\"")),
    ("max_count", Kind::WholeNumber),
];
const GUARD_KINDS: &[(&str, Kind)] = &[
    ("window", Kind::Text("\"24h\"")),
    ("max_approvals", Kind::WholeNumber),
];

/// What a TOML value is, in plain words.
fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the text {s:?}"),
        toml::Value::Integer(i) => format!("the number {i}"),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => format!("{b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

/// Checks the type of each key of `table` named in `kinds` before the typed read, so that a
/// wrong type is reported in plain words with its key (serde would say `expected i64`).
fn check_kinds(
    ctx: &Ctx<'_>,
    table: &toml::Table,
    kinds: &[(&str, Kind)],
    place: impl Fn(&str) -> Option<String>,
) -> Result<(), PolicyError> {
    for (key, kind) in kinds {
        let Some(v) = table.get(*key) else { continue };
        let wrong =
            |want: &str| ctx.err(place(key), format!("must be {want}, not {}", describe(v)));
        match (kind, v) {
            (Kind::Text(_), toml::Value::String(_))
            | (Kind::WholeNumber, toml::Value::Integer(_))
            | (Kind::Table, toml::Value::Table(_)) => {}
            (Kind::Text(example), _) => {
                return Err(wrong(&format!("text in quotes, such as {key} = {example}")));
            }
            (Kind::WholeNumber, toml::Value::String(s)) => {
                return Err(wrong(&format!(
                    "a whole number without quotes, such as {key} = {}",
                    s.trim()
                )));
            }
            (Kind::WholeNumber, _) => return Err(wrong("a whole number, such as 50")),
            (Kind::Table, _) => return Err(wrong(&format!("a table, such as [{key}]"))),
            (Kind::TextList, toml::Value::Array(items)) => {
                if let Some((i, item)) = items.iter().enumerate().find(|(_, i)| !i.is_str()) {
                    return Err(ctx.err(
                        place(key),
                        format!(
                            "entry {} must be text in quotes, such as \"195\", not {}",
                            i + 1,
                            describe(item)
                        ),
                    ));
                }
            }
            (Kind::TextList, _) => {
                return Err(wrong(
                    "a list of texts in quotes, such as [\"56\", \"195\"]",
                ));
            }
            (Kind::TableList, toml::Value::Array(items)) if items.iter().all(|i| i.is_table()) => {}
            (Kind::TableList, _) => {
                return Err(wrong(&format!("a list of tables, each written [[{key}]]")));
            }
        }
    }
    Ok(())
}

/// What the policy's `[chains]` table says: names for display (over the built-in ones), and the
/// address format of the chains whose format the merchant gives.
struct ChainTable {
    names: crate::display::ChainNames,
    formats: std::collections::HashMap<u128, Format>,
}

/// The policy's `[chains]` table: `195 = "TRON"` names a chain; `195 = { name = "TRON", format
/// = "tron" }` also requires its transactions' addresses in that format.
fn chain_table(
    ctx: &Ctx<'_>,
    table: BTreeMap<String, toml::Value>,
) -> Result<ChainTable, PolicyError> {
    let mut extra = Vec::new();
    let mut formats = std::collections::HashMap::new();
    for (id, v) in table {
        let place = Some(format!("[chains]: key `{id}`"));
        if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ctx.err(place, "a chainId must not be empty or have spaces"));
        }
        let name_of = |v: Option<&toml::Value>| match v.and_then(|v| v.as_str()).map(str::trim) {
            Some(name) if !name.is_empty() && !name.chars().any(char::is_control) => {
                Ok(name.to_string())
            }
            _ => Err(ctx.err(
                place.clone(),
                format!(
                    "must be the chain's name in quotes, such as \"TRON\", or a table such as \
                     {{ name = \"TRON\", format = \"tron\" }}, not {}",
                    v.map_or_else(|| "a table without `name`".to_string(), describe)
                ),
            )),
        };
        let name = match &v {
            toml::Value::Table(t) => {
                if let Some(k) = t.keys().find(|k| !matches!(k.as_str(), "name" | "format")) {
                    return Err(ctx.err(
                        place,
                        format!("unknown key `{k}`: a chain has a `name` and a `format`"),
                    ));
                }
                let name = name_of(t.get("name"))?;
                if let Some(f) = t.get("format") {
                    let format: Format = f
                        .as_str()
                        .ok_or_else(|| format!("format must be text, not {}", describe(f)))
                        .and_then(str::parse)
                        .map_err(|m| ctx.err(place.clone(), m))?;
                    if let Some(p) = chain_problem(&id) {
                        return Err(ctx.err(place, format!("chain id {id:?} {p}")));
                    }
                    let no = id
                        .parse::<u128>()
                        .map_err(|_| ctx.err(place.clone(), format!("{id:?} is not a chain id")))?;
                    formats.insert(no, format);
                }
                name
            }
            other => name_of(Some(other))?,
        };
        extra.push((id, name));
    }
    Ok(ChainTable {
        names: crate::display::ChainNames::with(extra),
        formats,
    })
}

/// Validates policy `text` read from `file`; `read_list` reads list files (relative to `file`).
/// Each section has its own validator; the first error wins, in the order of the file's parts:
/// `default`, `[lists]`, each `[[rule]]`, `[guard]`, `[chains]`.
pub fn parse(
    text: &str,
    file: &Path,
    read_list: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Policy, PolicyError> {
    let ctx = Ctx { file };
    let top: toml::Table = toml::from_str(text).map_err(|e| ctx.err(None, e.to_string()))?;
    check_kinds(&ctx, &top, TOP_KINDS, |k| Some(format!("key `{k}`")))?;
    // Read again from the text, not from `top`: the lists keep their positions (`Spanned`).
    let raw: RawPolicy = toml::from_str(text).map_err(|e| ctx.err(None, e.to_string()))?;
    let mut digest = Sha256::new();
    digest.update(text.as_bytes());
    let default = default_action(&ctx, raw.default.as_deref())?;
    let lists = address_lists(&ctx, text, &raw.lists, read_list, &mut digest)?;
    // Read before the rules (whose addresses must fit their chains' formats); its own errors
    // are reported after theirs, in the order of the file's parts.
    let chain_table = chain_table(&ctx, raw.chains);
    let formats = chain_table
        .as_ref()
        .map(|t| t.formats.clone())
        .unwrap_or_default();
    let addresses = Addresses {
        ctx: &ctx,
        lists: &lists,
        formats: &formats,
    };
    let mut names = HashSet::new();
    let mut rules = Vec::with_capacity(raw.rule.len());
    for (i, table) in raw.rule.into_iter().enumerate() {
        rules.push(rule(&ctx, i, table, &mut names, &addresses)?);
    }
    let guard = raw.guard.map(|t| guard(&ctx, t)).transpose()?;
    let chains = chain_table?;
    Ok(Policy {
        chains: chains.names,
        formats: chains.formats,
        source: file.to_owned(),
        default,
        rules,
        guard,
        lists,
        sha256: hex(&digest.finish()),
    })
}

/// `default`: what happens when no rule matches (hold when not written).
fn default_action(ctx: &Ctx<'_>, text: Option<&str>) -> Result<Action, PolicyError> {
    match text {
        None => Ok(Action::Hold),
        Some(s) => s
            .parse()
            .map_err(|e: UnknownAction| ctx.err(Some("key `default`".into()), e.to_string())),
    }
}

/// `[lists]`: each named list, inline or from a file (whose text goes into `digest`).
fn address_lists(
    ctx: &Ctx<'_>,
    text: &str,
    raw: &BTreeMap<String, toml::Spanned<toml::Value>>,
    read_list: &dyn Fn(&Path) -> std::io::Result<String>,
    digest: &mut Sha256,
) -> Result<BTreeMap<String, Arc<AddressSet>>, PolicyError> {
    let dir = ctx.file.parent().unwrap_or(Path::new("."));
    let entry_lines = toml::from_str::<ListLines>(text).unwrap_or_default();
    let mut lists: BTreeMap<String, Arc<AddressSet>> = BTreeMap::new();
    for (name, spanned) in raw {
        let place = Some(format!("list {name:?}"));
        // Each entry with where it was written, for errors.
        let entries: Vec<(String, String)> = match spanned.get_ref() {
            toml::Value::Array(items) => {
                let lines = entry_lines.lists.get(name).map(|l| l.0.as_slice());
                inline_entries(ctx, text, place.clone(), items, lines)?
            }
            toml::Value::Table(t) => {
                let f = match (t.get("file").and_then(|f| f.as_str()), t.len()) {
                    (Some(f), 1) => f,
                    _ => {
                        return Err(ctx.err(
                            place,
                            "must be an array of addresses or { file = \"path\" }",
                        ));
                    }
                };
                let path = dir.join(f);
                let content = read_list(&path).map_err(|e| {
                    ctx.err(
                        place.clone(),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                digest.update(b"\0list\0");
                digest.update(name.as_bytes());
                digest.update(b"\0");
                digest.update(content.as_bytes());
                file_entries(&path, &content)
            }
            _ => {
                return Err(ctx.err(
                    place,
                    "must be an array of addresses or { file = \"path\" }",
                ));
            }
        };
        if entries.is_empty() {
            return Err(ctx.err(place, "is empty"));
        }
        let mut set = AddressSet::default();
        for (e, at) in &entries {
            if let Some(problem) = address_problem(e, None) {
                return Err(ctx.err(
                    Some(format!("list {name:?}, {at}")),
                    format!("entry {e:?} {problem}; it could never match a transaction"),
                ));
            }
            set.insert(e);
        }
        lists.insert(name.clone(), Arc::new(set));
    }
    Ok(lists)
}

/// The entries of an inline list, each with its line (or its position when the line is not
/// known).
fn inline_entries(
    ctx: &Ctx<'_>,
    text: &str,
    place: Option<String>,
    items: &[toml::Value],
    lines: Option<&[usize]>,
) -> Result<Vec<(String, String)>, PolicyError> {
    let mut text_lines = Lines::new(text);
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = match lines.and_then(|l| l.get(i)) {
                Some(&off) => format!("line {}", text_lines.line_of(off)),
                None => format!("entry {}", i + 1),
            };
            item.as_str()
                .map(|a| (a.to_owned(), at.clone()))
                .ok_or_else(|| {
                    ctx.err(place.clone(), format!("{at}: entry {item} is not a string"))
                })
        })
        .collect()
}

/// The entries of a list file (one address a line, `#` comments), each with its file and line.
fn file_entries(path: &Path, content: &str) -> Vec<(String, String)> {
    content
        .lines()
        .enumerate()
        .map(|(i, l)| {
            (
                l.split('#').next().unwrap_or("").trim().to_owned(),
                format!("{} line {}", path.display(), i + 1),
            )
        })
        .filter(|(l, _)| !l.is_empty())
        .collect()
}

/// What a rule's `from` and `to` may name: addresses, and `@lists` of the policy.
struct Addresses<'a> {
    ctx: &'a Ctx<'a>,
    lists: &'a BTreeMap<String, Arc<AddressSet>>,
    /// The formats the `[chains]` table gives.
    formats: &'a std::collections::HashMap<u128, Format>,
}

impl Addresses<'_> {
    /// Why `addr` can never match on any of `chains` (any chain when `None`), if it cannot: an
    /// address a rule names must fit the format of one of the rule's chains, when the
    /// `[chains]` table gives each of them one (a `0x…` entry in a rule for a chain of
    /// format "tron" never matches), and a list it uses must hold at least one such address.
    fn unusable(&self, addr: &str, chains: Option<&[String]>) -> Option<String> {
        if let Some(p) = address_problem(addr, None) {
            return Some(p);
        }
        let cs = chains?;
        let problems: Vec<String> = cs
            .iter()
            .filter_map(|c| {
                let format = c.parse::<u128>().ok().and_then(|n| self.formats.get(&n));
                address_problem(addr, format.copied())
            })
            .collect();
        (problems.len() == cs.len())
            .then(|| problems.into_iter().next().unwrap_or_default())
            .map(|p| format!("{p} (the rule's chains: {})", cs.join(", ")))
    }

    /// The matcher of rule `rule`'s key `key` (`from` or `to`) with `items`.
    fn matcher(
        &self,
        rule: &str,
        key: &str,
        items: &[String],
        chains: Option<&[String]>,
    ) -> Result<AddressMatcher, PolicyError> {
        let ctx = self.ctx;
        if items.is_empty() {
            return Err(ctx.err(
                rule_place(rule, key),
                "is empty (leave it out to match any address)",
            ));
        }
        let mut set = AddressMatcher::default();
        for item in items {
            if let Some(list) = item.strip_prefix('@') {
                let l = self.lists.get(list).ok_or_else(|| {
                    ctx.err(rule_place(rule, key), format!("unknown list @{list}"))
                })?;
                if chains.is_some() && !l.iter().any(|a| self.unusable(a, chains).is_none()) {
                    return Err(ctx.err(
                        rule_place(rule, key),
                        format!(
                            "no address of list @{list} can match on the rule's chains ({})",
                            chains.unwrap_or_default().join(", ")
                        ),
                    ));
                }
                set.add_list(list, l.clone());
            } else if let Some(problem) = self.unusable(item, chains) {
                return Err(ctx.err(
                    rule_place(rule, key),
                    format!("address {item:?} {problem}; it could never match a transaction"),
                ));
            } else {
                set.insert(item);
            }
        }
        Ok(set)
    }
}

/// One `[[rule]]` (the `i`th, from 0); `names` are those of the rules before it.
fn rule(
    ctx: &Ctx<'_>,
    i: usize,
    table: toml::Table,
    names: &mut HashSet<String>,
    addresses: &Addresses<'_>,
) -> Result<Rule, PolicyError> {
    let label = table
        .get("name")
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("#{}", i + 1));
    check_kinds(ctx, &table, RULE_KINDS, |k| rule_place(&label, k))?;
    let r: RawRule = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| {
            ctx.err(Some(format!("rule {label:?}")), e.message().to_string())
        })?;
    let name = r
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ctx.err(Some(format!("rule {label}: key `name`")), "is required"))?;
    if name.starts_with('(') {
        return Err(ctx.err(
            rule_place(&name, "name"),
            "must not start with '(' (reserved)",
        ));
    }
    // The ledger stores a NUL as U+FFFD (PostgreSQL's text cannot hold it): a name with either
    // would count its approvals under another name, outside its own window.
    if name.chars().any(|c| c.is_control() || c == '\u{fffd}') {
        return Err(ctx.err(
            rule_place(&name, "name"),
            "must not contain control characters or U+FFFD",
        ));
    }
    // Every decision records its rule, and the ledger indexes decisions by rule (PostgreSQL's
    // index holds keys up to ~2.7 KB): a name is a label, not a text.
    if name.len() > MAX_RULE_NAME {
        return Err(ctx.err(
            rule_place(&name, "name"),
            format!("is {} bytes long; at most {MAX_RULE_NAME}", name.len()),
        ));
    }
    if !names.insert(name.clone()) {
        return Err(ctx.err(rule_place(&name, "name"), "is used by an earlier rule"));
    }
    let action: Action = r
        .action
        .as_deref()
        .ok_or_else(|| ctx.err(rule_place(&name, "action"), "is required"))?
        .parse()
        .map_err(|e: UnknownAction| ctx.err(rule_place(&name, "action"), e.to_string()))?;
    let chains = rule_chains(ctx, &name, r.chains)?;
    let from = r
        .from
        .as_deref()
        .map(|f| addresses.matcher(&name, "from", f, chains.as_deref()))
        .transpose()?;
    let to =
        r.to.as_deref()
            .map(|t| addresses.matcher(&name, "to", t, chains.as_deref()))
            .transpose()?;
    let (min_amount, max_amount) =
        amount_range(ctx, &name, r.min_amount.as_ref(), r.max_amount.as_ref())?;
    let limit = window_limit(ctx, &name, r.window, r.max_total.as_ref(), r.max_count)?;
    if limit.is_some() && action != Action::Approve {
        return Err(ctx.err(
            rule_place(&name, "window"),
            "window limits count approvals: only approve rules may have them",
        ));
    }
    let chains = chains
        .map(|ids| {
            ids.iter()
                .map(|id| {
                    id.parse::<u128>().map_err(|_| {
                        ctx.err(
                            rule_place(&name, "chains"),
                            format!("{id:?} is not a chain id"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    Ok(Rule {
        name,
        action,
        chains,
        from,
        to,
        min_amount,
        max_amount,
        limit,
    })
}

/// A rule's `chains`: left out (any chain) or chain ids that can occur.
fn rule_chains(
    ctx: &Ctx<'_>,
    name: &str,
    chains: Option<Vec<String>>,
) -> Result<Option<Vec<String>>, PolicyError> {
    if chains.as_ref().is_some_and(Vec::is_empty) {
        return Err(ctx.err(
            rule_place(name, "chains"),
            "is empty (leave it out to match any chain)",
        ));
    }
    for c in chains.iter().flatten() {
        if let Some(problem) = chain_problem(c) {
            return Err(ctx.err(
                rule_place(name, "chains"),
                format!("chain id {c:?} {problem}; it could never match a transaction"),
            ));
        }
    }
    Ok(chains)
}

/// A rule's `min_amount` and `max_amount`, in that order.
fn amount_range(
    ctx: &Ctx<'_>,
    name: &str,
    min: Option<&toml::Value>,
    max: Option<&toml::Value>,
) -> Result<(Option<Decimal>, Option<Decimal>), PolicyError> {
    let min = min
        .map(|v| amount(ctx, rule_place(name, "min_amount"), v))
        .transpose()?;
    let max = max
        .map(|v| amount(ctx, rule_place(name, "max_amount"), v))
        .transpose()?;
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        return Err(ctx.err(
            rule_place(name, "min_amount"),
            format!("{lo} is above max_amount {hi}"),
        ));
    }
    Ok((min, max))
}

/// A rule's `window` with its `max_total` and `max_count`: all or nothing.
fn window_limit(
    ctx: &Ctx<'_>,
    name: &str,
    window: Option<String>,
    max_total: Option<&toml::Value>,
    max_count: Option<i64>,
) -> Result<Option<WindowLimit>, PolicyError> {
    let max_total = max_total
        .map(|v| amount(ctx, rule_place(name, "max_total"), v))
        .transpose()?;
    let max_count = match max_count {
        Some(n) if n < 1 => {
            return Err(ctx.err(rule_place(name, "max_count"), "must be at least 1"));
        }
        other => other.and_then(|n| u64::try_from(n).ok()),
    };
    match (window, max_total.is_some() || max_count.is_some()) {
        (None, true) => {
            let key = if max_total.is_some() {
                "max_total"
            } else {
                "max_count"
            };
            Err(ctx.err(rule_place(name, key), "needs a `window` to count over"))
        }
        (Some(_), false) => Err(ctx.err(
            rule_place(name, "window"),
            "is set but neither max_total nor max_count is",
        )),
        (Some(w), true) => Ok(Some(WindowLimit {
            window: duration(ctx, rule_place(name, "window"), &w)?,
            max_total,
            max_count,
        })),
        (None, false) => Ok(None),
    }
}

/// `[guard]`: the cap over all approvals.
fn guard(ctx: &Ctx<'_>, table: toml::Table) -> Result<Guard, PolicyError> {
    check_kinds(ctx, &table, GUARD_KINDS, |k| {
        Some(format!("[guard]: key `{k}`"))
    })?;
    let g: RawGuard = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ctx.err(Some("[guard]".into()), e.message().to_string()))?;
    let window = g
        .window
        .ok_or_else(|| ctx.err(Some("[guard]: key `window`".into()), "is required"))?;
    let max = g
        .max_approvals
        .ok_or_else(|| ctx.err(Some("[guard]: key `max_approvals`".into()), "is required"))?;
    if max < 0 {
        return Err(ctx.err(
            Some("[guard]: key `max_approvals`".into()),
            "must not be negative",
        ));
    }
    Ok(Guard {
        window: duration(ctx, Some("[guard]: key `window`".into()), &window)?,
        max_approvals: u64::try_from(max).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::Lines;

    #[test]
    fn lines_counted_on_from_the_last_offset_match_a_count_from_the_start() {
        let text = "a\nbb\n\nccc\nd";
        let from_start = |off: usize| text[..off].matches('\n').count() + 1;
        let mut lines = Lines::new(text);
        // In order, as a list's entries come; then back to the start, and past the end.
        for off in [0, 1, 2, 5, 6, 7, 10, 11, 3, 0, 99] {
            assert_eq!(
                lines.line_of(off),
                from_start(off.min(text.len())),
                "offset {off}"
            );
        }
    }
}
