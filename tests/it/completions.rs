//! Shell completions and the man page come from the command line's own
//! definition: each names every subcommand that `cutover --help` lists.

use std::process::Command;

fn cutover(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cutover")).args(args).output().expect("run cutover");
    assert!(out.status.success(), "cutover {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands, from the "Commands:" section of `cutover --help`.
fn subcommands() -> Vec<String> {
    let help = cutover(&["--help"]);
    let section = help.split("Commands:\n").nth(1).expect("a Commands section");
    let names: Vec<String> = section
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|n| n != "help")
        .collect();
    for expected in ["run", "check", "demo", "status", "switchback", "rollout", "completions", "man", "schema"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from --help: {names:?}");
    }
    names
}

#[test]
fn completions_for_each_shell_name_every_subcommand() {
    let names = subcommands();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = cutover(&["completions", shell]);
        assert!(!script.trim().is_empty(), "{shell}");
        for name in &names {
            assert!(script.contains(name.as_str()), "{shell} completions do not mention {name}");
        }
    }
    // bash's names the flags of a subcommand too.
    assert!(cutover(&["completions", "bash"]).contains("--token-file"));
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_cutover")).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_man_page_is_roff_naming_every_subcommand() {
    let page = cutover(&["man"]);
    assert!(page.starts_with(".ie") || page.contains(".TH cutover"), "not a man page:\n{page}");
    assert!(page.contains(".TH cutover 1"), "section 1");
    for name in subcommands() {
        assert!(page.contains(&name), "the man page does not mention {name}");
    }
}
