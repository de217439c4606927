//! The config file's JSON Schema stays in step with the parser and the
//! shipped configs: `docs/cutover.schema.json` is what `cutover schema`
//! prints, and every `*.toml` under `config/` and `docker/` validates
//! against it. (That the schema's keys are the parser's is checked inside
//! the crate, in `src/config/schema.rs`, where the raw structs are seen.)
//!
//! The validator is a small walk over the keywords the schema uses; it
//! refuses any other keyword, so the schema cannot grow one unchecked.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn printed_schema() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cutover")).arg("schema").output().expect("run cutover schema");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_committed_schema_is_the_one_the_binary_prints() {
    let printed = printed_schema();
    let committed = std::fs::read_to_string(root().join("docs/cutover.schema.json")).unwrap_or_default();
    if std::env::var_os("CUTOVER_BLESS").is_some() {
        std::fs::write(root().join("docs/cutover.schema.json"), &printed).unwrap();
        return;
    }
    assert!(
        committed == printed,
        "docs/cutover.schema.json is stale: regenerate it with\n  cargo run -- schema > docs/cutover.schema.json\n(or CUTOVER_BLESS=1 cargo test --test it schema::)"
    );
}

/// Every problem of `value` against `schema`, each with its place.
fn check(schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    let schema = schema.as_object().expect("a schema is an object");
    for keyword in schema.keys() {
        let known = [
            "$schema",
            "title",
            "description",
            "examples",
            "pattern",
            "type",
            "properties",
            "required",
            "additionalProperties",
            "items",
            "minItems",
            "enum",
            "minimum",
            "maximum",
        ];
        assert!(known.contains(&keyword.as_str()), "the schema uses {keyword:?}, which this test does not check");
    }
    let ok = match schema.get("type").and_then(Value::as_str) {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some(other) => panic!("unknown type {other}"),
        None => true,
    };
    if !ok {
        problems.push(format!("{at}: {value} is not of type {}", schema["type"]));
        return;
    }
    if let Some(words) = schema.get("enum").and_then(Value::as_array) {
        if !words.contains(value) {
            problems.push(format!("{at}: {value} is not one of {words:?}"));
        }
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), value.as_f64()) {
        if n < min {
            problems.push(format!("{at}: {n} is below {min}"));
        }
    }
    if let (Some(max), Some(n)) = (schema.get("maximum").and_then(Value::as_f64), value.as_f64()) {
        if n > max {
            problems.push(format!("{at}: {n} is above {max}"));
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        // The one pattern in use: a duration starts with a digit.
        assert_eq!(pattern, "^[0-9]", "a pattern this test does not know");
        if !value.as_str().is_some_and(|s| s.starts_with(|c: char| c.is_ascii_digit())) {
            problems.push(format!("{at}: {value} does not look like a duration"));
        }
    }
    if let Some(list) = value.as_array() {
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
            if (list.len() as u64) < min {
                problems.push(format!("{at}: fewer than {min} items"));
            }
        }
        if let Some(items) = schema.get("items") {
            for (i, item) in list.iter().enumerate() {
                check(items, item, &format!("{at}[{i}]"), problems);
            }
        }
    }
    if let Some(table) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            if !table.contains_key(name.as_str().unwrap()) {
                problems.push(format!("{at}: {name} is required"));
            }
        }
        for (key, v) in table {
            let place = if at.is_empty() { key.clone() } else { format!("{at}.{key}") };
            match (properties.and_then(|p| p.get(key)), schema.get("additionalProperties")) {
                (Some(sub), _) => check(sub, v, &place, problems),
                (None, Some(Value::Bool(false))) => problems.push(format!("{place}: not a known key")),
                (None, Some(sub @ Value::Object(_))) => check(sub, v, &place, problems),
                (None, _) => {}
            }
        }
    }
}

fn problems_of(schema: &Value, toml_text: &str) -> Vec<String> {
    let table: toml::Table = toml::from_str(toml_text).expect("TOML");
    let value = serde_json::to_value(table).unwrap();
    let mut problems = Vec::new();
    check(schema, &value, "", &mut problems);
    problems
}

fn shipped_configs() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "toml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("config"), &mut files);
    walk(&root().join("docker"), &mut files);
    files.sort();
    files
}

#[test]
fn every_shipped_config_validates_against_the_schema() {
    let schema: Value = serde_json::from_str(&printed_schema()).unwrap();
    let files = shipped_configs();
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let problems = problems_of(&schema, &std::fs::read_to_string(&file).unwrap());
        assert!(problems.is_empty(), "{}: {problems:#?}", file.display());
    }
}

/// The walk is no rubber stamp: it finds a typo, a wrong type, a word
/// outside the set, a missing required key and an empty backend list.
#[test]
fn the_schema_refuses_what_the_parser_refuses() {
    let schema: Value = serde_json::from_str(&printed_schema()).unwrap();
    let good = "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[[routes]]\nname = \"app\"\nsplit = { blue = 100 }\n";
    assert_eq!(problems_of(&schema, good), Vec::<String>::new());
    for (bad, expected) in [
        ("[server]\ndrain_timout = \"5s\"\n", "server.drain_timout: not a known key"),
        ("[server]\ndrain_timeout = 5\n", "server.drain_timeout: 5 is not of type"),
        ("[pools.red]\nbackends = [\"127.0.0.1:9002\"]\nlb = \"fastest\"\n", "pools.red.lb: \"fastest\" is not one of"),
        ("[[routes.force]]\nheader = \"x-beta\"\n", "routes[0].force[0]: \"value\" is required"),
        ("[pools.blue.guard]\nmax_error_rate = 2\n", "pools.blue.guard.max_error_rate: 2 is above 1"),
        ("[pools.green]\nbackends = []\n", "pools.green.backends: fewer than 1 items"),
    ] {
        let problems = problems_of(&schema, &format!("{good}{bad}"));
        assert!(problems.iter().any(|p| p.starts_with(expected)), "{bad}: {problems:?}");
        // And the parser refuses it too.
        let path = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(path.path(), format!("{good}{bad}")).unwrap();
        assert!(cutover::config::load(path.path()).is_err(), "the parser accepts {bad}");
    }
}
