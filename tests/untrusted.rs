//! What the tool reads back from an output folder (commit journals, incremental state,
//! manifests) is untrusted: shared folders, restored backups and other jobs put files there.
//! A planted or edited file must never make a run rename, delete or hash anything outside its
//! own output; it is refused with one line, and nothing is touched.

mod common;

use std::path::Path;

use common::*;

fn export(dir: &Path, db: &TestDb, args: &[&str]) -> Run {
    Run::of(
        export_events(dir)
            .args(["-q", "--database-url", &db.url()])
            .args(args),
    )
}

#[test]
fn a_planted_commit_journal_cannot_move_a_file_outside_the_output() {
    let db = TestDb::sample("untrusted_journal");
    let dir = scratch();
    let out = dir.path().join("out");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("payload"), "payload").unwrap();
    std::fs::write(elsewhere.join("config"), "config").unwrap();
    let journal = serde_json::json!([{
        "temp": elsewhere.join("payload"),
        "target": elsewhere.join("config"),
        "token": null,
    }]);
    std::fs::write(out.join(".x.csv.commit"), journal.to_string()).unwrap();
    export(
        dir.path(),
        &db,
        &["--format", "csv,parquet", "-o", "out/x.csv"],
    )
    .failure(2, "is not a commit journal export-events wrote");
    assert_eq!(
        std::fs::read_to_string(elsewhere.join("config")).unwrap(),
        "config"
    );
    assert!(elsewhere.join("payload").exists());
    // The same journal naming files of the output folder, but not a temporary of its target.
    let journal = serde_json::json!([{ "temp": "victim", "target": "x.csv", "token": null }]);
    std::fs::write(out.join("victim"), "victim").unwrap();
    std::fs::write(out.join(".x.csv.commit"), journal.to_string()).unwrap();
    export(
        dir.path(),
        &db,
        &["--format", "csv,parquet", "-o", "out/x.csv"],
    )
    .failure(2, "is not a temporary of");
    assert!(out.join("victim").exists() && !out.join("x.csv").exists());
    // Removed, as the message says, the export runs.
    std::fs::remove_file(out.join(".x.csv.commit")).unwrap();
    export(
        dir.path(),
        &db,
        &["--format", "csv,parquet", "-o", "out/x.csv"],
    )
    .success();
}

#[test]
fn an_edited_incremental_state_cannot_delete_outside_the_exports() {
    let db = TestDb::sample("untrusted_state");
    let dir = scratch();
    let run = |args: &[&str]| {
        Run::of(
            export_events(dir.path())
                .args(["-q", "--incremental", "--database-url", &db.url()])
                .args(args),
        )
    };
    run(&[]).success();
    let victim = dir.path().join("precious");
    std::fs::create_dir_all(victim.join("inside")).unwrap();
    std::fs::write(victim.join("inside/data"), "keep").unwrap();
    let state_path = dir.path().join("exports/.export-events-state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    for planted in [
        victim.display().to_string(),
        format!("{}/../precious", dir.path().join("exports").display()),
        dir.path()
            .join("exports/unrelated.csv")
            .display()
            .to_string(),
    ] {
        std::fs::write(dir.path().join("exports/unrelated.csv"), "keep").unwrap();
        state["pending"] = serde_json::json!([planted]);
        std::fs::write(&state_path, state.to_string()).unwrap();
        run(&[]).failure(2, "which is not a file of the runs of");
        assert_eq!(
            std::fs::read_to_string(victim.join("inside/data")).unwrap(),
            "keep"
        );
        assert!(dir.path().join("exports/unrelated.csv").exists());
    }
    // A pending file of this template's own runs is still removed and exported again.
    let leftover = dir.path().join("exports/events_20260101T000000.000Z.csv");
    std::fs::write(&leftover, "partial").unwrap();
    state["pending"] = serde_json::json!([leftover.display().to_string()]);
    std::fs::write(&state_path, state.to_string()).unwrap();
    run(&[]).success();
    assert!(!leftover.exists());
}

#[test]
fn retention_and_verify_never_follow_a_manifest_out_of_the_output() {
    let db = TestDb::sample("untrusted_manifest");
    let dir = scratch();
    let nightly = |extra: &[&str]| {
        let mut args = vec!["-o", "daily_{time}.csv"];
        args.extend_from_slice(extra);
        export(dir.path(), &db, &args)
    };
    nightly(&[]).success();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "keep").unwrap();
    let outside = scratch();
    let absolute = outside.path().join("absolute.txt");
    std::fs::write(&absolute, "keep").unwrap();
    // A manifest that sorts as an earlier run of this template, naming files outside it.
    let real = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".csv.manifest.json"))
        .unwrap();
    let mut planted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&real).unwrap()).unwrap();
    planted["files"][0]["path"] = "../victim.txt".into();
    let second = planted["files"][0].clone();
    planted["files"]
        .as_array_mut()
        .unwrap()
        .push(second.clone());
    planted["files"][1]["path"] = absolute.display().to_string().into();
    let planted_path = dir
        .path()
        .join("daily_20000101T000000.000Z.csv.manifest.json");
    std::fs::write(&planted_path, planted.to_string()).unwrap();
    nightly(&["--keep", "1"]).failure(2, "refusing it");
    assert!(victim.exists() && absolute.exists());
    Run::of(
        export_events(dir.path())
            .args(["verify"])
            .arg(&planted_path),
    )
    .failure(2, "refusing it");
    // Another template's runs are not this one's: daily_full_… is never counted or deleted.
    std::fs::remove_file(&planted_path).unwrap();
    let other = export(dir.path(), &db, &["-o", "daily_full_{time}.csv"]).success();
    nightly(&["--keep", "1"]).success();
    let full_path = other.stdout.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(Path::new(&full_path).exists(), "{full_path}");
    let daily: Vec<String> = files_in(dir.path())
        .into_iter()
        .filter(|f| f.starts_with("daily_2") && f.ends_with(".csv"))
        .collect();
    assert_eq!(
        daily.len(),
        1,
        "--keep 1 keeps the newest daily run: {daily:?}"
    );
}

#[test]
fn a_slot_record_is_private_and_never_written_through_a_symlink() {
    let db = TestDb::sample("untrusted_slot");
    let dir = scratch();
    let folder = dir.path().join("exports/changes");
    std::fs::create_dir_all(&folder).unwrap();
    let target = dir.path().join("target.txt");
    std::fs::write(&target, "keep").unwrap();
    let name = db.name.to_lowercase();
    std::os::unix::fs::symlink(&target, folder.join(format!("{name}.slot.json"))).unwrap();
    let _slot = Slot::create(&db, dir.path());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    let record = folder.join(format!("{name}.slot.json"));
    let meta = std::fs::symlink_metadata(&record).unwrap();
    assert!(meta.is_file(), "the symlink was replaced by the record");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[test]
fn a_planted_manifest_can_delete_only_its_own_run_and_only_if_it_is_ours() {
    use std::os::unix::fs::chown;
    let db = TestDb::sample("untrusted_keep");
    let dir = scratch();
    let nightly = |extra: &[&str]| {
        let mut args = vec!["-o", "ev_{time}.csv"];
        args.extend_from_slice(extra);
        export(dir.path(), &db, &args).success();
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let runs = |dir: &Path| -> Vec<String> {
        files_in(dir)
            .into_iter()
            .filter(|f| f.starts_with("ev_2") && !f.starts_with("ev_2000") && f.ends_with(".csv"))
            .collect()
    };
    for _ in 0..3 {
        nightly(&[]);
    }
    let newer = runs(dir.path());
    assert_eq!(newer.len(), 3);
    // A manifest named as the oldest run of the template, listing the newer runs' files.
    let real = dir.path().join(format!("{}.manifest.json", newer[0]));
    let mut planted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&real).unwrap()).unwrap();
    let entry = planted["files"][0].clone();
    planted["files"] = newer
        .iter()
        .map(|name| {
            let mut listed = entry.clone();
            listed["path"] = name.as_str().into();
            listed
        })
        .collect();
    let planted_path = dir.path().join("ev_20000101T000000.000Z.csv.manifest.json");
    std::fs::write(&planted_path, planted.to_string()).unwrap();
    let refused = export(dir.path(), &db, &["-o", "ev_{time}.csv", "--keep", "3"]);
    refused.failure(2, "which is not a file of its run");
    let kept = runs(dir.path());
    assert_eq!(
        kept.len(),
        4,
        "nothing is deleted on a planted manifest's word: {kept:?}"
    );
    assert!(newer.iter().all(|run| kept.contains(run)));

    // Another user's manifest naming its own run's file is left alone, and so is its file.
    let own_file = dir.path().join("ev_20000101T000000.000Z.csv");
    std::fs::write(&own_file, "theirs").unwrap();
    planted["files"][0]["path"] = "ev_20000101T000000.000Z.csv".into();
    planted["files"].as_array_mut().unwrap().truncate(1);
    std::fs::write(&planted_path, planted.to_string()).unwrap();
    chown(&planted_path, Some(65534), Some(65534)).unwrap();
    chown(&own_file, Some(65534), Some(65534)).unwrap();
    nightly(&["--keep", "2"]);
    assert!(
        planted_path.exists() && own_file.exists(),
        "another user's run is not ours"
    );
    assert_eq!(
        runs(dir.path()).len(),
        2,
        "--keep 2 keeps the newest two of ours"
    );

    // Made ours, the same manifest is an ordinary old run, and goes.
    chown(&planted_path, Some(0), Some(0)).unwrap();
    nightly(&["--keep", "2"]);
    assert!(!planted_path.exists() && !own_file.exists());
}
