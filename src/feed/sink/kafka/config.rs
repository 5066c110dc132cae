//! Where Kafka is and how to log in. `kafka://host:9092[,host2:9092]` names the bootstrap
//! servers; TLS and SASL come from the environment under librdkafka's own property names, as
//! Confluent's images take them: `KAFKA_` and the name in capitals, `_` for `.`
//! (`KAFKA_SECURITY_PROTOCOL=SASL_SSL`, `KAFKA_SASL_MECHANISM=SCRAM-SHA-512`,
//! `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD`, `KAFKA_SSL_CA_LOCATION`...). Only the security
//! properties are taken: `KAFKA_HOME`, `KAFKA_OPTS` or the `KAFKA_PORT` Kubernetes sets for a
//! service are not librdkafka's, and it would refuse them. Credentials in the URL are refused
//! (a URL is shown in lines); the values taken are never shown, and secrets are masked in every
//! line this process prints.

use rdkafka::ClientConfig;

use crate::error::UsageError;

/// The variables taken, by prefix: librdkafka's security properties.
const TAKEN: &[&str] = &[
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_",
    "KAFKA_SSL_",
    "KAFKA_ENABLE_SSL_CERTIFICATE_VERIFICATION",
];

/// Properties whose values are secrets (librdkafka also marks the user name sensitive; it is
/// not masked here, since masking a short name would mask it in topic names and paths too).
const SECRET: &[&str] = &[
    "sasl.password",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.secret",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl.keystore.password",
];

/// A Kafka cluster, resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct Server {
    /// `host:port,host:port`.
    pub bootstrap: String,
    /// As lines show it: `kafka://host:port`.
    pub shown: String,
    /// Security properties from the environment: (property, value).
    settings: Vec<(String, String)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Server {
    /// `url` with the security settings of the environment `vars`; secrets are masked in every
    /// line from now on.
    pub fn resolve(
        url: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, UsageError> {
        let server = Self::parse(url, vars)?;
        for (name, value) in &server.settings {
            if SECRET.contains(&name.as_str()) {
                crate::error::keep_secret(value);
            }
        }
        Ok(server)
    }

    fn parse(
        url: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, UsageError> {
        let refuse = |why: &str| {
            UsageError(format!(
                "--to {}: {why}; give kafka://HOST:PORT[,HOST:PORT...], and TLS or SASL settings \
                 as KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD... in the \
                 environment",
                crate::error::masked_url(url)
            ))
        };
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| refuse("not a kafka:// URL"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err(refuse("credentials do not go in the URL"));
        }
        let brokers: Vec<&str> = rest.split(',').collect();
        for broker in &brokers {
            let valid = broker.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-_[]:".contains(c))
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !valid {
                return Err(refuse(&format!("{broker:?} is not HOST:PORT")));
            }
        }
        let settings = vars
            .into_iter()
            .filter(|(name, _)| TAKEN.iter().any(|prefix| name.starts_with(prefix)))
            .map(|(name, value)| (property(&name), value))
            .collect();
        Ok(Self {
            bootstrap: brokers.join(","),
            shown: format!("kafka://{}", brokers.join(",")),
            settings,
        })
    }

    /// The client settings: the servers, then the security properties.
    pub fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        for (name, value) in &self.settings {
            config.set(name, value);
        }
        config
    }
}

/// `KAFKA_SASL_USERNAME` → `sasl.username`.
fn property(variable: &str) -> String {
    variable
        .trim_start_matches("KAFKA_")
        .to_ascii_lowercase()
        .replace('_', ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn servers_from_the_url_security_from_the_environment() {
        let server = Server::parse(
            "kafka://a:9092,b.example:9093/",
            vars(&[
                ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
                ("KAFKA_SASL_USERNAME", "hub"),
                ("KAFKA_SASL_PASSWORD", "s3cret"),
                ("KAFKA_SSL_CA_LOCATION", "/etc/ca.pem"),
                ("KAFKA_HOME", "/opt/kafka"),
                ("KAFKA_PORT", "tcp://10.0.0.1:9092"),
            ]),
        )
        .unwrap();
        assert_eq!(server.bootstrap, "a:9092,b.example:9093");
        assert_eq!(server.shown, "kafka://a:9092,b.example:9093");
        let names: Vec<&str> = server.settings.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "security.protocol",
                "sasl.username",
                "sasl.password",
                "ssl.ca.location"
            ]
        );
        assert!(!format!("{server:?}").contains("s3cret"));
    }

    #[test]
    fn urls_that_are_not_servers_are_refused_without_their_secrets() {
        for bad in [
            "nats://a:1",
            "kafka://",
            "kafka://a",
            "kafka://a:0",
            "kafka://a:99999",
            "kafka://a:1,,b:2",
            "kafka://a b:1",
        ] {
            assert!(Server::parse(bad, vars(&[])).is_err(), "{bad}");
        }
        let err = Server::parse("kafka://user:hunter2@a:9092", vars(&[])).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("credentials"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn any_url_is_taken_or_refused_in_one_line(url in "(kafka://)?\\PC{0,60}") {
            match Server::parse(&url, vars(&[])) {
                Ok(server) => proptest::prop_assert!(!server.bootstrap.is_empty()),
                Err(e) => proptest::prop_assert_eq!(e.to_string().lines().count(), 1),
            }
        }
    }
}
