//! Which admin API the command line talks to, and with which token.
//!
//! The URL comes from `--admin`, else from the `[admin] listen` of the
//! config file (default `config/cutover.toml`, as `cutover run`), else the
//! documented default `127.0.0.1:9901`. A wildcard listen address
//! (`0.0.0.0`, `[::]`) is reached on loopback. Only the `[admin]` table is
//! read, leniently: a config the proxy would refuse for another reason
//! still names its admin listener.
//!
//! The token comes from `--token-file`, else `CUTOVER_ADMIN_TOKEN`, else
//! the config's `[admin] token_file` when this user can read it (relative
//! to the config's directory, as the proxy resolves it). It is trimmed as
//! the proxy trims it, and never printed.

use std::net::SocketAddr;
use std::path::Path;

use super::error::CliError;
use super::Connection;

/// The default admin listener (SPEC §2).
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:9901";

/// Where to send calls, and the token for writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http://host:port`, no trailing slash.
    pub base: String,
    /// The bearer token, when one was found.
    pub token: Option<String>,
}

/// The target for `connection`, reading the environment's token.
pub fn resolve(connection: &Connection) -> Result<Target, CliError> {
    resolve_with(connection, std::env::var("CUTOVER_ADMIN_TOKEN").ok())
}

/// The target for `connection`, with `env_token` as `CUTOVER_ADMIN_TOKEN`.
pub fn resolve_with(connection: &Connection, env_token: Option<String>) -> Result<Target, CliError> {
    let admin = read_admin_table(&connection.config);
    let base = match &connection.admin {
        Some(url) => normalise(url)?,
        None => match admin.as_ref().and_then(|t| t.get("listen")).and_then(toml::Value::as_str) {
            Some(listen) => normalise(&loopback_for(listen))?,
            None => DEFAULT_ADMIN.to_string(),
        },
    };
    let token = if let Some(path) = &connection.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("cannot read the token file {}: {e}", path.display())))?;
        Some(text)
    } else if let Some(token) = env_token.filter(|t| !t.trim().is_empty()) {
        Some(token)
    } else {
        admin.as_ref().and_then(|t| t.get("token_file")).and_then(toml::Value::as_str).and_then(|file| {
            let path = Path::new(file);
            let path = match connection.config.parent() {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path.to_path_buf(),
            };
            std::fs::read_to_string(path).ok()
        })
    };
    let token = token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
    Ok(Target { base, token })
}

/// The `[admin]` table of the file at `path`, if it can be read and parsed.
fn read_admin_table(path: &Path) -> Option<toml::Table> {
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    table.get("admin")?.as_table().cloned()
}

/// A listen address as an address to connect to: wildcards become loopback.
fn loopback_for(listen: &str) -> String {
    match listen.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(a)) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        Ok(SocketAddr::V6(a)) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        _ => listen.to_string(),
    }
}

/// `host:port` or `http://host:port[/]` as `http://host:port`.
fn normalise(url: &str) -> Result<String, CliError> {
    let url = url.trim().trim_end_matches('/');
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(CliError::Usage(format!("--admin: the admin API speaks plain http, not {scheme}")));
        }
        None => url,
    };
    if rest.is_empty() || rest.contains('/') || rest.parse::<http::uri::Authority>().is_err() {
        return Err(CliError::Usage(format!("--admin: {url:?} is not http://HOST:PORT")));
    }
    Ok(format!("http://{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn connection(admin: Option<&str>, config: PathBuf, token_file: Option<PathBuf>) -> Connection {
        Connection { admin: admin.map(str::to_string), config, token_file, json: false }
    }

    #[test]
    fn the_url_comes_from_the_option_then_the_config_then_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(&config, "[admin]\nlisten = \"0.0.0.0:9911\"\n[server]\nbogus = 1\n").unwrap();
        let t = resolve_with(&connection(Some("127.0.0.1:1234/"), config.clone(), None), None).unwrap();
        assert_eq!(t.base, "http://127.0.0.1:1234");
        let t = resolve_with(&connection(None, config, None), None).unwrap();
        assert_eq!(t.base, "http://127.0.0.1:9911", "wildcard reached on loopback, other sections ignored");
        let t = resolve_with(&connection(None, dir.path().join("absent.toml"), None), None).unwrap();
        assert_eq!(t.base, DEFAULT_ADMIN);
        let v6 = dir.path().join("v6.toml");
        std::fs::write(&v6, "[admin]\nlisten = \"[::]:9]\"\n").unwrap();
        assert!(
            resolve_with(&connection(None, v6.clone(), None), None).is_err(),
            "an unusable listen is a usage error"
        );
        std::fs::write(&v6, "[admin]\nlisten = \"[::]:9\"\n").unwrap();
        assert_eq!(resolve_with(&connection(None, v6, None), None).unwrap().base, "http://[::1]:9");
    }

    #[test]
    fn bad_urls_are_usage_errors() {
        for bad in ["https://h:1", "http://h:1/status", "", "ftp://x"] {
            let e = resolve_with(&connection(Some(bad), PathBuf::from("/nonexistent"), None), None).unwrap_err();
            assert_eq!(e.exit_code(), super::super::EXIT_USAGE, "{bad}");
        }
    }

    #[test]
    fn the_token_comes_from_the_file_then_the_environment_then_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cfg-token"), " from-config\n").unwrap();
        std::fs::write(dir.path().join("flag-token"), "from-flag\n").unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(&config, "[admin]\nlisten = \"127.0.0.1:1\"\ntoken_file = \"cfg-token\"\n").unwrap();
        let flag = Some(dir.path().join("flag-token"));
        let t = resolve_with(&connection(None, config.clone(), flag), Some("env".into())).unwrap();
        assert_eq!(t.token.as_deref(), Some("from-flag"));
        let t = resolve_with(&connection(None, config.clone(), None), Some("from-env".into())).unwrap();
        assert_eq!(t.token.as_deref(), Some("from-env"));
        let t = resolve_with(&connection(None, config.clone(), None), None).unwrap();
        assert_eq!(t.token.as_deref(), Some("from-config"));
        let missing = Some(dir.path().join("nope"));
        assert!(resolve_with(&connection(None, config, missing), None).is_err());
    }
}
