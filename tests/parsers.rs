//! Every parser of input the tool does not control, fed what a hostile or broken peer could send:
//! `--since`, connection strings and URLs, output names and `s3://` URLs, `--format` lists,
//! manifests, Iceberg table names and catalogs, and the replication stream's pgoutput messages.
//! Whatever comes, the answer is a value or an error, never a panic. (Properties run by proptest in CI; the same functions are what a cargo-fuzz
//! target would call.)

use export_events::feed::pgoutput;
use export_events::sink::manifest::Manifest;
use export_events::source::conninfo::Params;
use export_events::source::settings::PgConnection;
use export_events::{since, sink, store};
use proptest::prelude::*;

/// Text made of the characters these parsers split on, and some of anything.
fn texty() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,60}",
        "[a-z0-9:/@?&=%.+ '\\\\-]{0,60}",
        "(postgres|postgresql|s3)://[a-z0-9:/@?&=%.+'\\\\-]{0,40}",
    ]
}

/// JSON values shaped like manifests, with every field possibly of the wrong type.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "\\PC{0,20}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("export-events manifest")),
        Just(serde_json::Value::from("../../etc/passwd")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("kind".to_owned()),
                    Just("version".to_owned()),
                    Just("files".to_owned()),
                    Just("path".to_owned()),
                    Just("rows".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn since_never_panics(text in texty()) {
        let _ = since::parse(&text, chrono::Utc::now());
    }

    #[test]
    fn connection_strings_never_panic(text in texty()) {
        if let Ok(pg) = PgConnection::new(&text, "--database-url") {
            let _ = pg.redact(&text);
            let _ = pg.conninfo_with_options("-c jit=off");
        }
        let _ = Params::parse(&text, &|_| None);
    }

    #[test]
    fn memory_sizes_never_panic(text in texty()) {
        if let Ok(bytes) = export_events::cli::parse_size(&text) {
            prop_assert!(bytes >= 16_000_000);
        }
    }

    #[test]
    fn object_urls_and_format_lists_never_panic(text in texty()) {
        let cwd = std::path::Path::new("/nonexistent/cwd");
        if let Ok(at) = store::url::locate(&text, cwd) {
            // A path stays absolute; an object key never climbs out of its bucket.
            prop_assert!(at.key().starts_with('/') || at.shown().starts_with("s3://"));
        }
        let _ = store::url::locate_folder(&text, cwd);
        let _ = store::url::of_recorded(&text);
        let _ = sink::registry::parse(&text);
    }

    #[test]
    fn table_names_and_catalogs_never_panic_and_stay_in_the_warehouse(
        name in prop_oneof![texty(), "[a-zA-Z0-9_./]{0,30}", "[a-z_]{1,8}(\\.[a-z_.]{0,8}){1,3}"],
        catalog in prop_oneof![texty(), "sqlite:[a-z0-9_./?=]{0,30}", "https?://[a-z0-9:@/.]{0,30}"],
        warehouse in prop_oneof![texty(), "s3://[a-z0-9./]{0,24}", "[a-z]{1,5}://[a-z./]{0,10}"],
    ) {
        use export_events::sink::table::{catalog::CatalogSpec, TableOutput};
        let cwd = std::path::Path::new("/nonexistent/cwd");
        let output = format!("iceberg:{name}");
        let resolved = TableOutput::resolve(
            Some(std::path::Path::new(&output)),
            Some("sqlite:lake.db"),
            Some(std::path::Path::new("wh")),
            cwd,
        );
        if let Ok(Some(table)) = resolved {
            // Whatever the name, what the tool keeps beside the table stays in the warehouse.
            let own = table.own_folder();
            prop_assert!(own.starts_with(cwd.join("wh/.export-events")), "{own:?}");
            prop_assert!(!own.components().any(|c| c == std::path::Component::ParentDir));
            prop_assert_eq!(own.components().count(), cwd.join("wh/.export-events/x").components().count());
        }
        if let Ok(spec) = CatalogSpec::parse(&catalog, cwd) {
            let _ = spec.shown();
        }
        // Any --warehouse: a value or a one-line refusal; an S3 prefix never climbs out.
        let resolved = TableOutput::resolve(
            Some(std::path::Path::new("iceberg:hub.events")),
            Some("sqlite:lake.db"),
            Some(std::path::Path::new(&warehouse)),
            cwd,
        );
        match resolved {
            Ok(Some(table)) => {
                let location = table.warehouse.location();
                let climbs = location.split('/').any(|p| p == "..");
                prop_assert!(!(location.starts_with("s3://") && climbs), "{location}");
            }
            Ok(None) => prop_assert!(false, "an iceberg: output is a table"),
            Err(e) => prop_assert!(!e.0.contains('\n'), "{}", e.0),
        }
    }

    #[test]
    fn manifests_never_panic(value in json_value(), raw in "\\PC{0,80}") {
        let mut value = value;
        if let Some(object) = value.as_object_mut() {
            object.insert("kind".into(), "export-events manifest".into());
        }
        if let Ok(manifest) = Manifest::parse(&value.to_string(), "m") {
            // Whatever it lists, the paths stay inside the manifest's folder or are refused.
            let folder = std::path::Path::new("/nonexistent/out");
            let at = store::url::local(&folder.join("x.manifest.json"));
            if let Ok(keys) = manifest.file_keys(&at) {
                prop_assert!(keys.iter().all(|k| k.starts_with("/nonexistent/out/")));
            }
        }
        let _ = Manifest::parse(&raw, "m");
    }

    #[test]
    fn pgoutput_messages_never_panic(
        tag in prop::sample::select(b"BCRIUDTOYM".to_vec()),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = vec![tag];
        bytes.extend(body);
        let _ = pgoutput::decode(&bytes);
    }
}
