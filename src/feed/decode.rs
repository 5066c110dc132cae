//! The slot's changes, decoded (from the replication stream, or peeked through SQL) and turned
//! into change rows of the model's change columns. Each event column is read from the
//! replicated `events` row or, for the rule's columns, from the rule (kept current from the
//! stream). A `rules` update becomes an update of every current event of that rule with its new
//! values (the `rule` column of past events changes); which rule names events had in between is
//! not in the stream.

use std::collections::HashMap;

use anyhow::{bail, Context as _, Result};
use arrow::array::{Array, AsArray as _};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use duckdb::Connection;

use super::change::{Changes, Op, Value};
use super::pgoutput::{decode, Lsn, Message, Relation, Value as Datum};
use super::slot::Feed;
use crate::model::{self, Column, Kind, Origin};
use crate::source::engine::Engine;
use crate::source::query::{self, in_postgres};

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH: i64 = 946_684_800_000_000;

/// What a read found: the LSN to confirm once its changes are written.
pub struct Batch {
    /// End of the last transaction read; `None` when there was nothing.
    pub end: Option<Lsn>,
    /// Whether the limit was reached (more may be waiting).
    pub full: bool,
}

/// The SQL path (`--via sql`): peeks up to about `max` messages (whole transactions) with
/// `pg_logical_slot_peek_binary_changes`, decodes them as they stream in, and writes their
/// changes of events to `out`. Every call decodes again from the confirmed position.
pub fn read(feed: &Feed, out: &mut dyn Changes, max: u64) -> Result<Batch> {
    let sql = format!(
        "SELECT data FROM pg_logical_slot_peek_binary_changes('{slot}', NULL, {max}, \
         'proto_version', '1', 'publication_names', '{slot}')",
        slot = feed.slot
    );
    let mut decoder = Decoder::new(feed.engine)?;
    let mut batch = Batch {
        end: None,
        full: false,
    };
    let messages = feed
        .engine
        .for_each_batch(&in_postgres(&sql), |rows| {
            let data = rows
                .column(0)
                .as_binary_opt::<i32>()
                .context("pgoutput data is binary")?;
            data.iter().flatten().try_for_each(|bytes| {
                if let Some(end) = decoder.message(decode(bytes)?, out)? {
                    batch.end = Some(end);
                }
                Ok(())
            })
        })
        .map_err(|e| feed.explain(&format!("{e:#}")))?;
    batch.full = messages >= max;
    Ok(batch)
}

/// A rule's values of the columns the model reads from rules, by column name.
type Rule = HashMap<&'static str, String>;

/// Every rule's current values.
fn rules(conn: &Connection) -> Result<HashMap<i64, Rule>> {
    let mut statement = conn.prepare(&query::rules()).context("reading rules")?;
    let rows = statement.query_map([], |row| {
        let id: i64 = row.get(0)?;
        let mut rule = Rule::new();
        for (i, name) in model::rule_columns().enumerate() {
            let value: Option<String> = row.get(i + 1)?;
            rule.extend(value.map(|v| (name, v)));
        }
        Ok((id, rule))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Turns pgoutput messages into change rows, keeping the rules current.
pub struct Decoder {
    /// A second connection, for rule lookups while the first one streams.
    lookups: Engine,
    rules: HashMap<i64, Rule>,
    relations: HashMap<u32, Relation>,
    /// The commit LSN of the open transaction (Begin announces it).
    lsn: Lsn,
    xid: u32,
    commit_time: i64,
}

impl Decoder {
    /// A decoder that looks rules up through a connection of its own to `engine`'s database.
    pub fn new(engine: &Engine) -> Result<Self> {
        let lookups = Engine::from(engine.connection().try_clone()?);
        Ok(Self {
            rules: rules(lookups.connection())?,
            lookups,
            relations: HashMap::new(),
            lsn: Lsn::default(),
            xid: 0,
            commit_time: 0,
        })
    }

    /// Leaves its connection open when dropped: its PostgreSQL session may be gone (see
    /// `Engine::abandon`).
    pub fn abandon(&self) {
        self.lookups.abandon();
    }

    /// When the last transaction begun committed (microseconds since the Unix epoch).
    pub fn commit_time(&self) -> i64 {
        self.commit_time
    }

    /// Handles one message, writing its changes to `out`; at a commit, returns its end LSN.
    pub fn message(&mut self, message: Message, out: &mut dyn Changes) -> Result<Option<Lsn>> {
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
            Message::Commit { end_lsn, .. } => return Ok(Some(end_lsn)),
            Message::Relation(relation) => {
                self.relations.insert(relation.oid, relation);
            }
            Message::Insert { relation, new } => self.row(relation, Op::Insert, &new, out)?,
            Message::Update { relation, new, .. } => self.row(relation, Op::Update, &new, out)?,
            Message::Delete { relation, old } => self.row(relation, Op::Delete, &old, out)?,
            Message::Truncate { .. } => bail!(
                "a TRUNCATE of events or rules is in the change stream: it has no row changes \
                 to write; drop the slot (--drop-slot), create it again (--create-slot) and \
                 take a new initial export"
            ),
            Message::Other(_) => {}
        }
        Ok(None)
    }

    fn row(&mut self, oid: u32, op: Op, values: &[Datum], out: &mut dyn Changes) -> Result<()> {
        let relation = self.relations.get(&oid).with_context(|| {
            format!("pgoutput: a change of relation {oid} before its description")
        })?;
        let row = Row { relation, values };
        match relation.name.as_str() {
            "events" => {
                let rule = row
                    .text("rule_id")
                    .map(|id| id.parse::<i64>())
                    .transpose()
                    .context("rule_id is not an integer")?
                    .and_then(|id| self.rules.get(&id));
                let mut change = self.prefix(op);
                for column in &model::EVENT {
                    change.push(match column.origin {
                        Origin::Event(name) => parse(column, row.text(name))?,
                        Origin::Rule(name) => parse(column, rule.and_then(|r| r.get(name)))?,
                        Origin::Feed => Value::Null,
                    });
                }
                out.push(&change)?;
            }
            // A deleted rule has no events left (they reference it); nothing to write.
            "rules" if op == Op::Delete => {}
            "rules" => {
                let id: i64 = row
                    .text("id")
                    .context("a rule without id")?
                    .parse()
                    .context("a rule id is not an integer")?;
                let rule: Rule = model::rule_columns()
                    .filter_map(|name| Some((name, row.text(name)?.clone())))
                    .collect();
                if op == Op::Update {
                    self.renamed(id, &rule, out)?;
                }
                self.rules.insert(id, rule);
            }
            // Never dropped silently: a change the feed cannot place would be lost.
            other => bail!(
                "pgoutput: a change of table {}.{other}, which the change feed cannot place (it \
                 follows events and rules; a partition's changes must come through its root): \
                 recreate the slot with --create-slot, which publishes partitions through the \
                 root",
                relation.namespace
            ),
        }
        Ok(())
    }

    /// The feed's columns of a change in the open transaction.
    fn prefix(&self, op: Op) -> Vec<Value> {
        vec![
            Value::Text(self.lsn.to_string()),
            Value::Timestamp(self.commit_time),
            Value::Int64(i64::from(self.xid)),
            Value::Text(op.name().to_owned()),
        ]
    }

    /// Every current event of rule `id`, updated with the rule's new values.
    fn renamed(&mut self, id: i64, rule: &Rule, out: &mut dyn Changes) -> Result<()> {
        let sql = query::events_of_rule(id);
        let lsn_prefix = self.prefix(Op::Update);
        self.lookups.for_each_batch(&sql, |batch| {
            for row in 0..batch.num_rows() {
                let mut change = lsn_prefix.clone();
                for (i, column) in model::EVENT.iter().enumerate() {
                    change.push(match column.origin {
                        Origin::Rule(name) => parse(column, rule.get(name))?,
                        _ => typed(batch, i, row, column.kind),
                    });
                }
                out.push(&change)?;
            }
            Ok(())
        })?;
        Ok(())
    }
}

/// A replicated row's values by column name.
struct Row<'a> {
    relation: &'a Relation,
    values: &'a [Datum],
}

impl Row<'_> {
    fn text(&self, name: &str) -> Option<&String> {
        let i = self.relation.columns.iter().position(|c| c == name)?;
        match self.values.get(i)? {
            Datum::Text(text) => Some(text),
            Datum::Null | Datum::Unchanged => None,
        }
    }
}

/// PostgreSQL's text of a value (or its absence) as a value of `column`.
fn parse(column: &Column, text: Option<&String>) -> Result<Value> {
    let Some(text) = text else {
        return Ok(Value::Null);
    };
    let invalid = || format!("{} {text:?} is not a {:?} value", column.name, column.kind);
    Ok(match column.kind {
        Kind::Int64 => Value::Int64(text.parse().with_context(invalid)?),
        Kind::Timestamp => Value::Timestamp(super::pgtime::micros(text)?),
        Kind::Text => Value::Text(text.clone()),
        Kind::Bool => Value::Bool(text == "t"),
    })
}

/// Row `row` of column `i` of an export-query batch, as a value of `kind`.
fn typed(batch: &RecordBatch, i: usize, row: usize, kind: Kind) -> Value {
    let array = batch.column(i);
    if array.is_null(row) {
        return Value::Null;
    }
    match kind {
        Kind::Int64 => Value::Int64(array.as_primitive::<Int64Type>().value(row)),
        Kind::Timestamp => {
            Value::Timestamp(array.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        Kind::Text => Value::Text(
            array
                .as_string_opt::<i32>()
                .map(|a| a.value(row).to_owned())
                .unwrap_or_else(|| array.as_string_view().value(row).to_owned()),
        ),
        Kind::Bool => Value::Bool(array.as_boolean().value(row)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicated_text_becomes_values_of_each_kind() {
        let text = |t: &str| Some(t.to_owned());
        let [id, stamp, rule, ack, ..] = &model::EVENT;
        assert_eq!(parse(id, text("42").as_ref()).unwrap(), Value::Int64(42));
        assert_eq!(
            parse(stamp, text("1970-01-01 00:00:01+00").as_ref()).unwrap(),
            Value::Timestamp(1_000_000)
        );
        assert_eq!(
            parse(rule, text("a, \"b\"").as_ref()).unwrap(),
            Value::Text("a, \"b\"".into())
        );
        assert_eq!(parse(ack, text("f").as_ref()).unwrap(), Value::Bool(false));
        assert_eq!(parse(id, None).unwrap(), Value::Null);
        assert!(parse(id, text("x").as_ref()).is_err());
    }
}
