//! The one classification of runtime failures. Each client boundary decides a failure's
//! [`Class`] once, from what that client hands over (a SQLSTATE, an `object_store::Error`
//! variant, a JetStream error kind, an `io::ErrorKind`; where a client gives only text, its
//! one table in [`super::postgres`]), and wraps it as a [`Failure`]. Control flow asks
//! [`class_of`]; the line a user reads and the exit status come from [`TABLE`].

/// What kind of failure it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The server ended the session (terminated, restarted, the connection dropped).
    SessionLost,
    /// The server, the role or the database has no connection left (SQLSTATE 53300).
    TooManyConnections,
    /// Wrong credentials (28P01, 28000).
    AuthFailed,
    /// The TLS handshake or the server's certificate failed.
    Tls,
    /// No server answered.
    Unreachable,
    /// The object is in use by another session (55006: a slot another walsender holds).
    InUse,
    /// It exists already (42710: a slot of that name).
    AlreadyExists,
    /// There is no such slot (42704).
    MissingSlot,
    /// The slot was invalidated: the server removed WAL it still needed (`wal_status` lost,
    /// `max_slot_wal_keep_size`), so changes after its position are gone.
    SlotLost,
    /// The role may not do this (42501), or may not connect for it.
    NotAllowed,
    /// A server setting forbids it (55000: logical decoding with `wal_level` below logical).
    Prerequisite,
    /// Object storage refused the credentials or the permission (HTTP 401/403).
    AccessDenied,
    /// Object storage has no such bucket (HTTP 404 on a write).
    NoBucket,
    /// Another writer changed what this run started from (a table's snapshot, a stream).
    Conflict,
}

/// Per class: the exit status, and how its line reads: `{detail}` is what the client said,
/// `{subject}` what it concerns (a setting's name, a URL, a slot).
const TABLE: &[(Class, u8, &str)] = &[
    (
        Class::SessionLost,
        1,
        "the PostgreSQL server closed the connection during the run (the session was \
         terminated, or the server restarted): {detail}",
    ),
    (Class::TooManyConnections, 1, "{detail}"),
    (
        Class::AuthFailed,
        1,
        "{detail}; check the user and password of {subject}",
    ),
    (
        Class::Tls,
        1,
        "{detail}; check sslmode and sslrootcert in {subject}, and the server's certificate",
    ),
    (
        Class::Unreachable,
        1,
        "{detail}; check the host, port and database of {subject}, and that the server is up",
    ),
    (Class::InUse, 1, "{detail}"),
    (
        Class::AlreadyExists,
        1,
        "{subject} already exists on this server: read it, or drop it first (--drop-slot)",
    ),
    (
        Class::MissingSlot,
        1,
        "{subject} does not exist ({detail}): create it with --create-slot",
    ),
    (
        Class::SlotLost,
        1,
        "{subject} was invalidated ({detail}): the server removed WAL it still needed \
         (max_slot_wal_keep_size), so the changes after its position are gone and no run can \
         deliver them; drop it (--drop-slot) and start again with --create-slot \
         --initial-export PATH into a new destination",
    ),
    (
        Class::NotAllowed,
        1,
        "{detail}: the change feed needs a role with REPLICATION (ALTER ROLE <role> \
         REPLICATION, as a superuser) and a pg_hba.conf line allowing it to connect",
    ),
    (
        Class::Prerequisite,
        1,
        "logical decoding is off on this server ({detail}): set wal_level = logical (ALTER \
         SYSTEM SET wal_level = logical) and restart PostgreSQL",
    ),
    (
        Class::AccessDenied,
        1,
        "{subject}: access denied; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and that \
         the key may write to the bucket",
    ),
    (
        Class::NoBucket,
        1,
        "{subject}: the bucket does not exist; create it or fix the URL",
    ),
    (Class::Conflict, 1, "{detail}"),
];

/// A failure, classified where a client handed it over.
#[derive(Debug)]
pub struct Failure {
    pub class: Class,
    line: String,
}

impl Failure {
    /// `class` of failure, the client saying `detail` about `subject`.
    pub fn new(class: Class, detail: &str, subject: &str) -> Self {
        let (_, _, template) = entry(class);
        Self {
            class,
            line: template
                .replace("{detail}", detail)
                .replace("{subject}", subject),
        }
    }

    /// The exit status of a run that ends with it.
    pub fn exit_code(&self) -> u8 {
        entry(self.class).1
    }
}

fn entry(class: Class) -> &'static (Class, u8, &'static str) {
    TABLE
        .iter()
        .find(|(c, ..)| *c == class)
        .expect("every class is in the table")
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line)
    }
}

impl std::error::Error for Failure {}

/// The class of the first classified failure in `err`'s chain.
pub fn class_of(err: &anyhow::Error) -> Option<Class> {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Failure>())
        .map(|f| f.class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_a_line_and_a_status() {
        for class in [
            Class::SessionLost,
            Class::TooManyConnections,
            Class::AuthFailed,
            Class::Tls,
            Class::Unreachable,
            Class::InUse,
            Class::AlreadyExists,
            Class::MissingSlot,
            Class::SlotLost,
            Class::NotAllowed,
            Class::Prerequisite,
            Class::AccessDenied,
            Class::NoBucket,
            Class::Conflict,
        ] {
            let failure = Failure::new(class, "what", "where");
            assert_eq!(failure.exit_code(), 1);
            assert!(!failure.to_string().contains('{'), "{failure}");
        }
        let err = anyhow::Error::new(Failure::new(Class::InUse, "x", "y")).context("z");
        assert_eq!(class_of(&err), Some(Class::InUse));
        assert_eq!(class_of(&anyhow::anyhow!("x")), None);
    }
}
