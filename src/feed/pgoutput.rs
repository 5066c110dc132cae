//! Decoding of PostgreSQL's built-in `pgoutput` logical replication messages (protocol version
//! 1, text values), as `pg_logical_slot_peek_binary_changes` returns them: one message per row
//! of its `data` column. Pure and unit-tested on captured byte strings, so the feed never parses
//! text meant for humans (`test_decoding`).
//!
//! Reference: PostgreSQL's "Logical Replication Message Formats". All integers are big-endian;
//! strings end with a NUL byte; LSNs are 64-bit positions in the WAL.

use anyhow::{bail, Context as _, Result};

/// A WAL position, shown as PostgreSQL does (`16/B374D848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl std::str::FromStr for Lsn {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Self> {
        let (high, low) = text
            .split_once('/')
            .context("an LSN looks like 16/B374D848")?;
        let high = u64::from_str_radix(high, 16).context("an LSN's first part is hexadecimal")?;
        let low = u64::from_str_radix(low, 16).context("an LSN's second part is hexadecimal")?;
        Ok(Lsn((high << 32) | low))
    }
}

/// One column value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value the change did not touch (not sent).
    Unchanged,
    /// PostgreSQL's text output of the value.
    Text(String),
}

/// A table as the stream describes it before its first change (and after DDL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    pub columns: Vec<String>,
}

/// The messages the feed uses; the others are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin {
        final_lsn: Lsn,
        /// Microseconds since 2000-01-01 00:00:00 UTC.
        commit_time: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    },
    Relation(Relation),
    Insert {
        relation: u32,
        new: Vec<Value>,
    },
    Update {
        relation: u32,
        /// The old key or row, when REPLICA IDENTITY sends it.
        old: Option<Vec<Value>>,
        new: Vec<Value>,
    },
    Delete {
        relation: u32,
        /// The old key (default REPLICA IDENTITY) or the whole old row (FULL).
        old: Vec<Value>,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Origin, type and logical messages: nothing for the feed.
    Other(u8),
}

/// Decodes one message.
pub fn decode(bytes: &[u8]) -> Result<Message> {
    let mut r = Reader { bytes, at: 0 };
    let kind = r.u8()?;
    let message = match kind {
        b'B' => Message::Begin {
            final_lsn: Lsn(r.u64()?),
            commit_time: r.i64()?,
            xid: r.u32()?,
        },
        b'C' => {
            r.u8()?; // flags, unused
            Message::Commit {
                commit_lsn: Lsn(r.u64()?),
                end_lsn: Lsn(r.u64()?),
                commit_time: r.i64()?,
            }
        }
        b'R' => Message::Relation(r.relation()?),
        b'I' => {
            let relation = r.u32()?;
            r.expect(b'N')?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => r.update()?,
        b'D' => r.delete()?,
        b'T' => {
            let count = r.u32()?;
            r.u8()?; // options: CASCADE, RESTART IDENTITY
            let relations = (0..count).map(|_| r.u32()).collect::<Result<_>>()?;
            Message::Truncate { relations }
        }
        other => Message::Other(other),
    };
    Ok(message)
}

impl Reader<'_> {
    /// The body of a Relation message.
    fn relation(&mut self) -> Result<Relation> {
        let oid = self.u32()?;
        let namespace = self.string()?;
        let name = self.string()?;
        self.u8()?; // replica identity setting
        let count = self.u16()?;
        let mut columns = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            self.u8()?; // flags: part of the key
            columns.push(self.string()?);
            self.u32()?; // type OID
            self.u32()?; // type modifier
        }
        Ok(Relation {
            oid,
            namespace,
            name,
            columns,
        })
    }

    /// The body of an Update message: the old row (key or whole, when sent), then the new.
    fn update(&mut self) -> Result<Message> {
        let relation = self.u32()?;
        let old = match self.u8()? {
            b'K' | b'O' => {
                let old = self.tuple()?;
                self.expect(b'N')?;
                Some(old)
            }
            b'N' => None,
            other => bail!("pgoutput update: unexpected tuple kind {:?}", other as char),
        };
        Ok(Message::Update {
            relation,
            old,
            new: self.tuple()?,
        })
    }

    /// The body of a Delete message: the old row (key or whole).
    fn delete(&mut self) -> Result<Message> {
        let relation = self.u32()?;
        match self.u8()? {
            b'K' | b'O' => {}
            other => bail!("pgoutput delete: unexpected tuple kind {:?}", other as char),
        }
        Ok(Message::Delete {
            relation,
            old: self.tuple()?,
        })
    }
}

/// A cursor over one message.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let end = end.with_context(|| {
            format!(
                "pgoutput message cut short: {n} bytes wanted at offset {} of {}",
                self.at,
                self.bytes.len()
            )
        })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn expect(&mut self, kind: u8) -> Result<()> {
        let got = self.u8()?;
        if got != kind {
            bail!(
                "pgoutput: expected {:?}, found {:?}",
                kind as char,
                got as char
            );
        }
        Ok(())
    }

    fn string(&mut self) -> Result<String> {
        let rest = &self.bytes[self.at..];
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .context("pgoutput string without its NUL")?;
        let text = String::from_utf8(rest[..len].to_vec()).context("pgoutput string not UTF-8")?;
        self.at += len + 1;
        Ok(text)
    }

    fn tuple(&mut self) -> Result<Vec<Value>> {
        let count = self.u16()?;
        (0..count)
            .map(|_| {
                Ok(match self.u8()? {
                    b'n' => Value::Null,
                    b'u' => Value::Unchanged,
                    b't' => {
                        let len = self.u32()? as usize;
                        let text = self.take(len)?.to_vec();
                        Value::Text(String::from_utf8(text).context("pgoutput value not UTF-8")?)
                    }
                    other => bail!("pgoutput: unexpected value kind {:?}", other as char),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from PostgreSQL 15 (`pg_logical_slot_peek_binary_changes`, proto_version 1) for:
    /// an insert into events, a flip of `acknowledged`, a delete, a rename of a rule.
    fn captured(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    const BEGIN: &str = "4200000000f6adac0000030421ad7dad9700001f8c";
    const COMMIT: &str = "430000000000f6adac0000000000f6adac3000030421ad7dad97";
    const RELATION: &str = "52000044617075626c6963006576656e7473006400070169640000000014ffffffff0074696d657374616d7000000004a0ffffffff00637265617465645f617400000004a0ffffffff0072756c655f69640000000017ffffffff0061636b6e6f776c65646765640000000010ffffffff00747269676765725f74656c656d657472795f69640000000014ffffffff00747269676765725f6465766963655f69640000000014ffffffff";
    const INSERT: &str = "49000044614e0007740000000231377400000018323032362d30312d30312030303a30303a30302e352b3030740000001d323032362d31312d32362030303a32303a32312e3235353830342b30307400000001327400000001666e6e";
    const UPDATE: &str = "55000044614e00077400000001317400000016323032362d30322d30312030303a30303a30302b30307400000016323032362d30322d30312030303a30303a30312b3030740000000131740000000174740000000331303174000000023131";
    const DELETE: &str = "44000044614b00077400000001326e6e6e6e6e6e";

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn transactions_are_framed_by_begin_and_commit() {
        assert_eq!(
            decode(&captured(BEGIN)).unwrap(),
            Message::Begin {
                final_lsn: Lsn(0xF6AD_AC00),
                commit_time: 0x0003_0421_AD7D_AD97,
                xid: 8076
            }
        );
        assert_eq!(
            decode(&captured(COMMIT)).unwrap(),
            Message::Commit {
                commit_lsn: Lsn(0xF6AD_AC00),
                end_lsn: Lsn(0xF6AD_AC30),
                commit_time: 0x0003_0421_AD7D_AD97
            }
        );
    }

    #[test]
    fn relations_name_their_columns() {
        let Message::Relation(relation) = decode(&captured(RELATION)).unwrap() else {
            panic!("a relation");
        };
        assert_eq!(
            (relation.oid, &*relation.namespace, &*relation.name),
            (17505, "public", "events")
        );
        assert_eq!(
            relation.columns,
            [
                "id",
                "timestamp",
                "created_at",
                "rule_id",
                "acknowledged",
                "trigger_telemetry_id",
                "trigger_device_id"
            ]
        );
    }

    #[test]
    fn rows_carry_text_values_and_nulls() {
        assert_eq!(
            decode(&captured(INSERT)).unwrap(),
            Message::Insert {
                relation: 17505,
                new: vec![
                    text("17"),
                    text("2026-01-01 00:00:00.5+00"),
                    text("2026-11-26 00:20:21.255804+00"),
                    text("2"),
                    text("f"),
                    Value::Null,
                    Value::Null,
                ]
            }
        );
        let Message::Update { relation, old, new } = decode(&captured(UPDATE)).unwrap() else {
            panic!("an update");
        };
        assert_eq!((relation, old), (17505, None));
        assert_eq!(new[4], text("t"));
        assert_eq!(
            decode(&captured(DELETE)).unwrap(),
            Message::Delete {
                relation: 17505,
                old: vec![
                    text("2"),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null
                ]
            }
        );
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        let insert = captured(INSERT);
        for len in 0..insert.len() {
            assert!(decode(&insert[..len]).is_err(), "{len} bytes");
        }
    }

    #[test]
    fn lsns_read_and_print_as_postgresql_does() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn, Lsn(0x16_B374_D848));
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert!("16-B3".parse::<Lsn>().is_err());
    }
}
