//! One batch of the slot's changes: whole transactions peeked from the slot, decoded, and turned
//! into changes of events with the export's columns. A `rules` update becomes an update of
//! every current event of that rule with its new name (the `rule` column of past events
//! changes); which rule names events had in between is not in the stream.

use std::collections::HashMap;

use anyhow::{bail, Context as _, Result};
use arrow::array::AsArray as _;
use chrono::DateTime;
use duckdb::Connection;

use super::files::{Change, ChangeFile, Op};
use super::pgoutput::{decode, Lsn, Message, Relation, Value};
use super::Feed;
use crate::query::in_postgres;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH: i64 = 946_684_800_000_000;

/// What a read found: the LSN to confirm once its changes are written.
pub struct Batch {
    /// End of the last transaction read; `None` when there was nothing.
    pub end: Option<Lsn>,
    /// Whether the limit was reached (more may be waiting).
    pub full: bool,
}

/// Peeks up to about `max` messages (whole transactions), decodes them as they stream in, and
/// writes their changes of events to `out`.
pub fn read(feed: &Feed, out: &mut ChangeFile, max: u64) -> Result<Batch> {
    let sql = format!(
        "SELECT data FROM pg_logical_slot_peek_binary_changes('{slot}', NULL, {max}, \
         'proto_version', '1', 'publication_names', '{slot}')",
        slot = feed.slot
    );
    // Rule lookups run on a second connection while the peek streams on the first.
    let lookups = feed.engine.connection().try_clone()?;
    let mut decoder = Decoder {
        lookups: &lookups,
        rules: rule_names(&lookups)?,
        relations: HashMap::new(),
        out,
        lsn: Lsn::default(),
        xid: 0,
        commit_time: 0,
        batch: Batch {
            end: None,
            full: false,
        },
    };
    let messages = feed
        .engine
        .for_each_batch(&in_postgres(&sql), |batch| {
            let data = batch
                .column(0)
                .as_binary_opt::<i32>()
                .context("pgoutput data is binary")?;
            data.iter()
                .flatten()
                .try_for_each(|bytes| decoder.message(decode(bytes)?))
        })
        .map_err(|e| feed.explain(&format!("{e:#}")))?;
    decoder.batch.full = messages >= max;
    Ok(decoder.batch)
}

/// The current name of every rule.
fn rule_names(conn: &Connection) -> Result<HashMap<i64, String>> {
    let mut statement = conn
        .prepare(&in_postgres("SELECT id::bigint, name::text FROM rules"))
        .context("reading rule names")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

struct Decoder<'a> {
    lookups: &'a Connection,
    rules: HashMap<i64, String>,
    relations: HashMap<u32, Relation>,
    out: &'a mut ChangeFile,
    /// The commit LSN of the open transaction (Begin announces it).
    lsn: Lsn,
    xid: u32,
    commit_time: i64,
    batch: Batch,
}

impl Decoder<'_> {
    fn message(&mut self, message: Message) -> Result<()> {
        match message {
            Message::Begin {
                final_lsn,
                commit_time,
                xid,
            } => {
                self.lsn = final_lsn;
                self.xid = xid;
                self.commit_time = commit_time + POSTGRES_EPOCH;
            }
            Message::Commit { end_lsn, .. } => self.batch.end = Some(end_lsn),
            Message::Relation(relation) => {
                self.relations.insert(relation.oid, relation);
            }
            Message::Insert { relation, new } => self.row(relation, Op::Insert, &new)?,
            Message::Update { relation, new, .. } => self.row(relation, Op::Update, &new)?,
            Message::Delete { relation, old } => self.row(relation, Op::Delete, &old)?,
            Message::Truncate { .. } => bail!(
                "a TRUNCATE of events or rules is in the change stream: it has no row changes \
                 to write; drop the slot (--drop-slot), create it again (--create-slot) and \
                 take a new initial export"
            ),
            Message::Other(_) => {}
        }
        Ok(())
    }

    fn row(&mut self, oid: u32, op: Op, values: &[Value]) -> Result<()> {
        let relation = self.relations.get(&oid).with_context(|| {
            format!("pgoutput: a change of relation {oid} before its description")
        })?;
        let columns = Columns { relation, values };
        match relation.name.as_str() {
            "events" => {
                let change = self.event(op, &columns)?;
                self.out.push(change)?;
            }
            "rules" if op != Op::Delete => {
                let id = columns.int("id")?.context("a rule without id")?;
                let name = columns.text("name").context("a rule without name")?;
                self.rules.insert(id, name.to_owned());
                if op == Op::Update {
                    self.renamed(id)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn event(&self, op: Op, c: &Columns) -> Result<Change> {
        let rule = c
            .int("rule_id")?
            .and_then(|id| self.rules.get(&id).cloned());
        Ok(Change {
            lsn: self.lsn,
            commit_time: self.commit_time,
            xid: self.xid,
            op,
            id: c.int("id")?.context("an event without id")?,
            timestamp: c.text("timestamp").map(timestamp).transpose()?,
            rule,
            acknowledged: c.text("acknowledged").map(|t| t == "t"),
            telemetry: c.int("trigger_telemetry_id")?,
            device: c.int("trigger_device_id")?,
        })
    }

    /// Every current event of rule `id`, updated with the rule's new name.
    fn renamed(&mut self, id: i64) -> Result<()> {
        let sql = format!(
            "SELECT e.id::bigint, (extract(epoch FROM e.\"timestamp\") * 1000000)::bigint, \
             e.acknowledged, e.trigger_telemetry_id::bigint, e.trigger_device_id::bigint \
             FROM events AS e WHERE e.rule_id = {id} ORDER BY e.id"
        );
        let mut statement = self.lookups.prepare(&in_postgres(&sql))?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })?;
        let name = self.rules.get(&id).cloned();
        for row in rows {
            let (event, timestamp, acknowledged, telemetry, device) = row?;
            self.out.push(Change {
                lsn: self.lsn,
                commit_time: self.commit_time,
                xid: self.xid,
                op: Op::Update,
                id: event,
                timestamp: Some(timestamp),
                rule: name.clone(),
                acknowledged: Some(acknowledged),
                telemetry,
                device,
            })?;
        }
        Ok(())
    }
}

/// A row's values by column name.
struct Columns<'a> {
    relation: &'a Relation,
    values: &'a [Value],
}

impl Columns<'_> {
    fn text(&self, name: &str) -> Option<&str> {
        let i = self.relation.columns.iter().position(|c| c == name)?;
        match self.values.get(i)? {
            Value::Text(text) => Some(text),
            Value::Null | Value::Unchanged => None,
        }
    }

    fn int(&self, name: &str) -> Result<Option<i64>> {
        self.text(name)
            .map(|t| {
                t.parse()
                    .with_context(|| format!("{name} {t:?} is not an integer"))
            })
            .transpose()
    }
}

/// PostgreSQL's ISO text of a timestamptz (`2026-01-01 00:00:00.5+00`), in microseconds since
/// the Unix epoch.
fn timestamp(text: &str) -> Result<i64> {
    match text {
        "infinity" => return Ok(i64::MAX),
        "-infinity" => return Ok(i64::MIN),
        _ => {}
    }
    let parsed = DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z").with_context(|| {
        format!("timestamp {text:?} is not in PostgreSQL's ISO format (DateStyle ISO)")
    })?;
    Ok(parsed.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::timestamp;

    #[test]
    fn postgres_timestamps_in_any_zone() {
        assert_eq!(
            timestamp("2026-01-01 00:00:00.5+00").unwrap(),
            1_767_225_600_500_000
        );
        assert_eq!(
            timestamp("2026-01-01 05:30:00+05:30").unwrap(),
            1_767_225_600_000_000
        );
        assert_eq!(timestamp("1969-12-31 23:59:59.999999+00").unwrap(), -1);
        assert_eq!(timestamp("infinity").unwrap(), i64::MAX);
        assert!(timestamp("Thu Jan 01 00:00:00 2026 UTC").is_err());
    }
}
