//! The slot read over PostgreSQL's streaming replication protocol (`START_REPLICATION ...
//! LOGICAL`, pgoutput protocol 1), through `pgwire-replication`: DuckDB's extension cannot open
//! a replication connection, so this is the one place a second PostgreSQL client is used. The
//! server decodes each change once, as it streams (the SQL peek re-decoded from the confirmed
//! position on every batch); positions are confirmed with standby status updates, and only by
//! the caller, after its batch is durable. Also creates a slot with an exported snapshot, the
//! starting point an initial export reads in.

use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use pgwire_replication::{PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent};

use super::pgoutput::{decode, Lsn, Message};
use crate::error::postgres::{class_of_code, class_of_text, code_in};
use crate::error::{class_of, Class, Failure};
use crate::runtime::runtime;
use crate::source::conninfo::Params;
use crate::source::settings::PgConnection;

/// What the stream brings.
pub enum Event {
    /// A pgoutput message of a transaction (Begin and Commit included).
    Message(Message),
    /// The server has sent everything up to this position: with no transaction open, nothing
    /// before it is left to read.
    Idle(Lsn),
}

/// A replication session.
pub struct Stream {
    client: ReplicationClient,
    pg: PgConnection,
    slot: String,
}

/// The session's settings from the export's connection settings.
fn config(pg: &PgConnection, slot: &str) -> Result<ReplicationConfig> {
    let params = Params::parse(pg.conninfo(), &|name| std::env::var(name).ok())?;
    let tls = params.tls()?;
    Ok(ReplicationConfig::new(
        params.host,
        params.user,
        params.password,
        params.dbname,
        slot,
        slot,
    )
    .with_port(params.port)
    .with_tls(tls)
    .with_options("-c datestyle=ISO -c timezone=UTC -c extra_float_digits=3")
    .with_application_name(format!("export-events {slot}"))
    .with_status_interval(Duration::from_millis(50))
    .with_wakeup_interval(Duration::from_secs(1)))
}

impl Stream {
    /// Starts streaming the slot from `from` (its confirmed position).
    pub fn open(pg: &PgConnection, slot: &str, from: Lsn) -> Result<Self> {
        let cfg = config(pg, slot)?
            .with_start_lsn(pgwire_replication::Lsn(from.0))
            .with_ack_lsn(pgwire_replication::Lsn(from.0));
        // The previous run's walsender may still be exiting and hold the slot for a moment.
        let mut attempts = 0;
        let client = loop {
            let started = runtime().block_on(async {
                let mut client = ReplicationClient::connect(cfg.clone()).await?;
                client.wait_started().await?;
                Ok::<_, pgwire_replication::PgWireError>(client)
            });
            match started.map_err(|e| explain(pg, slot, &e)) {
                Err(e) if class_of(&e) == Some(Class::InUse) && attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => break other,
            }
        }
        .with_context(|| format!("starting to stream slot {slot}"))?;
        Ok(Self {
            client,
            pg: pg.clone(),
            slot: slot.to_owned(),
        })
    }

    /// The next event, or `None` when nothing came within `wait`.
    pub fn next(&mut self, wait: Duration) -> Result<Option<Event>> {
        let client = &mut self.client;
        let received =
            runtime().block_on(async { tokio::time::timeout(wait, client.recv()).await });
        let event = match received {
            Err(_) => return Ok(None),
            Ok(Ok(Some(event))) => event,
            Ok(Ok(None)) => {
                return Err(Failure::new(
                    Class::SessionLost,
                    "the server ended the replication stream",
                    self.pg.origin,
                )
                .into())
            }
            Ok(Err(e)) => return Err(explain(&self.pg, &self.slot, &e)),
        };
        Ok(Some(match event {
            ReplicationEvent::KeepAlive { wal_end, .. } => Event::Idle(Lsn(wal_end.0)),
            ReplicationEvent::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => Event::Message(Message::Begin {
                final_lsn: Lsn(final_lsn.0),
                commit_time: commit_time_micros,
                xid,
            }),
            ReplicationEvent::Commit {
                lsn,
                end_lsn,
                commit_time_micros,
            } => Event::Message(Message::Commit {
                commit_lsn: Lsn(lsn.0),
                end_lsn: Lsn(end_lsn.0),
                commit_time: commit_time_micros,
            }),
            ReplicationEvent::XLogData { data, .. } => Event::Message(decode(&data)?),
            ReplicationEvent::Message { .. } => Event::Message(Message::Other(b'M')),
            ReplicationEvent::StoppedAt { reached } => Event::Idle(Lsn(reached.0)),
        }))
    }

    /// Tells the server everything up to `lsn` is durable: it may forget it. Sent with the
    /// next standby status update (within 50 ms).
    pub fn confirm(&self, lsn: Lsn) {
        self.client
            .update_applied_lsn(pgwire_replication::Lsn(lsn.0));
    }

    /// Ends the session cleanly (CopyDone), after the last confirmation went out.
    pub fn close(self) -> Result<()> {
        let Self {
            mut client,
            pg,
            slot,
        } = self;
        runtime()
            .block_on(async {
                tokio::time::sleep(Duration::from_millis(120)).await;
                client.shutdown().await
            })
            .map_err(|e| explain(&pg, &slot, &e))
    }
}

/// A slot created on a replication session that still holds the snapshot it exported: an
/// export that imports `snapshot` before this is dropped sees exactly the data before the
/// slot's first change.
pub struct Created {
    pub lsn: Lsn,
    pub snapshot: String,
    /// The session; the snapshot lives until it runs another command or ends.
    _session: ReplicationClient,
}

/// `CREATE_REPLICATION_SLOT slot LOGICAL pgoutput (SNAPSHOT 'export')` on a session kept open.
pub fn create_with_snapshot(pg: &PgConnection, slot: &str) -> Result<Created> {
    let cfg = config(pg, slot)?;
    let (session, rows) = runtime()
        .block_on(async {
            let mut session = ReplicationClient::connect_gated(cfg).await?;
            let rows = session
                .simple_query(&format!(
                    "CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput (SNAPSHOT 'export')"
                ))
                .await?;
            Ok::<_, pgwire_replication::PgWireError>((session, rows))
        })
        .map_err(|e| explain(pg, slot, &e))
        .with_context(|| format!("creating slot {slot} with an exported snapshot"))?;
    let text = |i: usize| -> Result<String> {
        let row = rows
            .first()
            .context("CREATE_REPLICATION_SLOT returned no row")?;
        let value = row
            .get(i)
            .cloned()
            .flatten()
            .context("a NULL in the slot's row")?;
        Ok(String::from_utf8_lossy(&value).into_owned())
    };
    Ok(Created {
        lsn: text(1)?.parse()?,
        snapshot: text(2)?,
        _session: session,
    })
}

/// The client's error as one line, secrets masked, classified by the SQLSTATE the server sent
/// with it. On a replication connection a missing `pg_hba.conf` line (28000) is about
/// replication, not the password.
fn explain(pg: &PgConnection, slot: &str, e: &PgWireError) -> anyhow::Error {
    let text = pg.redact(&e.to_string());
    let class = match e {
        PgWireError::Server(message) => match code_in(message) {
            Some("28000") => Some(Class::NotAllowed),
            // 55000 is also "wal_level": the message tells an invalidated slot apart.
            Some(code) => class_of_text(message).or_else(|| class_of_code(code)),
            None => None,
        },
        PgWireError::Tls(_) => Some(Class::Tls),
        // The connection failed under the session (reset, closed, refused while the server
        // restarts), or the client's worker ended with it.
        PgWireError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            Some(Class::Unreachable)
        }
        PgWireError::Io(_) | PgWireError::Task(_) => Some(Class::SessionLost),
        _ => None,
    };
    match class {
        Some(class @ (Class::AlreadyExists | Class::MissingSlot | Class::SlotLost)) => {
            Failure::new(class, &text, &format!("slot {slot}")).into()
        }
        Some(
            class @ (Class::AuthFailed
            | Class::NotAllowed
            | Class::InUse
            | Class::Tls
            | Class::SessionLost
            | Class::Unreachable
            | Class::TooManyConnections),
        ) => Failure::new(class, &text, pg.origin).into(),
        _ => anyhow!("{text}"),
    }
}
