//! A fleet on one JetStream stream: the usual layout is one stream (`HUB` on `hub.>`) and each
//! database's feed on its own subject. Feeds publishing at the same moment must all succeed and
//! lose nothing (each message expects the subject's last message, not the stream's), while a
//! subject two feeds share stays refused.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream;
use common::*;

/// One stream taking every subject under a prefix, deleted at the end.
struct Shared {
    url: String,
    name: String,
    prefix: String,
    rt: tokio::runtime::Runtime,
}

impl Shared {
    fn create(label: &str) -> Self {
        let id = format!("{label}_{}", std::process::id());
        let shared = Self {
            url: setting("EXPORT_EVENTS_TEST_NATS"),
            name: format!("EE_{}", id.to_uppercase()),
            prefix: format!("ee.{id}"),
            rt: tokio::runtime::Runtime::new().unwrap(),
        };
        shared
            .rt
            .block_on(async {
                let js = jetstream::new(async_nats::connect(&shared.url).await.unwrap());
                js.create_stream(jetstream::stream::Config {
                    name: shared.name.clone(),
                    subjects: vec![format!("{}.>", shared.prefix)],
                    ..Default::default()
                })
                .await
            })
            .unwrap();
        shared
    }

    fn subject(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    /// The messages on `subject`, in stream order: (Nats-Msg-Id, JSON).
    fn messages(&self, subject: &str) -> Vec<(String, serde_json::Value)> {
        self.rt.block_on(async {
            let js = jetstream::new(async_nats::connect(&self.url).await.unwrap());
            let mut stream = js.get_stream(&self.name).await.unwrap();
            let last = stream.info().await.unwrap().state.last_sequence;
            let mut out = Vec::new();
            for seq in 1..=last {
                let m = stream.get_raw_message(seq).await.unwrap();
                if m.subject.as_str() == subject {
                    let id = m.headers.get("Nats-Msg-Id").unwrap().as_str().to_owned();
                    out.push((id, serde_json::from_slice(&m.payload).unwrap()));
                }
            }
            out
        })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.rt.block_on(async {
            if let Ok(client) = async_nats::connect(&self.url).await {
                let _ = jetstream::new(client).delete_stream(&self.name).await;
            }
        });
    }
}

/// 1,000 new events, then an update of each: 2,000 changes, two for each new id.
fn write(db: &TestDb) {
    let before = db.value("SELECT coalesce(max(id), 0) FROM events");
    db.sql(
        "INSERT INTO events (\"timestamp\", created_at, rule_id, acknowledged) \
         SELECT now(), now(), 1, false FROM generate_series(1, 1000)",
    );
    db.sql(&format!(
        "UPDATE events SET acknowledged = true WHERE id > {before}"
    ));
}

/// The feeds of `slots`, each stopped at its first change, then let go at the same moment.
fn at_once(slots: &[Slot], dir: &std::path::Path, to: &[Vec<String>]) -> Vec<Run> {
    let children: Vec<_> = slots
        .iter()
        .zip(to)
        .map(|(slot, to)| {
            let mut cmd = slot.changes(dir, &["-q"]);
            spawn_stopped_at(cmd.args(to), "stream.batch")
        })
        .collect();
    for child in &children {
        signal(child.id(), "CONT");
    }
    children.into_iter().map(finish).collect()
}

#[test]
fn three_feeds_on_their_own_subjects_of_one_stream_publish_at_once_and_lose_nothing() {
    let stream = Shared::create("fleet");
    let dbs = ["fleet_a", "fleet_b", "fleet_c"].map(TestDb::sample);
    let dir = scratch();
    let slots: Vec<Slot> = dbs.iter().map(|db| Slot::create(db, dir.path())).collect();
    dbs.iter().for_each(write);
    let to: Vec<Vec<String>> = slots
        .iter()
        .map(|slot| {
            let subject = stream.subject(&slot.name);
            ["--to", &stream.url, "--subject", &subject]
                .map(str::to_owned)
                .to_vec()
        })
        .collect();
    for run in at_once(&slots, dir.path(), &to) {
        run.success();
    }
    for slot in &slots {
        let messages = stream.messages(&stream.subject(&slot.name));
        assert_eq!(messages.len(), 2000, "{}", slot.name);
        // Per event: its insert, then its update, once each.
        let mut ops: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for (_, m) in &messages {
            ops.entry(m["id"].as_i64().unwrap())
                .or_default()
                .push(m["op"].as_str().unwrap().to_owned());
        }
        assert_eq!(ops.len(), 1000, "{}", slot.name);
        assert!(
            ops.values().all(|ops| ops == &["insert", "update"]),
            "{}: every change once, in order",
            slot.name
        );
        let ids: BTreeSet<&String> = messages.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), messages.len(), "no message twice");
    }
    // Run again with nothing new, one after another: nothing more is published.
    for (slot, to) in slots.iter().zip(&to) {
        let run = Run::of(slot.changes(dir.path(), &[]).args(to)).success();
        assert!(run.stdout.starts_with("Wrote 0 changes"), "{run}");
        assert_eq!(stream.messages(&stream.subject(&slot.name)).len(), 2000);
    }
}

#[test]
fn two_feeds_on_one_subject_of_a_shared_stream_are_refused_even_at_once() {
    let stream = Shared::create("fleet_shared");
    let dbs = ["fleet_same_a", "fleet_same_b"].map(TestDb::sample);
    let dir = scratch();
    let slots: Vec<Slot> = dbs.iter().map(|db| Slot::create(db, dir.path())).collect();
    dbs.iter().for_each(write);
    let subject = stream.subject("same");
    let to = ["--to", &stream.url, "--subject", &subject]
        .map(str::to_owned)
        .to_vec();
    let runs = at_once(&slots, dir.path(), &[to.clone(), to]);
    let (won, lost): (Vec<&Run>, Vec<&Run>) = runs.iter().partition(|run| run.code == Some(0));
    let shown: Vec<String> = runs.iter().map(ToString::to_string).collect();
    assert_eq!((won.len(), lost.len()), (1, 1), "{}", shown.join("\n"));
    assert!(
        lost[0].stderr.contains("not this feed's") && lost[0].stderr.lines().count() == 1,
        "{}",
        lost[0]
    );
    // The subject holds the winner's changes only, whole.
    let messages = stream.messages(&subject);
    let owners: BTreeSet<&str> = messages
        .iter()
        .map(|(id, _)| id.rsplitn(3, ':').nth(2).unwrap())
        .collect();
    assert_eq!(owners.len(), 1, "one feed's messages only");
    assert_eq!(messages.len(), 2000);
}
