//! Where the feed's batches go, one module a kind, as the formats are listed in
//! `sink::registry`: change files in a folder or `s3://` prefix ([`files`]), a NATS JetStream
//! subject ([`nats`]), a Kafka topic ([`kafka`]), an Iceberg table ([`table`]). Each module contributes one
//! [`Registration`] and one line in [`SINKS`]; adding a destination touches nothing else.

pub mod api;
mod files;
mod ids;
mod kafka;
mod message;
mod nats;
mod table;

use crate::error::UsageError;
use api::{Registration, Request, SinkPlan};

/// Every kind of destination; the fallback (change files) last.
pub const SINKS: &[&Registration] = &[&nats::SINK, &kafka::SINK, &table::SINK, &files::SINK];

/// The destination `request` names: the one kind that takes it, else the fallback.
pub fn resolve(request: &Request) -> Result<Box<dyn SinkPlan>, UsageError> {
    let taken: Vec<&&Registration> = SINKS.iter().filter(|s| (s.takes)(request)).collect();
    match taken[..] {
        [one] => (one.resolve)(request),
        [] => match (request.to, SINKS.iter().find(|s| s.fallback)) {
            (None, Some(fallback)) => (fallback.resolve)(request),
            (to, _) => {
                let examples: Vec<&str> = SINKS
                    .iter()
                    .filter(|s| !s.fallback)
                    .map(|s| s.example)
                    .collect();
                Err(UsageError(format!(
                    "--to {}: no change destination takes it; give one such as {}",
                    crate::error::masked_url(to.unwrap_or_default()),
                    examples.join(" or ")
                )))
            }
        },
        [..] => Err(UsageError(format!(
            "changes: give one destination, --to or --output {}, not both",
            taken
                .iter()
                .map(|s| s.example)
                .collect::<Vec<_>>()
                .join(" or ")
        ))),
    }
}
