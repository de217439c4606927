//! The config parser's invariant, for the property tests below and the fuzz
//! target (`crate::fuzzing`): any text gives a valid config or an error that
//! points into the file, and never a panic.

use std::path::Path;

/// Parse `text` and panic (for the fuzzer) if the answer breaks the
/// invariant: an error must carry a `line:col` within the text, unless it
/// is about a file the config names (read during validation).
pub(crate) fn check_config(text: &str) {
    match super::parse(Path::new("/fuzz/cutover.toml"), text) {
        Ok(_) => {}
        Err(e) => match e.position {
            Some((line, col)) => {
                let lines = text.split('\n').count().max(1);
                assert!(line >= 1 && col >= 1 && line <= lines, "position {line}:{col} outside the text: {e}\n{text}");
            }
            None => panic!("an error without a position: {e}\n--- config ---\n{text}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::check_config;

    /// A valid config using most sections, the seed of the mutations.
    const BASE: &str = r#"[server]
listen = ["127.0.0.1:8080"]
request_timeout = "15s"
max_request_header_bytes = 32768
[admin]
listen = "127.0.0.1:9901"
[pools.blue]
backends = ["127.0.0.1:9001", "http://127.0.0.1:9002/"]
lb = "round_robin"
retry_unanswered = false
[pools.blue.health]
path = "/healthz"
interval = "2s"
timeout = "1s"
[pools.blue.guard]
max_error_rate = 0.05
window = "30s"
min_requests = 20
[pools.green]
backends = ["[::1]:9011"]
protocol = "h2"
[[routes]]
name = "shop"
host = "*.example.com"
path_prefix = "/api"
split = { blue = 90, green = 10 }
"#;

    /// Pieces that make the validator work: keys, values of every type,
    /// and TOML punctuation.
    const PIECES: &[&str] = &[
        "[server]",
        "[pools.x]",
        "[[routes]]",
        "[pools.blue.health]",
        "listen",
        "backends",
        "split",
        "weight",
        " = ",
        "\"",
        "\"\"",
        "[]",
        "{}",
        "0",
        "-1",
        "1e400",
        "4294967296",
        "0.5",
        "true",
        "\"0s\"",
        "\"1h\"",
        "\"250ms\"",
        "\"localhost:80\"",
        "\"127.0.0.1\"",
        "\"https://a:1\"",
        "\"/\"",
        "\"*.\"",
        "é",
        "\n",
        ",",
        "=",
        "{ blue = 100 }",
        "[\"127.0.0.1:1\", \"127.0.0.1:1\"]",
        "\"\\u0000\"",
        "'''",
        "#",
    ];

    fn mutate(rng: &mut SmallRng, text: &str) -> String {
        let mut out: Vec<char> = text.chars().collect();
        for _ in 0..rng.random_range(1..5) {
            let at = rng.random_range(0..=out.len());
            match rng.random_range(0..4) {
                0 if at < out.len() => {
                    let end = (at + rng.random_range(1..12)).min(out.len());
                    out.drain(at..end);
                }
                1 => {
                    let piece = PIECES[rng.random_range(0..PIECES.len())];
                    out.splice(at..at, piece.chars());
                }
                2 if at < out.len() => out[at] = char::from(rng.random_range(0x20u8..0x7f)),
                _ => {
                    // A line moved elsewhere.
                    let lines: Vec<&str> = text.lines().collect();
                    let line = lines[rng.random_range(0..lines.len())];
                    out.splice(at..at, format!("\n{line}\n").chars());
                }
            }
        }
        out.into_iter().collect()
    }

    #[test]
    fn the_base_config_is_valid() {
        crate::config::parse(std::path::Path::new("/fuzz/cutover.toml"), BASE).unwrap();
    }

    #[test]
    fn mutated_configs_are_valid_or_an_error_with_a_position() {
        let mut rng = SmallRng::seed_from_u64(21);
        for _ in 0..3_000 {
            check_config(&mutate(&mut rng, BASE));
        }
    }

    #[test]
    fn random_text_is_an_error_with_a_position() {
        let mut rng = SmallRng::seed_from_u64(7);
        for _ in 0..1_000 {
            let text: String =
                (0..rng.random_range(0..80)).map(|_| char::from(rng.random_range(0x09u8..0x7f))).collect();
            check_config(&text);
        }
    }
}
