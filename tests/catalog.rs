//! Catalog validation with good and broken files, and seeding on both backends.

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::path::{Path, PathBuf};

use common::{Backend, TestDb};
use persona_runner::catalog::{self, CatalogError, Rules};
use persona_runner::config::CatalogConfig;
use persona_runner::model::persona::DEFAULT_TENANT;
use serde_json::json;

fn rules() -> Rules {
    Rules::from(&CatalogConfig::default())
}

fn shipped() -> Vec<PathBuf> {
    ["catalog/consumer-app.json", "catalog/sop-finance.json"]
        .iter()
        .map(|f| Path::new(env!("CARGO_MANIFEST_DIR")).join(f))
        .collect()
}

#[test]
fn the_shipped_catalogs_validate() {
    let catalogs = catalog::load(&shipped(), &rules()).unwrap_or_else(|err| panic!("{err}"));
    let consumer = &catalogs[0].personas;
    assert_eq!(consumer.len(), 10);
    let mut archetypes: Vec<_> = consumer.iter().map(|p| p.archetype.as_str()).collect();
    archetypes.sort();
    archetypes.dedup();
    assert_eq!(archetypes.len(), 7);
    assert!(consumer.iter().any(|p| p.email == "persona.anna@mana.test"));
    let cadences: std::collections::BTreeSet<_> = consumer.iter().map(|p| p.tick_cadence.to_string()).collect();
    assert!(
        cadences.contains("daily") && cadences.contains("weekdays"),
        "{cadences:?}"
    );

    let roles = &catalogs[1].personas;
    assert_eq!(roles.len(), 12);
    let flows: Vec<_> = roles.iter().filter_map(|p| p.flow.map(|f| f.as_str())).collect();
    assert_eq!(flows.iter().filter(|f| **f == "S&OP").count(), 7);
    assert_eq!(flows.iter().filter(|f| **f == "Financial").count(), 5);
    for role in roles {
        assert!(
            !role.key_metrics.is_empty() && role.detail_level.is_some() && role.headline_type.is_some(),
            "{}",
            role.name
        );
        assert!(
            role.hero_chart_type.is_some() && !role.required_data_sources.is_empty() && !role.actions.is_empty(),
            "{}",
            role.name
        );
    }
}

#[test]
fn the_reference_catalog_format_loads_unchanged() {
    let reference = json!({"personas": [{
        "name": "Anna",
        "email": "persona.anna@mana.test",
        "archetype": "adhd-student",
        "systemPrompt": "Du bist Anna, 21, studierst Biologie in Leipzig und verlierst ständig den Überblick über Abgaben.",
        "moduleMix": {"todo": 0.5, "calendar": 0.3, "mood": 0.2},
        "tickCadence": "daily"
    }]});
    let catalog = catalog::validate_text(Path::new("reference.json"), &reference.to_string(), &rules()).unwrap();
    assert_eq!(catalog.personas[0].time_zone, None, "new fields stay optional");
}

/// A copy of a valid persona with one thing broken per entry.
fn broken_catalog() -> serde_json::Value {
    let good = json!({
        "name": "Anna",
        "email": "persona.anna@mana.test",
        "archetype": "adhd-student",
        "systemPrompt": "Du bist Anna, 21, studierst Biologie in Leipzig und verlierst ständig den Überblick über Abgaben.",
        "moduleMix": {"todo": 0.5, "calendar": 0.5},
        "tickCadence": "daily"
    });
    let with = |changes: serde_json::Value| {
        let mut persona = good.clone();
        for (key, value) in changes.as_object().unwrap() {
            if value.is_null() {
                persona.as_object_mut().unwrap().remove(key);
            } else {
                persona[key] = value.clone();
            }
        }
        persona
    };
    json!({"personas": [
        good.clone(),
        with(json!({"name": "B1", "email": null})),
        with(json!({"name": "B2", "email": "anna@gmail.com"})),
        with(json!({"name": "B3", "email": "not-an-email"})),
        with(json!({"name": "B4"})),
        with(json!({"email": "persona.b5@mana.test"})),
        with(json!({"name": "B6", "email": "persona.b6@mana.test", "moduleMix": {"todo": -1, "notes": 2}})),
        with(json!({"name": "B7", "email": "persona.b7@mana.test", "moduleMix": {"todo": 0, "notes": 0}})),
        with(json!({"name": "B8", "email": "persona.b8@mana.test", "tickCadence": "fortnightly"})),
        with(json!({"name": "B9", "email": "persona.b9@mana.test", "tickCadence": "0 25 * * *"})),
        with(json!({"name": "B10", "email": "persona.b10@mana.test", "timeZone": "Europe/Atlantis"})),
        with(json!({"name": "B11", "email": "persona.b11@mana.test", "systemPrompt": "Du bist kurz."})),
        with(json!({"name": "B12", "email": "persona.b12@mana.test", "favouriteColour": "blue"})),
        with(json!({"name": "B13", "email": "persona.b13@mana.test", "moduleMix": "todo"})),
        with(json!({"name": "B14", "email": "persona.b14@mana.test", "tickCadence": "0 0 31 2 *"})),
        with(json!({"name": "B15", "email": "persona.b15@mana.test", "moduleMix": {"todo": 1e308, "notes": 1}})),
        with(json!({"name": "N".repeat(10_000), "email": "persona.b16@mana.test"})),
        with(json!({"name": "B17", "email": "persona.b17@mana.test", "systemPrompt": "Du bist Anna. ".repeat(1_200_000)})),
    ], "extra": true})
}

#[test]
fn a_broken_catalog_reports_every_problem_with_its_path() {
    let problems =
        catalog::validate_text(Path::new("broken.json"), &broken_catalog().to_string(), &rules()).unwrap_err();
    let rendered: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect();
    let expect = [
        ("extra", "unknown field"),
        ("personas[1].email", "missing required field"),
        ("personas[2].email", "must end in a test domain"),
        ("personas[3].email", "not an email address"),
        ("personas[4].email", "duplicate email"),
        ("personas[5].name", "duplicate name"),
        ("personas[6].moduleMix.todo", "less than the minimum of 0"),
        ("personas[7].moduleMix", "all weights are zero"),
        ("personas[8].tickCadence", "expected hourly, daily, weekdays"),
        ("personas[9].tickCadence", "not a valid cron expression"),
        ("personas[10].timeZone", "not an IANA time zone"),
        ("personas[11].systemPrompt", "prompt too short"),
        ("personas[12].favouriteColour", "unknown field"),
        ("personas[13].moduleMix", "not of type \"object\""),
        ("personas[14].tickCadence", "never fires in the next 400 days"),
        ("personas[15].moduleMix.todo", "too large"),
        ("personas[16].name", "too long: 10000 characters, at most 200"),
        ("personas[17].systemPrompt", "prompt too long"),
    ];
    for (path, message) in expect {
        assert!(
            problems.iter().any(|p| p.path == path && p.message.contains(message)),
            "expected `{path}: …{message}…` among:\n{}",
            rendered.join("\n")
        );
    }
    assert_eq!(
        problems.len(),
        expect.len(),
        "one report per problem:\n{}",
        rendered.join("\n")
    );
    assert!(problems.iter().all(|p| p.file == Path::new("broken.json")));
}

#[test]
fn invalid_json_names_the_line_and_column() {
    let problems = catalog::validate_text(Path::new("x.json"), "{\"personas\": [\n  {,]}", &rules()).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].message.contains("line 2, column 4"),
        "{}",
        problems[0].message
    );
}

#[test]
fn duplicates_count_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let one = json!({"personas": [broken_catalog()["personas"][0].clone()]});
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    std::fs::write(&a, one.to_string()).unwrap();
    std::fs::write(&b, one.to_string()).unwrap();
    let Err(CatalogError::Invalid(problems)) = catalog::load(&[a, b.clone()], &rules()) else {
        panic!("duplicates across files must fail");
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().all(|p| p.file == b && p.message.contains("a.json")));
}

#[test]
fn allowed_domains_come_from_the_config() {
    let text = json!({"personas": [broken_catalog()["personas"][0].clone()]}).to_string();
    let strict = Rules {
        allowed_email_domains: vec!["example.test".into()],
        min_prompt_chars: 10,
        max_file_bytes: 1024,
    };
    let problems = catalog::validate_text(Path::new("x.json"), &text, &strict).unwrap_err();
    assert!(problems[0].message.contains(".example.test"), "{}", problems[0].message);
}

#[test]
fn a_file_over_the_size_cap_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.json");
    std::fs::write(
        &file,
        json!({"personas": [broken_catalog()["personas"][0].clone()]}).to_string(),
    )
    .unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    let rules = |max_file_bytes| Rules {
        allowed_email_domains: vec!["test".into()],
        min_prompt_chars: 1,
        max_file_bytes,
    };
    let err = catalog::validate(std::slice::from_ref(&file), &rules(size - 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("big.json"), "{err}");
    assert!(
        err.contains(&format!(
            "the file has {size} bytes, more than catalog.max_file_bytes = {}",
            size - 1
        )),
        "{err}"
    );
    // At the cap the file is read and checked as usual.
    let checked = catalog::validate(&[file], &rules(size)).unwrap();
    assert_eq!(checked[0].personas, 1);
}

async fn seeding_twice_leaves_22_personas_unchanged(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let mut catalogs = catalog::load(&shipped(), &rules()).unwrap();

    let first = catalog::seed(&store, DEFAULT_TENANT, &catalogs, "UTC").await.unwrap();
    assert_eq!((first.created, first.updated, first.unchanged), (22, 0, 0));
    let second = catalog::seed(&store, DEFAULT_TENANT, &catalogs, "UTC").await.unwrap();
    assert_eq!((second.created, second.updated, second.unchanged), (0, 0, 22));
    let counts = store.row_counts(DEFAULT_TENANT).await.unwrap();
    assert_eq!((counts.personas, counts.persona_users, counts.profiles), (22, 22, 22));

    catalogs[0].personas[3]
        .system_prompt
        .push_str(" Seit Kurzem führt sie ein Dankbarkeitstagebuch.");
    let third = catalog::seed(&store, DEFAULT_TENANT, &catalogs, "UTC").await.unwrap();
    assert_eq!((third.created, third.updated, third.unchanged), (0, 1, 21));
    let edited = store
        .find_persona(DEFAULT_TENANT, &catalogs[0].personas[3].email)
        .await
        .unwrap()
        .unwrap();
    assert!(edited.system_prompt.ends_with("Dankbarkeitstagebuch."));

    let consumer: std::collections::HashSet<String> = catalogs[0].personas.iter().map(|p| p.email.clone()).collect();
    let cleanup = catalog::cleanup(&store, DEFAULT_TENANT, &consumer).await.unwrap();
    assert_eq!(cleanup.deleted.users_deleted, 22);
    assert_eq!(
        cleanup.unlisted.len(),
        12,
        "the role personas are not in the consumer catalog"
    );
    assert_eq!(store.row_counts(DEFAULT_TENANT).await.unwrap().personas, 0);
}

/// A catalog whose second entry is refused by the store (it names a human's account).
async fn a_seed_run_that_fails_leaves_the_store_as_it_was(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    store
        .create_user(
            DEFAULT_TENANT,
            "persona.human@mana.test",
            "A Human",
            persona_runner::model::persona::UserKind::Human,
        )
        .await
        .unwrap();
    let good = broken_catalog()["personas"][0].clone();
    let mut clash = good.clone();
    clash["name"] = json!("Not Anna");
    clash["email"] = json!("persona.human@mana.test");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clash.json");
    std::fs::write(&file, json!({"personas": [good, clash]}).to_string()).unwrap();
    let before = store.row_counts(DEFAULT_TENANT).await.unwrap();
    let err = catalog::seed_files(&store, DEFAULT_TENANT, std::slice::from_ref(&file), &rules(), "UTC")
        .await
        .unwrap_err();
    let CatalogError::Invalid(problems) = &err else {
        panic!("{err}")
    };
    assert!(
        problems[0].path.contains("persona.human@mana.test") && problems[0].message.contains("human account"),
        "{problems:?}"
    );
    assert_eq!(
        store.row_counts(DEFAULT_TENANT).await.unwrap(),
        before,
        "the first entry is not kept: one transaction per run"
    );
}

/// Seeding the shipped files streams them and applies the catalog's target.
async fn seeding_files_applies_the_catalog_target(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let report = catalog::seed_files(&store, DEFAULT_TENANT, &shipped(), &rules(), "UTC")
        .await
        .unwrap();
    assert_eq!(report.created, 22);
    let personas = store.list_personas(DEFAULT_TENANT).await.unwrap();
    let roles = personas.iter().filter(|p| p.flow.is_some());
    assert!(roles.clone().count() == 12 && roles.clone().all(|p| p.target.as_deref() == Some("sop-finance")));
    assert!(personas.iter().filter(|p| p.flow.is_none()).all(|p| p.target.is_none()));
    let again = catalog::seed_files(&store, DEFAULT_TENANT, &shipped(), &rules(), "UTC")
        .await
        .unwrap();
    assert_eq!(again.unchanged, 22);
}

both_backends! {
    seeding_twice_leaves_22_personas_unchanged,
    a_seed_run_that_fails_leaves_the_store_as_it_was,
    seeding_files_applies_the_catalog_target,
}
