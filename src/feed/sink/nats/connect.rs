//! How the feed reaches a NATS server, and how the server is named in every line it prints.
//!
//! Production servers ask for credentials. They come from the URL (`nats://user:pass@host`,
//! `nats://token@host`, as nats-py and the Go client take them) or from the variables `nats`
//! CLI users know: `NATS_USER` and `NATS_PASSWORD`, `NATS_TOKEN`, `NATS_CREDS` (a `.creds`
//! file: JWT and NKey seed), `NATS_NKEY` (a file holding an NKey seed); and for TLS
//! (`tls://host`, or a server that requires it) `NATS_CA`, `NATS_CERT` and `NATS_KEY`. The URL's
//! credentials win. A URL is shown with its credentials masked, and the variables' values are
//! never shown: errors name the variable or file instead.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use async_nats::ConnectOptions;

use crate::error::UsageError;

/// Who the feed says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    None,
    UserPassword(String, String),
    Token(String),
    /// A `.creds` file.
    Creds(PathBuf),
    /// A file holding an NKey seed.
    NKey(PathBuf),
}

/// A NATS server, resolved: its address without credentials, and how to log in.
#[derive(Clone, PartialEq, Eq)]
pub struct Server {
    /// The URL with its credentials removed: what is connected to.
    address: String,
    /// The URL with its credentials masked: what lines show.
    pub shown: String,
    auth: Auth,
    ca: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Server {
    /// `url` (`nats://…` or `tls://…`), with the credentials the environment gives (`var`);
    /// its secrets are masked in every line this process prints from now on.
    pub fn resolve(url: &str, var: impl Fn(&str) -> Option<String>) -> Result<Self, UsageError> {
        let server = Self::parse(url, var)?;
        // Whatever library's message carries them, no line shows them; as written in the URL
        // too (percent-encoded).
        match &server.auth {
            Auth::UserPassword(_, secret) | Auth::Token(secret) => {
                crate::error::keep_secret(secret)
            }
            _ => {}
        }
        let (_, rest) = url.split_once("://").unwrap_or(("", url));
        if let Some((userinfo, _)) = rest.rsplit_once('@') {
            crate::error::keep_secret(userinfo.split_once(':').map_or(userinfo, |(_, pass)| pass));
        }
        Ok(server)
    }

    /// [`Self::resolve`] without remembering the secrets: the parse alone.
    fn parse(url: &str, var: impl Fn(&str) -> Option<String>) -> Result<Self, UsageError> {
        let shown = crate::error::masked_url(url);
        let (scheme, rest) = url.split_once("://").unwrap_or(("nats", url));
        let (userinfo, host) = match rest.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, rest),
        };
        if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
            return Err(UsageError(format!(
                "--to {shown}: give a NATS server as nats://host:4222 (or nats://user:pass@host, \
                 nats://token@host, tls://host)"
            )));
        }
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|t| t.into_owned())
                .map_err(|_| UsageError(format!("--to {shown}: its credentials are not UTF-8")))
        };
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        let auth = match userinfo.map(|u| u.split_once(':')) {
            Some(Some((user, pass))) => Auth::UserPassword(decode(user)?, decode(pass)?),
            Some(None) => Auth::Token(decode(userinfo.unwrap_or_default())?),
            None => match (var("NATS_USER"), var("NATS_PASSWORD")) {
                (Some(user), Some(pass)) => Auth::UserPassword(user, pass),
                (Some(_), None) | (None, Some(_)) => {
                    return Err(UsageError(
                        "NATS_USER and NATS_PASSWORD go together: set both, or neither".into(),
                    ))
                }
                (None, None) => match (var("NATS_TOKEN"), var("NATS_CREDS"), var("NATS_NKEY")) {
                    (Some(token), None, None) => Auth::Token(token),
                    (None, Some(creds), None) => Auth::Creds(PathBuf::from(creds)),
                    (None, None, Some(seed)) => Auth::NKey(PathBuf::from(seed)),
                    (None, None, None) => Auth::None,
                    _ => {
                        return Err(UsageError(
                            "NATS_TOKEN, NATS_CREDS and NATS_NKEY each log in alone: set one"
                                .into(),
                        ))
                    }
                },
            },
        };
        let client_cert = match (var("NATS_CERT"), var("NATS_KEY")) {
            (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
            (None, None) => None,
            _ => {
                return Err(UsageError(
                    "NATS_CERT and NATS_KEY go together: set both, or neither".into(),
                ))
            }
        };
        Ok(Self {
            address: format!("{scheme}://{host}"),
            shown,
            auth,
            ca: var("NATS_CA").map(PathBuf::from),
            client_cert,
        })
    }

    /// A client of the server, logged in; its errors name the server as shown.
    pub async fn connect(&self) -> Result<async_nats::Client> {
        let shown = &self.shown;
        let mut options = ConnectOptions::new().max_reconnects(Some(5));
        options = match &self.auth {
            Auth::None => options,
            Auth::UserPassword(user, pass) => options.user_and_password(user.clone(), pass.clone()),
            Auth::Token(token) => options.token(token.clone()),
            Auth::Creds(path) => ConnectOptions::with_credentials_file(path.clone())
                .await
                .map_err(|e| {
                    UsageError(format!(
                        "NATS_CREDS {}: {e}: give a .creds file (from nsc or the nats CLI)",
                        path.display()
                    ))
                })?
                .max_reconnects(Some(5)),
            Auth::NKey(path) => {
                let seed = std::fs::read_to_string(path).map_err(|e| {
                    UsageError(format!(
                        "NATS_NKEY {}: {e}: give a file holding an NKey seed",
                        path.display()
                    ))
                })?;
                options.nkey(seed.trim().to_owned())
            }
        };
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        tokio::time::timeout(Duration::from_secs(10), options.connect(&self.address))
            .await
            .map_err(|_| anyhow!("no NATS server answered at {shown} within 10 s"))?
            .with_context(|| format!("connecting to NATS at {shown}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn credentials_come_from_the_url_or_the_environment_and_are_never_shown() {
        let server = Server::parse("nats://hub:s%40cret@127.0.0.1:4222", none).unwrap();
        assert_eq!(server.address, "nats://127.0.0.1:4222");
        assert_eq!(server.shown, "nats://********@127.0.0.1:4222");
        assert_eq!(
            server.auth,
            Auth::UserPassword("hub".into(), "s@cret".into())
        );
        let server = Server::parse("tls://T0KEN@nats.example:4443", none).unwrap();
        assert_eq!(server.auth, Auth::Token("T0KEN".into()));
        assert_eq!(server.address, "tls://nats.example:4443");
        assert!(!format!("{server:?}").contains("T0KEN"));
        let env = |name: &str| match name {
            "NATS_CREDS" => Some("/etc/hub.creds".to_owned()),
            "NATS_CA" => Some("/etc/ca.pem".to_owned()),
            _ => None,
        };
        let server = Server::parse("nats://127.0.0.1:4222", env).unwrap();
        assert_eq!(server.auth, Auth::Creds("/etc/hub.creds".into()));
        assert_eq!(server.ca, Some("/etc/ca.pem".into()));
        let both = |name: &str| {
            matches!(name, "NATS_TOKEN" | "NATS_CREDS").then(|| "s3cret-value".to_owned())
        };
        let refused = Server::parse("nats://h:1", both).unwrap_err().0;
        assert!(!refused.contains("s3cret"), "{refused}");
        for bad in [
            "nats://",
            "nats://u:p@",
            "nats://h:1/path",
            "nats://u:p@h 1",
        ] {
            let refused = Server::parse(bad, none).unwrap_err().0;
            assert!(!refused.contains("u:p"), "{refused}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_url_resolves_or_is_refused_and_shows_no_credentials(
            user in "[a-z]{1,6}", secret in "s3cret[a-zA-Z0-9%@:]{0,10}", rest in "\\PC{0,30}",
        ) {
            for url in [
                format!("nats://{user}:{secret}@{rest}"),
                format!("tls://{secret}@{rest}"),
                rest.clone(),
            ] {
                let shown = match Server::parse(&url, none) {
                    Ok(server) => format!("{} {server:?}", server.shown),
                    Err(refused) => refused.0,
                };
                proptest::prop_assert!(!shown.contains("s3cret"), "{shown}");
            }
        }
    }
}
