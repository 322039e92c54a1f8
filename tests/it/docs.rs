//! The documentation holds together (issue 23): the README stays a front door with a line in its
//! map for every page of `docs/`, each page opens with its title and what it covers, and every
//! relative link in the Markdown names a file, and a heading, that exist.

use std::path::{Path, PathBuf};

/// The README's length limit, from issue 23.
const README_MAX_LINES: usize = 250;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The pages of `docs/`, in name order.
fn docs_pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages
}

/// Every Markdown file a reader follows links through.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![
        repo().join("README.md"),
        repo().join("systemd/README.md"),
        repo().join("deploy/README.md"),
    ];
    files.extend(docs_pages());
    files
}

/// The lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The anchor a heading gets: lower case, spaces as hyphens, punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .trim_start_matches('#')
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// The targets of the `[text](target)` links on a line.
fn link_targets(line: &str) -> Vec<&str> {
    line.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &line[at + 2..];
            rest.find(')').map(|end| &rest[..end])
        })
        .collect()
}

#[test]
fn every_relative_link_in_the_docs_names_a_file_and_a_heading_that_exist() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = read(&file);
        for line in prose(&text) {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
                let dest = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap().join(path)
                };
                if !dest.exists() {
                    broken.push(format!("{}: {target}: no such file", file.display()));
                    continue;
                }
                if !anchor.is_empty() {
                    let dest_text = read(&dest);
                    let found = prose(&dest_text)
                        .iter()
                        .any(|l| l.starts_with('#') && slug(l) == anchor);
                    if !found {
                        broken.push(format!("{}: {target}: no such heading", file.display()));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
    assert!(
        checked > 30,
        "only {checked} links found: is the scan still reading them?"
    );
}

#[test]
fn the_readme_is_a_front_door_whose_map_has_a_line_for_every_docs_page() {
    let readme = read(&repo().join("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines; the rest belongs in docs/"
    );
    for page in docs_pages() {
        let name = page.file_name().unwrap().to_str().unwrap();
        assert!(
            readme.contains(&format!("](docs/{name})")),
            "README.md's map has no line for docs/{name}"
        );
        let text = read(&page);
        let mut head = text.lines();
        let title = head.next().unwrap_or_default();
        assert!(
            title.starts_with("# ") && title.len() > 2,
            "docs/{name} opens with {title:?}, not a `# Title` line"
        );
        assert_eq!(
            head.next(),
            Some(""),
            "docs/{name}: a blank line after the title"
        );
        assert!(
            head.next().is_some_and(|l| !l.is_empty()),
            "docs/{name}: no sentence saying what it covers after the title"
        );
    }
}

#[test]
fn a_heading_anchor_is_the_heading_in_lower_case_with_hyphens() {
    assert_eq!(slug("## Upgrading a pair"), "upgrading-a-pair");
    assert_eq!(
        slug("# Running a pair (high availability)"),
        "running-a-pair-high-availability"
    );
    assert_eq!(slug("## Commands"), "commands");
}
