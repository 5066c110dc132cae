//! A change as one message, the same for every messaging destination (JetStream, Kafka): JSON
//! with the change file's columns by name (timestamps in RFC 3339 UTC; a naive table's without
//! `Z`) plus `position`, the change's index in its transaction; and where it stands in the feed,
//! (commit LSN, position), which says whether the destination holds it already.

use anyhow::{bail, Result};
use chrono::{DateTime, SecondsFormat};
use serde_json::{Map, Value as Json};

use crate::feed::change::Value;
use crate::feed::pgoutput::Lsn;
use crate::model::{self, Zone};

/// Turns the changes of a batch into messages, counting positions within each transaction.
pub struct Encoder {
    names: Vec<&'static str>,
    /// Where the event's id is in a change row.
    key: Option<usize>,
    zone: Zone,
    /// The commit LSN of the transaction being encoded, and the next position in it.
    lsn: String,
    position: u64,
}

/// A change, encoded.
pub struct Message<'a> {
    /// The commit LSN as text (`16/B374D848`) and as a position.
    pub lsn: &'a str,
    pub commit: Lsn,
    pub position: u64,
    /// The event's id, where the change has one.
    pub id: Option<i64>,
    /// The JSON, built only when asked for (a change the destination holds is skipped).
    row: &'a [Value],
    encoder: &'a Encoder,
}

impl Encoder {
    pub fn new(zone: Zone) -> Self {
        let names: Vec<&'static str> = model::change_columns().iter().map(|c| c.name).collect();
        Self {
            key: names.iter().position(|name| *name == model::KEY),
            names,
            zone,
            lsn: String::new(),
            position: 0,
        }
    }

    /// The next change of the batch.
    pub fn next<'a>(&'a mut self, row: &'a [Value]) -> Result<Message<'a>> {
        let Some(Value::Text(lsn)) = row.first() else {
            bail!("a change without its LSN");
        };
        if *lsn != self.lsn {
            self.lsn.clone_from(lsn);
            self.position = 0;
        }
        let position = self.position;
        self.position += 1;
        let id = match self.key.and_then(|key| row.get(key)) {
            Some(Value::Int64(id)) => Some(*id),
            _ => None,
        };
        Ok(Message {
            lsn,
            commit: lsn.parse()?,
            position,
            id,
            row,
            encoder: self,
        })
    }
}

impl Message<'_> {
    /// Whether a destination that holds this feed's changes up to `last` holds this one.
    pub fn held(&self, last: Option<(Lsn, u64)>) -> bool {
        last.is_some_and(|last| (self.commit, self.position) <= last)
    }

    /// The JSON of the change.
    pub fn json(&self) -> Result<Vec<u8>> {
        let encoder = self.encoder;
        let mut object = Map::with_capacity(self.row.len() + 1);
        for (name, value) in encoder.names.iter().zip(self.row) {
            let mut value = json(value);
            // USE_TZ = False: the event's wall-clock time, without an offset.
            if (encoder.zone, *name) == (Zone::Naive, "timestamp") {
                if let Json::String(text) = &mut value {
                    text.truncate(text.trim_end_matches('Z').len());
                }
            }
            object.insert((*name).to_owned(), value);
        }
        object.insert("position".into(), self.position.into());
        Ok(serde_json::to_vec(&object)?)
    }
}

/// A change value as JSON: numbers, booleans, strings, RFC 3339 UTC instants, null.
fn json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Int64(v) => (*v).into(),
        Value::Bool(v) => (*v).into(),
        Value::Text(v) => v.clone().into(),
        Value::Timestamp(micros) => match *micros {
            i64::MAX => "infinity".into(),
            i64::MIN => "-infinity".into(),
            m => DateTime::from_timestamp_micros(m)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
                .into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_positions() {
        assert_eq!(
            json(&Value::Timestamp(1_000_000)),
            Json::from("1970-01-01T00:00:01.000000Z")
        );
        let mut encoder = Encoder::new(Zone::Aware);
        let row = |lsn: &str| vec![Value::Text(lsn.into())];
        let positions: Vec<u64> = ["0/10", "0/10", "0/20", "0/20", "0/20"]
            .iter()
            .map(|lsn| encoder.next(&row(lsn)).unwrap().position)
            .collect();
        assert_eq!(positions, [0, 1, 0, 1, 2]);
        let a = row("0/20");
        let m = encoder.next(&a).unwrap();
        assert!(m.held(Some((Lsn(0x20), 3))));
        assert!(!m.held(Some((Lsn(0x20), 2))));
        assert!(!m.held(None));
        assert!(encoder.next(&[]).is_err());
    }
}
