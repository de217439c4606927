//! The documentation cannot drift from the code.
//!
//! - Every example in `config/` loads, exactly as `cutover run` would load it.
//! - Every ```toml block in `README.md` and `docs/*.md` that contains
//!   `[[routes]]` is a whole config and passes `cutover::config::parse`;
//!   every other ```toml block (a fragment) is at least valid TOML.
//! - The key tables of `docs/configuration.md` and the config parser agree,
//!   both ways: a documented key is never rejected as unknown, and every key
//!   the parser accepts is documented. The parser's own list of valid keys
//!   is read from its "unknown field `x`, expected one of ..." error, so this
//!   needs nothing beyond the public API.
//! - The `cutover check` output pasted in the README is what `check` prints
//!   today.
//!
//! A failure names the file and line to fix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cutover::config;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `README.md` and every `docs/*.md`, as paths relative to the crate root.
fn doc_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("readable docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| format!("docs/{}", path.file_name().unwrap().to_string_lossy()))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// A fenced code block of a Markdown file.
struct Block {
    /// The info string after the opening fence (`toml`, `sh`, ...).
    info: String,
    /// 1-based line of the block's first content line in its file.
    line: usize,
    /// The content, without the fences.
    text: String,
}

/// The fenced (```) code blocks of `markdown`, in order.
fn code_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, Block)> = None;
    for (index, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let ticks = trimmed.bytes().take_while(|&b| b == b'`').count();
        match &mut open {
            None if ticks >= 3 => {
                let info = trimmed[ticks..].trim().to_string();
                open = Some((ticks, Block { info, line: index + 2, text: String::new() }));
            }
            None => {}
            Some((fence, _)) if ticks >= *fence && trimmed[ticks..].trim().is_empty() => {
                blocks.push(open.take().unwrap().1);
            }
            Some((_, block)) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
        }
    }
    if let Some((_, block)) = open {
        panic!("code block opened before line {} is never closed", block.line);
    }
    blocks
}

#[test]
fn every_example_config_loads() {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(root().join("config")).expect("config/ exists") {
        let path = entry.expect("readable config/ entry").path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            if let Err(e) = config::load(&path) {
                panic!("example config does not load: {e}");
            }
            checked.push(path);
        }
    }
    assert!(!checked.is_empty(), "no config/*.toml found");
}

#[test]
fn toml_blocks_in_the_docs_are_valid() {
    let mut failures = Vec::new();
    let mut whole_configs = 0;
    for file in doc_files() {
        for block in code_blocks(&read(&file)).into_iter().filter(|b| b.info == "toml") {
            if block.text.contains("[[routes]]") {
                whole_configs += 1;
                // Relative paths in the block resolve against the doc's directory;
                // nothing is opened, so any directory will do.
                let name = root().join(&file);
                if let Err(e) = config::parse(&name, &block.text) {
                    let at = match e.position {
                        Some((line, col)) => format!("{file}:{}:{col}", block.line + line - 1),
                        None => format!("{file}: block at line {}", block.line),
                    };
                    failures.push(format!("{at}: {}", e.message));
                }
            } else if let Err(e) = toml::from_str::<toml::Table>(&block.text) {
                failures.push(format!("{file}: toml block at line {} is not valid TOML: {}", block.line, e.message()));
            }
        }
    }
    assert!(failures.is_empty(), "invalid config examples in the docs:\n{}", failures.join("\n"));
    assert!(whole_configs > 0, "no ```toml block with [[routes]] found: is the block parser broken?");
}

/// A bare pool and route, so that the table under test is the only problem.
const POOL: &str = "[pools.p]\nbackends = [\"127.0.0.1:1\"]\n";
const ROUTE: &str = "[[routes]]\nname = \"r\"\nsplit = { p = 1 }\n";

/// A config with `key = {}` in the table that `section` (a heading of
/// docs/configuration.md) names. An inline table is the wrong type for every
/// key, so a known key fails validation in some other way, while an unknown
/// key fails as "unknown field".
fn with_key(section: &str, key: &str) -> String {
    let entry = format!("{key} = {{}}\n");
    match section {
        "top level" => format!("{entry}{POOL}{ROUTE}"),
        "[server]" => format!("[server]\n{entry}{POOL}{ROUTE}"),
        "[server.tls]" => format!("[server.tls]\n{entry}{POOL}{ROUTE}"),
        "[admin]" => format!("[admin]\n{entry}{POOL}{ROUTE}"),
        "[access_log]" => format!("[access_log]\nto = \"stdout\"\n{entry}{POOL}{ROUTE}"),
        "[pools.NAME]" => format!("[pools.p]\n{entry}{ROUTE}"),
        "[pools.NAME.health]" => format!("{POOL}[pools.p.health]\n{entry}{ROUTE}"),
        "[pools.NAME.guard]" => format!("{POOL}[pools.p.guard]\n{entry}{ROUTE}"),
        "[[routes]]" => format!("{POOL}[[routes]]\n{entry}"),
        "[[routes.force]]" => format!("{POOL}{ROUTE}[[routes.force]]\n{entry}"),
        "[routes.rollout]" => format!("{POOL}{ROUTE}[routes.rollout]\n{entry}"),
        "[routes.mirror]" => format!("{POOL}{ROUTE}[routes.mirror]\n{entry}"),
        "[fleet]" => format!("{POOL}{ROUTE}[fleet]\n{entry}"),
        other => panic!(
            "docs/configuration.md has a key table under {other:?}, which tests/it/docs.rs does not know; \
             teach `with_key` how to build a config for it"
        ),
    }
}

/// The keys the parser accepts in `section`, read from its error for an
/// unknown key (serde lists every valid field).
fn accepted_keys(section: &str) -> BTreeSet<String> {
    const PROBE: &str = "no_such_key_for_docs_test";
    let err =
        config::parse(Path::new("probe.toml"), &with_key(section, PROBE)).expect_err("an unknown key must be rejected");
    assert!(
        err.message.contains(&format!("unknown field `{PROBE}`")),
        "probing {section}: expected an unknown-field error, got: {}",
        err.message
    );
    let expected = err
        .message
        .split_once("expected")
        .unwrap_or_else(|| panic!("probing {section}: no list of valid keys in: {}", err.message))
        .1;
    let keys: BTreeSet<String> = expected.split('`').skip(1).step_by(2).map(str::to_string).collect();
    assert!(!keys.is_empty(), "probing {section}: no keys in: {}", err.message);
    keys
}

/// The key tables of docs/configuration.md: section heading → (key, line).
/// A key table is a Markdown table whose first header cell is `key`; the
/// section is the first backticked `[...]` in the heading above it.
fn documented_keys() -> BTreeMap<String, Vec<(String, usize)>> {
    let text = read("docs/configuration.md");
    let mut sections: BTreeMap<String, Vec<(String, usize)>> = BTreeMap::new();
    let mut section: Option<String> = None;
    let mut in_key_table = false;
    let mut in_code = false;
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if line.starts_with('#') {
            section = line.split('`').nth(1).filter(|s| s.starts_with('[')).map(str::to_string);
            in_key_table = false;
            continue;
        }
        if !line.starts_with('|') {
            in_key_table = false;
            continue;
        }
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        let first = cells.first().copied().unwrap_or("");
        if first == "key" {
            let name = section.clone().unwrap_or_else(|| {
                panic!("docs/configuration.md:{line_no}: key table under a heading without a `[section]`")
            });
            sections.entry(name).or_default();
            in_key_table = true;
            continue;
        }
        if !in_key_table || first.starts_with("---") {
            continue;
        }
        let key = first.trim_matches('`');
        assert!(
            first.starts_with('`')
                && !key.is_empty()
                && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "docs/configuration.md:{line_no}: the first cell of a key table must be a `key`, got {first:?}"
        );
        let name = section.clone().expect("set with the table header");
        sections.entry(name).or_default().push((key.to_string(), line_no));
    }
    sections
}

/// `[pools.NAME]` + `health` → `[pools.NAME.health]`: the heading of a
/// sub-table documented as a section of its own.
fn sub_section(section: &str, key: &str) -> String {
    let closing = section.len() - section.trim_end_matches(']').len();
    let (head, tail) = section.split_at(section.len() - closing);
    format!("{head}.{key}{tail}")
}

#[test]
fn configuration_reference_matches_the_parser() {
    let documented = documented_keys();
    assert!(!documented.is_empty(), "no key tables found in docs/configuration.md");
    let mut problems = Vec::new();

    // Documented → accepted.
    for (section, keys) in &documented {
        if keys.is_empty() {
            problems.push(format!("docs/configuration.md: the {section} table lists no keys"));
        }
        for (key, line) in keys {
            if let Err(e) = config::parse(Path::new("probe.toml"), &with_key(section, key)) {
                if e.message.contains("unknown field") {
                    problems.push(format!(
                        "docs/configuration.md:{line}: {section} documents `{key}`, which the parser does not accept"
                    ));
                }
            }
        }
    }

    // Accepted → documented, either as a row or as a section of its own.
    let sections: BTreeSet<&str> = documented.keys().map(String::as_str).collect();
    for section in documented.keys() {
        let rows: BTreeSet<&str> = documented[section].iter().map(|(k, _)| k.as_str()).collect();
        for key in accepted_keys(section) {
            if !rows.contains(key.as_str()) && !sections.contains(sub_section(section, &key).as_str()) {
                problems.push(format!(
                    "docs/configuration.md: {section} accepts `{key}`, but its table does not document it"
                ));
            }
        }
    }
    // Every top-level table has a section.
    for key in accepted_keys("top level") {
        let has_section =
            sections.iter().any(|s| s.trim_start_matches('[').split(['.', ']']).next() == Some(key.as_str()));
        if !has_section {
            problems.push(format!("docs/configuration.md: no section documents the top-level table `{key}`"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn check_output_in_the_docs_is_current() {
    // What `cutover check config/canary.toml` prints, run from the crate root.
    let canary = config::load(&root().join("config/canary.toml")).expect("config/canary.toml loads");
    let ok_output = format!("config/canary.toml: ok\n{}", canary.summary());
    for file in ["README.md", "docs/configuration.md"] {
        assert!(
            read(file).contains(&ok_output),
            "{file}: the pasted output of `cutover check config/canary.toml` is out of date; it is now:\n{ok_output}"
        );
    }

    // The README's error example: the canary's weight mistyped as `canry`.
    let text = read("config/canary.toml");
    let split = "split = { stable = 95, canary = 5 }";
    assert!(
        text.contains(split),
        "config/canary.toml no longer has `{split}`; update the error example in README.md and this test"
    );
    let typo = text.replacen(split, "split = { stable = 95, canry = 5 }", 1);
    let error = config::parse(Path::new("config/canary.toml"), &typo)
        .expect_err("a split naming an unknown pool is rejected")
        .to_string();
    assert!(
        read("README.md").contains(&error),
        "README.md: the error example of `cutover check` is out of date; it is now:\n{error}"
    );
}

#[test]
fn the_block_parser_finds_blocks_and_their_lines() {
    let md = "text\n```toml\na = 1\n```\n\n````md\n```\ninner\n```\n````\n";
    let blocks = code_blocks(md);
    assert_eq!(blocks.len(), 2);
    assert_eq!((blocks[0].info.as_str(), blocks[0].line, blocks[0].text.as_str()), ("toml", 3, "a = 1\n"));
    assert_eq!((blocks[1].info.as_str(), blocks[1].line), ("md", 7));
    assert_eq!(blocks[1].text, "```\ninner\n```\n");
    assert_eq!(sub_section("[pools.NAME]", "health"), "[pools.NAME.health]");
    assert_eq!(sub_section("[[routes]]", "force"), "[[routes.force]]");
}
