//! The parts of a PostgreSQL connection string (a `postgres://` URL or libpq `key=value` pairs,
//! completed from libpq's `PG*` variables and defaults), for the one client that is not libpq:
//! the replication connection of the change feed (`pgwire-replication`), which DuckDB's
//! extension cannot open. Exports never use this: they hand the string to libpq as it is.

use std::collections::HashMap;
use std::path::PathBuf;

use pgwire_replication::{SslMode, TlsConfig};

use super::settings::percent_decode;
use crate::error::UsageError;

/// Where and as whom to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
    pub sslmode: String,
    pub sslrootcert: Option<String>,
}

impl Params {
    /// The parts of `conninfo`, then of `env` (`PGHOST`, `PGPORT`, ...), then libpq's defaults.
    pub fn parse(conninfo: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, UsageError> {
        let mut given =
            if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
                url_pairs(conninfo)?
            } else {
                keyvalue_pairs(conninfo)
            };
        let mut take = |key: &str, var: &str| given.remove(key).or_else(|| env(var));
        let user = take("user", "PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        let port = take("port", "PGPORT").unwrap_or_else(|| "5432".into());
        let params = Self {
            host: take("host", "PGHOST")
                .or_else(|| take("hostaddr", "PGHOSTADDR"))
                .unwrap_or_else(|| "/var/run/postgresql".into()),
            port: port.parse().map_err(|_| {
                UsageError(format!(
                    "port {port:?} is not a number: give a port such as 5432"
                ))
            })?,
            password: take("password", "PGPASSWORD").unwrap_or_default(),
            dbname: take("dbname", "PGDATABASE").unwrap_or_else(|| user.clone()),
            sslmode: take("sslmode", "PGSSLMODE").unwrap_or_else(|| "prefer".into()),
            sslrootcert: take("sslrootcert", "PGSSLROOTCERT"),
            user,
        };
        Ok(params)
    }

    /// The TLS settings libpq would use for these parts.
    pub fn tls(&self) -> Result<TlsConfig, UsageError> {
        let ca = self.sslrootcert.as_ref().map(PathBuf::from);
        let mode = match self.sslmode.as_str() {
            "disable" | "allow" => return Ok(TlsConfig::disabled()),
            "prefer" => SslMode::Prefer,
            "require" if ca.is_some() => return Ok(TlsConfig::verify_ca(ca)),
            "require" => return Ok(TlsConfig::require()),
            "verify-ca" => return Ok(TlsConfig::verify_ca(ca)),
            "verify-full" => return Ok(TlsConfig::verify_full(ca)),
            other => {
                return Err(UsageError(format!(
                    "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                )))
            }
        };
        Ok(TlsConfig {
            mode,
            ..TlsConfig::default()
        })
    }
}

/// `postgres://user:password@host:port/dbname?key=value&...`, percent-decoded.
fn url_pairs(url: &str) -> Result<HashMap<String, String>, UsageError> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, hostport) = authority.rsplit_once('@').unwrap_or(("", authority));
    let mut pairs = HashMap::new();
    let mut put = |key: &str, value: &str| {
        if !value.is_empty() {
            pairs.insert(key.to_owned(), percent_decode(value));
        }
    };
    let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
    put("user", user);
    put("password", password);
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').unwrap_or((v6, ""));
            (host, after.strip_prefix(':').unwrap_or(""))
        }
        None => hostport.rsplit_once(':').unwrap_or((hostport, "")),
    };
    put("host", host);
    put("port", port);
    put("dbname", path);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        put(key, value);
    }
    if let Some(port) = pairs.get("port") {
        if port.parse::<u16>().is_err() {
            return Err(UsageError(format!(
                "the URL's port {port:?} is not a number"
            )));
        }
    }
    Ok(pairs)
}

/// libpq's `key=value key='quoted value'` pairs.
fn keyvalue_pairs(text: &str) -> HashMap<String, String> {
    let mut pairs = HashMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        if key.is_empty() {
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next_if_eq(&'=').is_none() {
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.insert(key, value);
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn urls_and_key_value_pairs_give_the_same_parts() {
        let url = Params::parse(
            "postgres://hub:p%40ss@db.example:6432/iot_hub?sslmode=verify-full&sslrootcert=/ca.pem",
            &no_env,
        )
        .unwrap();
        let kv = Params::parse(
            "host=db.example port=6432 user=hub password='p@ss' dbname=iot_hub \
             sslmode=verify-full sslrootcert=/ca.pem",
            &no_env,
        )
        .unwrap();
        assert_eq!(url, kv);
        assert_eq!(url.password, "p@ss");
        assert_eq!(url.port, 6432);
        assert_eq!(url.tls().unwrap().mode, SslMode::VerifyFull);
    }

    #[test]
    fn missing_parts_come_from_pg_variables_then_defaults() {
        let env = |name: &str| (name == "PGHOST").then(|| "10.0.0.1".to_owned());
        let p = Params::parse("dbname=x user=u", &env).unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.dbname.as_str()),
            ("10.0.0.1", 5432, "x")
        );
        assert_eq!(p.sslmode, "prefer");
        let q = Params::parse("postgres://u@h/", &no_env).unwrap();
        assert_eq!(q.dbname, "u");
        assert!(Params::parse("host=h port=x", &no_env).is_err());
    }
}
