//! The event as exported, written down once: a table of columns from which everything that has
//! a shape derives: the SQL select list, the Arrow (and Parquet) schema, the CSV header, the
//! change files' schema (the feed's own columns as a prefix), and how the change feed reads a
//! column out of a replicated row. The text of each value in CSV follows from its [`Kind`]
//! (`sink::text`). Adding a column is one line in [`EVENT`], plus its tests.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray as _};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

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

/// How a Hub's `timestamp` column keeps time, which Django's `USE_TZ` decides: `True` makes
/// `timestamp with time zone` (instants, written in UTC with `+00:00`, Parquet timestamps
/// adjusted to UTC); `False` makes `timestamp without time zone` (wall-clock values, written
/// without an offset as Django's `export_events` then did, Parquet timestamps not adjusted to
/// UTC). Read from the catalog, never assumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zone {
    #[default]
    Aware,
    Naive,
}

impl Zone {
    /// From the column's type as PostgreSQL (`format_type`) or DuckDB names it.
    pub fn of_type(name: &str) -> Self {
        let name = name.to_ascii_lowercase();
        let aware = !name.contains("without time zone")
            && (name.contains("with time zone") || name == "timestamptz");
        if aware || !name.starts_with("timestamp") {
            Zone::Aware
        } else {
            Zone::Naive
        }
    }
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

/// The column a dataset partitioned by rule is split by, selected after the event's columns
/// and never written to its files: the rule's id. A rule's name can be 255 characters (1,020
/// bytes), past what a folder name may hold, and can change; its id does neither.
pub const RULE_ID: &str = "rule_id";

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

    /// The column's Arrow field where the event's timestamp keeps time as `zone` says (the
    /// feed's own commit time is always an instant).
    fn field(&self, zone: Zone) -> Field {
        let data_type = match (self.kind, self.origin, zone) {
            (Kind::Timestamp, Origin::Event(_), Zone::Naive) => {
                DataType::Timestamp(TimeUnit::Microsecond, None)
            }
            (kind, ..) => kind.arrow(),
        };
        Field::new(self.name, data_type, self.nullable)
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

/// The select list of the events alone: the export's columns of `events`, then its
/// [`RULE_ID`] (the rule's columns are added by the caller, see `source::rules`).
pub fn event_select_list() -> String {
    EVENT
        .iter()
        .filter(|c| matches!(c.origin, Origin::Event(_)))
        .map(Column::select)
        .chain([format!("e.rule_id::BIGINT AS {RULE_ID}")])
        .collect::<Vec<_>>()
        .join(", ")
}

/// The model's rule columns (`Origin::Rule`), in order: what `query::rules` selects.
pub fn rule_columns() -> impl Iterator<Item = &'static str> {
    EVENT.iter().filter_map(|c| match c.origin {
        Origin::Rule(name) => Some(name),
        _ => None,
    })
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
pub fn event_schema(zone: Zone) -> SchemaRef {
    Arc::new(Schema::new(
        EVENT.iter().map(|c| c.field(zone)).collect::<Vec<_>>(),
    ))
}

/// The column a table of incremental runs adds after the event's: the snapshot horizon of the
/// run that exported the row (see `source::horizon`). It grows from run to run, so an event's
/// newest version is the row with its largest `version`.
pub const VERSION: &str = "version";

/// The schema of a table of incremental runs: the event's columns, then [`VERSION`].
pub fn versions_schema(zone: Zone) -> SchemaRef {
    let mut fields: Vec<Field> = EVENT.iter().map(|c| c.field(zone)).collect();
    fields.push(Field::new(VERSION, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// `batch` with its timestamp columns typed as `schema` has them (same values: the query reads
/// every timestamp as microseconds in UTC; a naive column's wall clock is read as UTC, so only
/// the type's time zone differs). Columns `schema` does not name pass as they are.
pub fn conform(batch: &RecordBatch, schema: &Schema) -> Result<RecordBatch, ArrowError> {
    let wanted = |field: &Field| {
        schema
            .field_with_name(field.name())
            .ok()
            .filter(|w| matches!(w.data_type(), DataType::Timestamp(..)))
            .filter(|w| w.data_type() != field.data_type())
            .map(|w| w.data_type().clone())
    };
    if batch.schema().fields().iter().all(|f| wanted(f).is_none()) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        match (
            wanted(field),
            column.as_primitive_opt::<TimestampMicrosecondType>(),
        ) {
            (Some(DataType::Timestamp(TimeUnit::Microsecond, tz)), Some(stamps)) => {
                columns.push(Arc::new(stamps.clone().with_timezone_opt(tz.clone())));
                fields.push(
                    field
                        .as_ref()
                        .clone()
                        .with_data_type(DataType::Timestamp(TimeUnit::Microsecond, tz)),
                );
            }
            _ => {
                columns.push(column.clone());
                fields.push(field.as_ref().clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
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
pub fn change_schema(zone: Zone) -> SchemaRef {
    Arc::new(Schema::new(
        change_columns()
            .iter()
            .map(|c| c.field(zone))
            .collect::<Vec<_>>(),
    ))
}

/// The column a table of changes adds after the change columns: the change's position in its
/// transaction (0, 1, ...). Rows of a table have no order, so (`lsn`, `position`) is what
/// orders the changes, and names each one (JetStream messages carry it in their ids).
pub const POSITION: &str = "position";

/// The schema of a table of changes: the change columns, then [`POSITION`].
pub fn change_table_schema(zone: Zone) -> SchemaRef {
    let mut fields: Vec<Field> = change_columns().iter().map(|c| c.field(zone)).collect();
    fields.push(Field::new(POSITION, DataType::Int64, false));
    Arc::new(Schema::new(fields))
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
        let schema = change_schema(Zone::Aware);
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
            event_schema(Zone::Aware).field(1).data_type(),
            &Kind::Timestamp.arrow()
        );
    }

    #[test]
    fn a_naive_timestamp_column_stays_naive_and_the_commit_time_an_instant() {
        for (name, zone) in [
            ("timestamp with time zone", Zone::Aware),
            ("TIMESTAMP WITH TIME ZONE", Zone::Aware),
            ("timestamptz", Zone::Aware),
            ("timestamp without time zone", Zone::Naive),
            ("timestamp(3) without time zone", Zone::Naive),
            ("TIMESTAMP", Zone::Naive),
        ] {
            assert_eq!(Zone::of_type(name), zone, "{name}");
        }
        let naive = DataType::Timestamp(TimeUnit::Microsecond, None);
        assert_eq!(event_schema(Zone::Naive).field(1).data_type(), &naive);
        let changes = change_schema(Zone::Naive);
        assert_eq!(changes.field(1).data_type(), &Kind::Timestamp.arrow());
        assert_eq!(
            changes.field_with_name("timestamp").unwrap().data_type(),
            &naive
        );
        let aware = arrow::array::TimestampMicrosecondArray::from(vec![7]).with_timezone("UTC");
        let batch =
            RecordBatch::try_from_iter([("timestamp", Arc::new(aware) as ArrayRef)]).unwrap();
        let conformed = conform(&batch, &event_schema(Zone::Naive)).unwrap();
        assert_eq!(conformed.schema().field(0).data_type(), &naive);
        assert_eq!(
            conformed
                .column(0)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            7
        );
    }
}
