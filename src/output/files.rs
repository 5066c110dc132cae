//! Files as an output: one file per format, or a partitioned dataset per format, in any store,
//! written from one read (a thread per format) and committed together with their manifest,
//! last. The targets are locked in order; their recovery completes what a killed run left, and
//! that of killed runs of the same `{time}` template.

use std::path::PathBuf;

use anyhow::{bail, Result};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};

use super::{Facts, Output};
use crate::error::UsageError;
use crate::model::{self, Zone};
use crate::plan::Files;
use crate::sink::dataset::{DatasetSink, PartitionBy};
use crate::sink::manifest::{self, Manifest};
use crate::sink::threaded::Started;
use crate::sink::Sink;
use crate::store::commit::commit_all;
use crate::store::{RunLock, Staged, Target, Wait, Written};
use crate::template::TIME;
use crate::{cancel, retention};

/// The files of a run.
pub struct FileSet<'a> {
    plan: &'a Files,
    schema: Option<SchemaRef>,
    writers: Started<Staged>,
    staged: Vec<Staged>,
}

impl<'a> FileSet<'a> {
    pub fn new(plan: &'a Files) -> Self {
        Self {
            plan,
            schema: None,
            writers: Started::default(),
            staged: Vec::new(),
        }
    }

    fn first(&self) -> &Target {
        &self.plan.targets[0].0
    }

    /// The sink of each target: a file of its format, or a dataset of such files.
    fn sinks(&self, schema: &SchemaRef) -> Result<Vec<Box<dyn Sink>>> {
        let plan = self.plan;
        plan.targets
            .iter()
            .map(|(target, format)| -> Result<Box<dyn Sink>> {
                match plan.layout.partition_by {
                    Some(by) => Ok(Box::new(DatasetSink::create(
                        target,
                        format,
                        schema.clone(),
                        &plan.encoding,
                        by,
                        plan.layout.max_rows_per_file,
                    )?)),
                    None => format.open(target, schema.clone(), &plan.encoding),
                }
            })
            .collect()
    }
}

impl Output for FileSet<'_> {
    /// Every target, in the order of its name, so two runs cannot each hold one. An object
    /// storage target is locked on this machine only.
    fn lock(&self, wait: Wait) -> Result<Vec<RunLock>> {
        let mut sorted: Vec<&Target> = self.plan.targets.iter().map(|(t, _)| t).collect();
        sorted.sort_by_key(|t| t.at.shown());
        sorted
            .into_iter()
            .map(|t| t.at.store().lock(t.at.key(), &t.at.shown(), wait))
            .collect()
    }

    fn recover(&mut self) -> Result<()> {
        let first = self.first();
        let mut keys: Vec<String> = self
            .plan
            .targets
            .iter()
            .map(|(t, _)| t.at.key().to_owned())
            .collect();
        keys.extend(
            self.plan
                .targets
                .iter()
                .map(|(t, _)| t.at.manifest().key().to_owned()),
        );
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        first.at.store().recover(&keys)?;
        if let Some(template) = &self.plan.template {
            let Some((prefix, _)) = template.name().split_once(TIME) else {
                return Ok(());
            };
            let current: Vec<&str> = self.plan.targets.iter().map(|(t, _)| t.at.key()).collect();
            template
                .store()
                .recover_runs(template.folder_key(), prefix, &current)?;
        }
        Ok(())
    }

    /// Every target can be written (credentials, bucket, permission) and, for a run that
    /// writes new files, is not there already.
    fn check(&mut self) -> Result<()> {
        for (target, _) in &self.plan.targets {
            let (store, key) = (target.at.store(), target.at.key());
            store.check_write(key)?;
            if self.plan.fresh && store.exists(key)? {
                bail!(UsageError(format!(
                    "{} already exists: each incremental run writes a new file; did the clock \
                     go back?",
                    target.at.shown()
                )));
            }
        }
        Ok(())
    }

    fn prepare(&mut self, zone: Zone, _incremental: bool) -> Result<()> {
        self.schema = Some(model::event_schema(zone));
        Ok(())
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone().expect("prepared before the rows")
    }

    fn by_rule(&self) -> bool {
        self.plan.layout.partition_by == Some(PartitionBy::Rule)
    }

    /// Beside the first target; for object storage, in `$TMPDIR`.
    fn spool(&self) -> PathBuf {
        let first = self.first();
        first.at.store().scratch(first.at.key())
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .plan
            .targets
            .iter()
            .map(|(t, _)| t.at.shown())
            .collect();
        names.push(self.first().at.manifest().shown());
        names
    }

    fn start(&mut self, _version: Option<i64>) -> Result<()> {
        let sinks = self.sinks(&self.schema())?;
        self.writers.start(sinks)
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writers.write(batch)
    }

    fn finish(&mut self) -> Result<()> {
        self.staged = self.writers.close()?;
        Ok(())
    }

    /// Puts the files in place with their manifest, committed last in the same commit after
    /// the previous manifest is removed: a manifest is never beside files it does not describe.
    /// A run that writes new files and found nothing writes none (unless asked to).
    fn commit(&mut self, facts: &Facts) -> Result<Vec<String>> {
        let staged = std::mem::take(&mut self.staged);
        if self.plan.fresh && facts.rows == 0 && !self.plan.write_empty {
            return Ok(Vec::new());
        }
        let first = self.first();
        let records: Vec<Written> = staged.iter().flat_map(Staged::records).collect();
        manifest::remove_old(&first.at)?;
        let manifest = Manifest::new(
            &first.at,
            facts.source.clone(),
            facts.since,
            facts.snapshot.clone(),
            self.plan
                .layout
                .partition_by
                .map(|b| format!("{b:?}").to_lowercase()),
            facts.rows,
            &records,
        )
        .stage(first)?;
        let mut all = staged;
        all.push(Staged::File(manifest));
        commit_all(first.at.store(), all)?;
        cancel::committed();
        Ok(self
            .plan
            .targets
            .iter()
            .map(|(t, _)| t.at.shown())
            .collect())
    }

    fn retain(&mut self, now: DateTime<Utc>, quiet: bool) -> Result<()> {
        let (Some(template), true) = (&self.plan.template, self.plan.keep.any()) else {
            return Ok(());
        };
        let first = self.first();
        retention::apply(template, &first.at.manifest(), &self.plan.keep, now, quiet)?;
        Ok(())
    }
}
