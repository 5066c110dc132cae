//! Where the rows come from: the first of `--database-url`, `DATABASE_URL`, the IoT Hub's own
//! `DB_*` settings (environment or `./.env`, as its docker-compose sets them), libpq's `PG*`
//! variables; or a DuckDB file / the demo database when asked for explicitly.
//!
//! Never falls back to the demo silently. Connection strings may hold a password: this module
//! knows which text is secret and [`PgConnection::redact`] removes it from any message.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::error::UsageError;

/// Refuses a DuckDB file source that is not there.
pub fn require_file(path: &Path) -> Result<(), UsageError> {
    if path.is_file() {
        return Ok(());
    }
    Err(UsageError(format!(
        "DuckDB file {} does not exist: pass an existing file to --duckdb, or use --demo",
        path.display()
    )))
}

/// The resolved source of the export.
#[derive(Debug, Clone)]
pub enum Source {
    Postgres(PgConnection),
    DuckDbFile(PathBuf),
    Demo,
}

/// A PostgreSQL connection string (URL or libpq `key=value`) and where it came from.
#[derive(Debug, Clone)]
pub struct PgConnection {
    conninfo: String,
    /// Which setting supplied it, for messages: `--database-url`, `DATABASE_URL`, ...
    pub origin: &'static str,
    secrets: Vec<String>,
}

const MASK: &str = "********";
const DB_KEYS: [(&str, &str); 5] = [
    ("DB_HOST", "host"),
    ("DB_PORT", "port"),
    ("DB_NAME", "dbname"),
    ("DB_USER", "user"),
    ("DB_PASSWORD", "password"),
];
/// libpq variables that say "a server is configured" (PGPASSWORD alone does not).
const PG_KEYS: [&str; 6] = [
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGSERVICE",
];

impl PgConnection {
    /// Parses a `--database-url`-style value; `origin` names the setting it came from.
    pub fn new(conninfo: &str, origin: &'static str) -> Result<Self, UsageError> {
        let is_url = conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://");
        if !is_url && !conninfo.contains('=') {
            return Err(UsageError(format!(
                "{origin} is not a PostgreSQL connection string: expected a URL such as \
                 postgres://user@host:5432/iot_hub or key=value pairs such as \
                 \"host=localhost dbname=iot_hub user=postgres\""
            )));
        }
        let secrets = if is_url {
            url_password(conninfo).map_or_else(Vec::new, |p| vec![percent_decode(&p), p])
        } else {
            keyvalue_password(conninfo)
        };
        secrets.iter().for_each(|s| crate::error::keep_secret(s));
        Ok(Self {
            conninfo: conninfo.to_owned(),
            origin,
            secrets,
        })
    }

    /// The string to hand to libpq. Holds the password: never print it, see [`Self::redact`].
    pub fn conninfo(&self) -> &str {
        &self.conninfo
    }

    /// The connection string with the server settings `options` (`-c name=value ...`) for the
    /// session, unless the user's own string sets `options` (theirs win).
    pub fn conninfo_with_options(&self, options: &str) -> String {
        let is_url =
            self.conninfo.starts_with("postgres://") || self.conninfo.starts_with("postgresql://");
        if is_url {
            let query = self.conninfo.split_once('?').map(|(_, q)| q);
            if query.is_some_and(|q| q.split('&').any(|p| p.starts_with("options="))) {
                return self.conninfo.clone();
            }
            let encoded: String = options
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            let separator = if query.is_some() { '&' } else { '?' };
            return format!("{}{separator}options={encoded}", self.conninfo);
        }
        let has_options = self
            .conninfo
            .split_whitespace()
            .any(|word| word.starts_with("options=") || word == "options");
        if has_options {
            return self.conninfo.clone();
        }
        format!("{} options={}", self.conninfo, quote(options))
            .trim_start()
            .to_owned()
    }

    /// Adds `secret` to what this connection (and every message of the process) masks.
    fn keep_secret(&mut self, secret: Option<&str>) {
        if let Some(secret) = secret {
            crate::error::keep_secret(secret);
            self.secrets.push(secret.to_owned());
        }
    }

    /// `text` with every password this connection knows of masked.
    pub fn redact(&self, text: &str) -> String {
        let mut secrets: Vec<&String> = self.secrets.iter().filter(|s| !s.is_empty()).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.iter().fold(text.to_owned(), |acc, secret| {
            acc.replace(secret.as_str(), MASK)
        })
    }
}

/// Environment variables, and the `.env` file of the working directory beneath them.
#[derive(Debug, Default)]
pub struct Env {
    process: HashMap<String, String>,
    dotenv: HashMap<String, String>,
}

impl Env {
    /// The process environment and `dir/.env` (when present).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(".env");
        let dotenv = match dotenvy::from_path_iter(&path) {
            Ok(iter) => iter.collect::<Result<HashMap<_, _>, _>>().map_err(|e| {
                UsageError(format!("{}: {e}; fix or remove that file", path.display()))
            })?,
            Err(e) if e.not_found() => HashMap::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Self {
            process: std::env::vars().collect(),
            dotenv,
        })
    }

    /// Built from explicit maps (tests).
    pub fn from_maps(process: HashMap<String, String>, dotenv: HashMap<String, String>) -> Self {
        Self { process, dotenv }
    }

    /// A non-empty value, from the process environment first, then `.env`.
    fn get(&self, key: &str) -> Option<&str> {
        [&self.process, &self.dotenv]
            .into_iter()
            .find_map(|vars| vars.get(key).map(String::as_str).filter(|v| !v.is_empty()))
    }
}

/// What the command line asked for as a source; at most one of them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Requested<'a> {
    pub database_url: Option<&'a str>,
    pub duckdb: Option<&'a Path>,
    pub demo: bool,
}

/// Picks the source for an export.
pub fn resolve(requested: Requested, env: &Env) -> Result<Source, UsageError> {
    let given = [
        requested.database_url.map(|_| "--database-url"),
        requested.duckdb.map(|_| "--duckdb"),
        requested.demo.then_some("--demo"),
    ];
    let given: Vec<&str> = given.into_iter().flatten().collect();
    if let [first, second, ..] = given[..] {
        return Err(UsageError(format!(
            "{first} and {second} both name a source: give one of --database-url, --duckdb \
             and --demo"
        )));
    }
    if let Some(file) = requested.duckdb {
        return Ok(Source::DuckDbFile(file.to_owned()));
    }
    if requested.demo {
        return Ok(Source::Demo);
    }
    resolve_postgres(requested.database_url, env).map(Source::Postgres)
}

/// The PostgreSQL connection from the flag, else the environment, in the documented order.
pub fn resolve_postgres(flag: Option<&str>, env: &Env) -> Result<PgConnection, UsageError> {
    if let Some(url) = flag {
        return PgConnection::new(url, "--database-url");
    }
    if let Some(url) = env.get("DATABASE_URL") {
        return PgConnection::new(url, "DATABASE_URL");
    }
    if DB_KEYS.iter().any(|(key, _)| env.get(key).is_some()) {
        let pairs: Vec<String> = DB_KEYS
            .iter()
            .filter_map(|(key, word)| env.get(key).map(|v| format!("{word}={}", quote(v))))
            .collect();
        let mut conn = PgConnection::new(&pairs.join(" "), "DB_* settings")?;
        conn.keep_secret(env.get("DB_PASSWORD"));
        return Ok(conn);
    }
    if PG_KEYS.iter().any(|key| env.process.contains_key(*key)) {
        // An empty string lets libpq read every PG* variable itself, PGPASSWORD included.
        let mut conn = PgConnection {
            conninfo: String::new(),
            origin: "PG* variables",
            secrets: vec![],
        };
        conn.keep_secret(env.process.get("PGPASSWORD").map(String::as_str));
        return Ok(conn);
    }
    Err(UsageError(
        "no PostgreSQL connection configured: pass --database-url URL, or set DATABASE_URL, \
         the IoT Hub's DB_NAME/DB_USER/DB_PASSWORD/DB_HOST/DB_PORT (environment or ./.env) or \
         libpq's PG* variables; or run with --demo to try the built-in demo database"
            .into(),
    ))
}

/// A libpq `key=value` value: quoted, with `\` and `'` escaped.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The password of `postgres://user:password@host/...`, as written.
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    userinfo
        .split_once(':')
        .map(|(_, password)| password.to_owned())
}

/// The `password` value of a libpq `key=value` string (quoted or bare): unescaped and as written.
fn keyvalue_password(conninfo: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = conninfo.trim_start();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let (value, raw, next) = match after.strip_prefix('\'') {
            Some(quoted) => {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let (mut raw_end, mut end) = (quoted.len(), quoted.len());
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next().map(|(_, c)| c)),
                        '\'' => {
                            (raw_end, end) = (i, i + 1);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &quoted[..raw_end], &quoted[end..])
            }
            None => {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (after[..end].to_owned(), &after[..end], &after[end..])
            }
        };
        if key == "password" {
            found = vec![value, raw.to_owned()];
        }
        rest = next.trim_start();
    }
    found
}

/// `%XX` escapes of a URL part decoded (invalid escapes kept as written).
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = text
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(process: &[(&str, &str)], dotenv: &[(&str, &str)]) -> Env {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Env::from_maps(map(process), map(dotenv))
    }

    fn pg(flag: Option<&str>, env: &Env) -> PgConnection {
        resolve_postgres(flag, env).expect("resolves")
    }

    #[test]
    fn flag_beats_database_url_beats_db_settings_beats_pg_variables() {
        let all = env(
            &[
                ("DATABASE_URL", "postgres://u@env/db"),
                ("DB_NAME", "hub"),
                ("PGHOST", "pg"),
            ],
            &[],
        );
        assert_eq!(
            pg(Some("postgres://u@flag/db"), &all).origin,
            "--database-url"
        );
        assert_eq!(pg(None, &all).conninfo(), "postgres://u@env/db");
        let no_url = env(&[("DB_NAME", "hub"), ("PGHOST", "pg")], &[]);
        assert_eq!(pg(None, &no_url).conninfo(), "dbname='hub'");
        let only_pg = env(&[("PGHOST", "pg")], &[]);
        let conn = pg(None, &only_pg);
        assert_eq!((conn.conninfo(), conn.origin), ("", "PG* variables"));
    }

    #[test]
    fn db_settings_come_from_environment_or_dotenv_and_are_quoted() {
        let vars = env(
            &[("DB_HOST", "db"), ("DB_PASSWORD", "it's\\secret")],
            &[
                ("DB_HOST", "ignored"),
                ("DB_NAME", "iot hub"),
                ("DB_USER", "hub"),
                ("DB_PORT", "5433"),
            ],
        );
        let conn = pg(None, &vars);
        assert_eq!(conn.origin, "DB_* settings");
        assert_eq!(
            conn.conninfo(),
            r"host='db' port='5433' dbname='iot hub' user='hub' password='it\'s\\secret'"
        );
        assert_eq!(
            conn.redact("failed for it's\\secret"),
            "failed for ********"
        );
        let from_dotenv = env(&[], &[("DATABASE_URL", "postgres://x@y/z")]);
        assert_eq!(pg(None, &from_dotenv).origin, "DATABASE_URL");
    }

    #[test]
    fn nothing_configured_names_every_option_and_the_demo() {
        let err = resolve(Requested::default(), &env(&[("PGPASSWORD", "x")], &[])).unwrap_err();
        for word in ["--database-url", "DATABASE_URL", "DB_NAME", "PG*", "--demo"] {
            assert!(err.0.contains(word), "{word} missing from {err}");
        }
    }

    #[test]
    fn explicit_embedded_sources_win() {
        let demo = Requested {
            demo: true,
            ..Requested::default()
        };
        assert!(matches!(
            resolve(demo, &env(&[("DATABASE_URL", "a=b")], &[])),
            Ok(Source::Demo)
        ));
        let file = Requested {
            duckdb: Some(Path::new("x.duckdb")),
            ..Requested::default()
        };
        assert!(matches!(
            resolve(file, &Env::default()),
            Ok(Source::DuckDbFile(_))
        ));
        let both = Requested { demo: true, ..file };
        let err = resolve(both, &Env::default()).unwrap_err();
        assert!(
            err.0.starts_with("--duckdb and --demo both name a source"),
            "{err}"
        );
    }

    #[test]
    fn passwords_are_found_in_urls_and_keyvalue_strings() {
        let url = pg(
            Some("postgres://hub:p%40ss:w@db.example:5432/iot?sslmode=require"),
            &Env::default(),
        );
        assert_eq!(
            url.redact("at hub:p%40ss:w@db and p@ss:w"),
            "at hub:********@db and ********"
        );
        let kv = pg(Some("host=db password='a b\\'c' user=hub"), &Env::default());
        assert_eq!(
            kv.redact("password='a b\\'c' / a b'c"),
            "password='********' / ********"
        );
        let bare = pg(Some("host=db password=hunter2"), &Env::default());
        assert_eq!(bare.redact("password=hunter2"), "password=********");
        let none = pg(Some("postgres://hub@db/iot"), &Env::default());
        assert_eq!(
            none.redact("postgres://hub@db/iot"),
            "postgres://hub@db/iot"
        );
        let pgvars = pg(
            None,
            &env(&[("PGUSER", "u"), ("PGPASSWORD", "s3cret")], &[]),
        );
        assert_eq!(pgvars.redact("s3cret"), "********");
    }

    #[test]
    fn session_options_join_the_connection_string_unless_it_has_its_own() {
        let with = |conninfo: &str| {
            PgConnection::new(conninfo, "--database-url")
                .unwrap()
                .conninfo_with_options("-c jit=off")
        };
        assert_eq!(
            with("postgres://u@h/db"),
            "postgres://u@h/db?options=-c%20jit%3Doff"
        );
        assert_eq!(
            with("postgres://u@h/db?sslmode=require"),
            "postgres://u@h/db?sslmode=require&options=-c%20jit%3Doff"
        );
        assert_eq!(
            with("host=h dbname=d"),
            "host=h dbname=d options='-c jit=off'"
        );
        let own = "host=h options='-c work_mem=1GB'";
        assert_eq!(with(own), own);
        let pg_vars = pg(None, &env(&[("PGHOST", "h")], &[]));
        assert_eq!(
            pg_vars.conninfo_with_options("-c jit=off"),
            "options='-c jit=off'"
        );
    }

    #[test]
    fn rejects_what_is_not_a_connection_string() {
        let err = resolve_postgres(Some("localhost"), &Env::default()).unwrap_err();
        assert!(err
            .0
            .starts_with("--database-url is not a PostgreSQL connection string"));
    }
}
