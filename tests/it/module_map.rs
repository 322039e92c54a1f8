//! The map of who uses whom in `src/lib.rs` is the code's (issue 23): every `crate::X` path in a
//! module's files (its `use` lines and paths written inline, comments and strings aside) names a
//! dependency the table lists for it, every dependency the table lists is used, and each
//! module's dependencies are listed before it, so the table still shows there is no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// One line of the table: a module and what it uses; `None` for "any of the above" (`cli`).
struct Row {
    module: String,
    uses: Option<BTreeSet<String>>,
}

/// The rows of the `text` block under "# Who uses whom" in `lib.rs`'s doc comment, in order.
fn table(lib_rs: &str) -> Vec<Row> {
    let doc: Vec<&str> = lib_rs
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let heading = doc
        .iter()
        .position(|l| *l == "# Who uses whom")
        .expect("lib.rs has a \"# Who uses whom\" section");
    let open = heading
        + doc[heading..]
            .iter()
            .position(|l| *l == "```text")
            .expect("the section has a ```text block");
    let mut rows: Vec<Row> = Vec::new();
    for line in doc[open + 1..].iter().take_while(|l| **l != "```") {
        let words = |s: &str| -> BTreeSet<String> {
            s.split([',', ' '])
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect()
        };
        if let Some(names) = line.strip_suffix("(nothing)") {
            for module in words(names) {
                rows.push(Row {
                    module,
                    uses: Some(BTreeSet::new()),
                });
            }
        } else if line.starts_with(' ') {
            let last = rows.last_mut().expect("a continuation line follows a row");
            last.uses
                .as_mut()
                .expect("a continuation of a row with a list")
                .extend(words(line));
        } else {
            let (module, rest) = line.split_once(' ').unwrap_or((line, ""));
            let rest = rest.trim();
            rows.push(Row {
                module: module.to_owned(),
                uses: (!rest.starts_with('(')).then(|| words(rest)),
            });
        }
    }
    rows
}

/// Rust source with comments removed and string and character literals emptied, so that only
/// code is searched for paths.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            while i < b.len() {
                if text[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if text[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_hashes(rest).filter(|_| i == 0 || !ident(b[i - 1]))
        {
            // A raw string: r"…", r#"…"#, br"…".
            let open = rest.find('"').expect("a raw string opens") + 1;
            let close = format!("\"{}", "#".repeat(hashes));
            i += open + rest[open..].find(&close).expect("a raw string closes") + close.len();
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            // An escaped character literal: '\n', '\'', '\u{..}'.
            i += 3
                + text[i + 3..]
                    .find('\'')
                    .expect("a character literal closes")
                + 1;
            out.push_str("' '");
        } else if b[i] == b'\'' && text[i + 1..].chars().nth(1) == Some('\'') {
            let c = text[i + 1..].chars().next().unwrap_or(' ');
            i += 2 + c.len_utf8();
            out.push_str("' '");
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The number of `#`s of the raw string `rest` starts with (`r"`, `r#"`, `br"`…), if it does.
fn raw_string_hashes(rest: &str) -> Option<usize> {
    let after_r = rest.strip_prefix('b').unwrap_or(rest).strip_prefix('r')?;
    let hashes = after_r.len() - after_r.trim_start_matches('#').len();
    after_r[hashes..].starts_with('"').then_some(hashes)
}

/// The first segment of every `crate::…` path in `code` (each member of a `crate::{…}` group).
fn crate_paths(code: &str) -> BTreeSet<String> {
    fn first_segment(s: &str) -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    }
    let mut found = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let start = from + at;
        from = start + "crate::".len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = code[from..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut member = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(first_segment(&member));
                        member.clear();
                        continue;
                    }
                    _ => {}
                }
                member.push(c);
            }
            found.insert(first_segment(&member));
        } else {
            found.insert(first_segment(rest));
        }
    }
    found.remove("");
    found.remove("self");
    found
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// Each top module of the library (`src/foo.rs` with `src/foo/…`, its test files aside) and, for
/// each module it uses, the first file of it that does.
fn modules_in_code() -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let top = |p: &Path| -> String {
        let rel = p.strip_prefix(src()).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        first.trim_end_matches(".rs").to_owned()
    };
    let mut modules: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for file in &files {
        let module = top(file);
        // A module's test files may use any module (the policy's semantics tests parse items as
        // the client does): the table is the code's graph, not its tests'.
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if module == "lib" || module == "main" || name == "tests.rs" || name.ends_with("_tests.rs")
        {
            continue;
        }
        modules.entry(module.clone()).or_default();
        let text = std::fs::read_to_string(file).unwrap();
        for used in crate_paths(&code_only(&text)) {
            if used != module {
                let rel = file.strip_prefix(src().parent().unwrap()).unwrap();
                modules
                    .get_mut(&module)
                    .unwrap()
                    .entry(used)
                    .or_insert_with(|| rel.to_owned());
            }
        }
    }
    // A `crate::X` whose X is no module is an item of `lib.rs` itself, not a dependency.
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    for uses in modules.values_mut() {
        uses.retain(|used, _| names.contains(used));
    }
    modules
}

#[test]
fn the_who_uses_whom_table_in_lib_rs_is_what_the_code_uses() {
    let rows = table(&std::fs::read_to_string(src().join("lib.rs")).unwrap());
    let code = modules_in_code();
    let mut problems = Vec::new();
    let mut listed_before: BTreeSet<String> = BTreeSet::new();
    for row in &rows {
        let m = &row.module;
        let Some(used) = code.get(m) else {
            problems.push(format!(
                "the table lists `{m}`, which is no module under src/"
            ));
            continue;
        };
        if let Some(listed) = &row.uses {
            for (dep, file) in used {
                if !listed.contains(dep) {
                    problems.push(format!(
                        "`{m}` uses `{dep}` ({}), which its line in the table lacks",
                        file.display()
                    ));
                }
            }
            for dep in listed.difference(&used.keys().cloned().collect()) {
                problems.push(format!(
                    "the table says `{m}` uses `{dep}`, but no `crate::{dep}` path is in src/{m}"
                ));
            }
        }
        for dep in used.keys() {
            if !listed_before.contains(dep) && row.uses.as_ref().is_some_and(|l| l.contains(dep)) {
                problems.push(format!(
                    "`{m}` uses `{dep}`, which the table lists after it: the order no longer \
                     shows there is no cycle"
                ));
            }
        }
        listed_before.insert(m.clone());
    }
    for m in code.keys() {
        if !rows.iter().any(|r| &r.module == m) {
            problems.push(format!(
                "module `{m}` (src/{m}.rs) has no line in the table"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "src/lib.rs's \"Who uses whom\" disagrees with the code:\n{}",
        problems.join("\n")
    );
}

#[test]
fn crate_paths_are_read_from_groups_and_inline_code_never_from_comments_or_strings() {
    let code = r##"
        use crate::{alpha::A, beta, gamma::{x, y::Z}, self};
        use crate::delta::D; // crate::comment_line
        /* crate::comment_block /* nested crate::deeper */ */
        let s = "crate::in_string \" crate::after_escape";
        let r = r#"crate::in_raw "quoted" string"#;
        let c = '"'; let l: &'static str = "x";
        pub(crate) fn f() { crate::epsilon::g(); $crate::zeta::h(); notcrate::eta(); }
    "##;
    let found: Vec<String> = crate_paths(&code_only(code)).into_iter().collect();
    assert_eq!(
        found,
        ["alpha", "beta", "delta", "epsilon", "gamma", "zeta"],
        "{}",
        code_only(code)
    );
}

#[test]
fn the_table_is_read_with_its_nothing_line_continuations_and_any_of_the_above() {
    let lib = "//! # Who uses whom\n//!\n//! ```text\n//! a, b   (nothing)\n\
               //! c      a\n//!        b\n//! cli    (the commands: any of the above)\n//! ```\n";
    let rows = table(lib);
    let shown: Vec<(String, Option<Vec<String>>)> = rows
        .into_iter()
        .map(|r| (r.module, r.uses.map(|u| u.into_iter().collect())))
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        shown,
        vec![
            ("a".into(), Some(vec![])),
            ("b".into(), Some(vec![])),
            ("c".into(), Some(s(&["a", "b"]))),
            ("cli".into(), None),
        ]
    );
}

/// Every event kind an SQL text names (`kind = '…'`: the mode trigger, the mode and re-send
/// look-ups) is an [`EventKind`](cosigner::ledger::EventKind) the code writes: a renamed kind
/// would otherwise leave a query that silently matches nothing.
#[test]
fn every_event_kind_named_in_sql_text_is_one_the_code_writes() {
    let known: BTreeSet<&str> = cosigner::ledger::EventKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut named = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("kind = '") {
            let rest = &text[at + "kind = '".len()..];
            let name = &rest[..rest.find('\'').unwrap()];
            assert!(
                known.contains(name),
                "{} names the event kind {name:?}, which no EventKind is",
                file.display()
            );
            named += 1;
        }
    }
    assert!(
        named >= 4,
        "the mode trigger and look-ups name their kinds ({named} found)"
    );
}

/// The variant (or struct) an `#[error(…)]` attribute at `at` describes: the text from the end
/// of the attribute to the end of its fields.
fn fields_after(text: &str, at: usize) -> (&str, &str) {
    let attr_end = at + text[at..].find(")]\n").expect("an #[error] attribute ends") + 2;
    let message = &text[at..attr_end];
    let rest = text[attr_end..].trim_start();
    let header = rest.lines().next().unwrap_or("");
    let (open, close) = match (header.find('{'), header.find('(')) {
        (Some(b), Some(p)) if p < b => ('(', ')'),
        (Some(_), _) => ('{', '}'),
        (None, Some(_)) => ('(', ')'),
        (None, None) => return (message, header),
    };
    let mut depth = 0;
    for (i, c) in rest.char_indices() {
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return (message, &rest[..=i]);
            }
        }
    }
    (message, rest)
}

/// An error prints its inner error or returns it as `source`, never both (issue 23): a cause
/// said twice made every edge de-duplicate. thiserror makes a field the source when it is named
/// `source` or marked `#[source]`/`#[from]`; none of them may be in the message.
#[test]
fn no_error_both_prints_its_inner_error_and_returns_it_as_its_source() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    rust_files(&src().join("../sandbox/src"), &mut files);
    let mut checked = 0;
    let mut both = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("#[error(") {
            let (message, fields) = fields_after(&text, at);
            if message.contains("transparent") {
                continue;
            }
            checked += 1;
            let tuple = fields
                .find('(')
                .is_some_and(|p| fields.find('{').is_none_or(|b| p < b));
            let source = if fields.contains("#[source]") || fields.contains("#[from]") {
                if tuple {
                    Some("0".to_owned())
                } else {
                    let after = &fields[fields
                        .find("#[source]")
                        .or_else(|| fields.find("#[from]"))
                        .unwrap()..];
                    after
                        .lines()
                        .skip(1)
                        .map(str::trim)
                        .find(|l| !l.starts_with("///"))
                        .and_then(|l| l.split(':').next())
                        .map(str::to_owned)
                }
            } else if !tuple && fields.contains(" source:") {
                Some("source".to_owned())
            } else {
                None
            };
            if let Some(field) = source
                && (message.contains(&format!("{{{field}}}"))
                    || message.contains(&format!("{{{field}:"))
                    || message.contains(&format!(".{field}")))
            {
                both.push(format!("{}: {}", file.display(), message.trim()));
            }
        }
    }
    assert!(
        checked > 50,
        "the #[error] attributes are found ({checked})"
    );
    assert!(both.is_empty(), "printed and returned as source: {both:#?}");
}
