//! An existing table, as other engines may have left it: whether export-events can write into
//! it as it is now. Its columns are matched by name (the writer lays rows out as the table's
//! current schema), so a reordered table, or one with an optional column added, is written as
//! it is; a column of ours dropped, renamed, retyped or made required, a required column we
//! cannot fill, or another partitioning than the one asked for, is refused in one line before
//! anything is read.

use anyhow::{bail, Result};
use iceberg::spec::Transform;
use iceberg::table::Table;

use crate::error::UsageError;

/// An existing table, if it holds the columns export-events writes and, when the user chose a
/// partitioning (`chosen`), is partitioned by `column` and `transform`.
pub fn check(
    table: Table,
    wanted: &iceberg::spec::Schema,
    (column, transform): (&str, Transform),
    chosen: bool,
    shown: &str,
) -> Result<Table> {
    check_columns(&table, wanted, shown)?;
    let have = table.metadata();
    let source = have.current_schema().field_id_by_name(column);
    let spec = have.default_partition_spec();
    let same = spec
        .fields()
        .iter()
        .any(|f| Some(f.source_id) == source && f.transform == transform);
    if chosen && !same {
        bail!(UsageError(format!(
            "table {shown} is partitioned as {:?}, not by {column} {transform}: drop \
             --partition-by (the table's own partitioning is used) or export to a new table",
            spec.fields()
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
        )));
    }
    Ok(table)
}

/// Every column of `wanted` in `table`, with the same type, and nothing the rows cannot fill:
/// other engines evolve a table (columns reordered, added, renamed), and what export-events can
/// honour (its columns in any order, an added optional column, which gets nulls) is written by
/// name; anything else is refused here, before a row is read.
fn check_columns(table: &Table, wanted: &iceberg::spec::Schema, shown: &str) -> Result<()> {
    let have = table.metadata().current_schema();
    for field in wanted.as_struct().fields() {
        match have.field_by_name(&field.name) {
            Some(found) if found.field_type != field.field_type => bail!(UsageError(format!(
                "table {shown} has column {} as {}, not {} as export-events writes it: export to \
                 a new table",
                field.name, found.field_type, field.field_type
            ))),
            Some(found) if found.required && !field.required => bail!(UsageError(format!(
                "table {shown} has column {} as required, and export-events writes nulls in it: \
                 make it optional again, or export to a new table",
                field.name
            ))),
            Some(_) => {}
            None if field.name == crate::model::POSITION
                || crate::model::FEED.iter().any(|c| c.name == field.name) =>
            {
                bail!(UsageError(format!(
                    "table {shown} has no column {}: it holds events, not changes; give the \
                     change feed a table of its own, such as {shown}_changes",
                    field.name
                )))
            }
            None if field.name == crate::model::VERSION => bail!(UsageError(format!(
                "table {shown} has no column {}: it holds a full export, not the versions of \
                 incremental runs; give the incremental runs a table of their own, such as \
                 {shown}_versions",
                field.name
            ))),
            None => bail!(UsageError(format!(
                "table {shown} has no column {} (dropped or renamed since, or not made by \
                 export-events): give it back that column, or export to a new table",
                field.name
            ))),
        }
    }
    let unknown_required = have
        .as_struct()
        .fields()
        .iter()
        .find(|f| f.required && wanted.field_by_name(&f.name).is_none());
    if let Some(column) = unknown_required {
        bail!(UsageError(format!(
            "table {shown} has a required column {} that export-events has no value for: make \
             it optional, or export to a new table",
            column.name
        )));
    }
    Ok(())
}
