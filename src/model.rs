//! The event as exported, written down once: a table of columns from which everything that has
//! a shape derives: the SQL select list, the Arrow (and Parquet) schema, the CSV header, the
//! change files' schema (the feed's own columns as a prefix), and how the change feed reads a
//! column out of a replicated row. The text of each value in CSV follows from its [`Kind`]
//! (`sink::text`). Adding a column is one line in [`EVENT`], plus its tests.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// What a column holds; decides its SQL cast, Arrow type and CSV text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 64-bit integer, written in decimal.
    Int64,
    /// An instant, microseconds in UTC, written as Python's `str(datetime)`.
    Timestamp,
    /// Text, written as it is.
    Text,
    /// Written `True`/`False`.
    Bool,
}

impl Kind {
    /// The Arrow type of the column in every output.
    pub fn arrow(self) -> DataType {
        match self {
            Kind::Int64 => DataType::Int64,
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::Text => DataType::Utf8,
            Kind::Bool => DataType::Boolean,
        }
    }

    /// The SQL type the query casts to, so every source yields the same Arrow type.
    fn sql(self) -> &'static str {
        match self {
            Kind::Int64 => "BIGINT",
            Kind::Timestamp => "TIMESTAMPTZ",
            Kind::Text => "VARCHAR",
            Kind::Bool => "BOOLEAN",
        }
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A column of `events` (alias `e` in the query).
    Event(&'static str),
    /// A column of the event's rule (`rules`, alias `r`, joined on `rule_id`).
    Rule(&'static str),
    /// Written by the change feed itself (LSN, commit time, ...).
    Feed,
}

/// One output column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub origin: Origin,
    pub kind: Kind,
    pub nullable: bool,
}

const fn column(name: &'static str, origin: Origin, kind: Kind, nullable: bool) -> Column {
    Column {
        name,
        origin,
        kind,
        nullable,
    }
}

/// The export's columns, in order: the original command's CSV header.
pub const EVENT: [Column; 6] = [
    column("id", Origin::Event("id"), Kind::Int64, false),
    column(
        "timestamp",
        Origin::Event("timestamp"),
        Kind::Timestamp,
        false,
    ),
    column("rule", Origin::Rule("name"), Kind::Text, false),
    column(
        "acknowledged",
        Origin::Event("acknowledged"),
        Kind::Bool,
        false,
    ),
    column(
        "trigger_telemetry_id",
        Origin::Event("trigger_telemetry_id"),
        Kind::Int64,
        true,
    ),
    column(
        "trigger_device_id",
        Origin::Event("trigger_device_id"),
        Kind::Int64,
        true,
    ),
];

/// The column that identifies an event (replay upserts and deletes by it).
pub const KEY: &str = "id";

/// The change feed's own columns, before the event's: where and what.
pub const FEED: [Column; 4] = [
    column("lsn", Origin::Feed, Kind::Text, false),
    column("commit_time", Origin::Feed, Kind::Timestamp, false),
    column("xid", Origin::Feed, Kind::Int64, false),
    column("op", Origin::Feed, Kind::Text, false),
];

impl Column {
    /// `e."timestamp"::TIMESTAMPTZ AS "timestamp"`: the column in the export query.
    fn select(&self) -> String {
        let source = match self.origin {
            Origin::Event(name) => format!("e.\"{name}\""),
            Origin::Rule(name) => format!("r.\"{name}\""),
            Origin::Feed => unreachable!("feed columns are not selected from the tables"),
        };
        format!("{source}::{} AS \"{}\"", self.kind.sql(), self.name)
    }

    fn field(&self) -> Field {
        Field::new(self.name, self.kind.arrow(), self.nullable)
    }
}

/// The export query's select list.
pub fn select_list() -> String {
    EVENT
        .iter()
        .map(Column::select)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The quoted names of the event columns, for an outer query over the export query.
pub fn names() -> String {
    EVENT
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The schema of export files.
pub fn event_schema() -> SchemaRef {
    Arc::new(Schema::new(
        EVENT.iter().map(Column::field).collect::<Vec<_>>(),
    ))
}

/// The columns of change files: the feed's, then the event's; a delete may carry only the key,
/// so every other event column may be null.
pub fn change_columns() -> Vec<Column> {
    let event = EVENT.iter().map(|c| Column {
        nullable: c.nullable || c.name != KEY,
        ..*c
    });
    FEED.iter().copied().chain(event).collect()
}

/// The schema of change files.
pub fn change_schema() -> SchemaRef {
    Arc::new(Schema::new(
        change_columns()
            .iter()
            .map(Column::field)
            .collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_the_original_commands() {
        let names: Vec<&str> = EVENT.iter().map(|c| c.name).collect();
        assert_eq!(
            names.join(","),
            "id,timestamp,rule,acknowledged,trigger_telemetry_id,trigger_device_id"
        );
    }

    #[test]
    fn the_select_list_casts_every_column_to_its_kind() {
        assert_eq!(
            select_list(),
            "e.\"id\"::BIGINT AS \"id\", e.\"timestamp\"::TIMESTAMPTZ AS \"timestamp\", \
             r.\"name\"::VARCHAR AS \"rule\", e.\"acknowledged\"::BOOLEAN AS \"acknowledged\", \
             e.\"trigger_telemetry_id\"::BIGINT AS \"trigger_telemetry_id\", \
             e.\"trigger_device_id\"::BIGINT AS \"trigger_device_id\""
        );
    }

    #[test]
    fn change_files_prefix_the_feed_columns_and_only_the_key_is_required() {
        let schema = change_schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let expected: Vec<&str> = FEED.iter().chain(&EVENT).map(|c| c.name).collect();
        assert_eq!(names, expected);
        let required: Vec<&str> = schema
            .fields()
            .iter()
            .filter(|f| !f.is_nullable())
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(required, ["lsn", "commit_time", "xid", "op", "id"]);
        assert_eq!(
            event_schema().field(1).data_type(),
            &Kind::Timestamp.arrow()
        );
    }
}
