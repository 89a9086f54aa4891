//! Targets: personas bound to their own product. Two real sample gateways, one the
//! default target and one `[targets.finance]`; each persona's login and calls go to its
//! own product only.

mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::sync::Arc;

use common::{Backend, TestDb, TestGateway};
use persona_runner::config::TargetConfig;
use persona_runner::model::persona::{DEFAULT_TENANT, Persona, PersonaSpec};
use persona_runner::model::tick::{TickStatus, Trigger};
use persona_runner::store::Store;
use persona_runner::tick::{TickError, TickRequest, TickRunner};
use serde_json::json;

async fn seed(store: &Store, email: &str, name: &str, target: Option<&str>) -> Persona {
    let mut spec = json!({
        "name": name,
        "email": email,
        "archetype": "solo-dev",
        "systemPrompt": "Du planst deine Woche knapp und prüfst Zahlen, bevor du entscheidest.",
        "moduleMix": {"todo": 1},
        "tickCadence": "daily",
    });
    if let Some(target) = target {
        spec["target"] = json!(target);
    }
    let spec: PersonaSpec = serde_json::from_value(spec).unwrap();
    store.upsert_persona(DEFAULT_TENANT, &spec, "UTC").await.unwrap().0
}

fn request(persona: &Persona) -> TickRequest {
    TickRequest {
        persona: persona.clone(),
        trigger: Trigger::Cli,
        scheduled_for: None,
        attempt: 1,
        goal: None,
        space: Default::default(),
    }
}

#[tokio::test]
async fn each_persona_uses_the_product_of_its_target() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let consumer = TestGateway::start().await;
    let finance = TestGateway::start().await;
    let anna = seed(&store, "persona.anna@mana.test", "Anna", None).await;
    let cfo = seed(&store, "persona.cfo@mana.test", "CFO", Some("finance")).await;
    let other = seed(&store, "persona.ops@mana.test", "Ops", Some("logistics")).await;

    let mut config = consumer.config();
    let finance_config = finance.config();
    config.targets.insert(
        "finance".into(),
        TargetConfig {
            auth: finance_config.auth.clone(),
            mcp: finance_config.mcp.clone(),
        },
    );
    let engine = TickRunner::new(store.clone(), Arc::new(config), &consumer.env()).unwrap();
    for persona in [&anna, &cfo] {
        let summary = engine.run(&request(persona), &|_| {}).await.unwrap();
        assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
    }
    // Each gateway saw one login and the calls of one user, and not the same user.
    let users = |gateway: &TestGateway| {
        let mut users: Vec<String> = gateway.gateway.calls().into_iter().map(|c| c.user).collect();
        users.sort();
        users.dedup();
        users
    };
    let (consumer_users, finance_users) = (users(&consumer), users(&finance));
    assert_eq!((consumer_users.len(), finance_users.len()), (1, 1));
    assert_ne!(consumer_users, finance_users);
    assert_eq!((consumer.gateway.logins(), finance.gateway.logins()), (1, 1));

    // A persona of a target this config does not define is refused, not sent elsewhere.
    let refused = engine.run(&request(&other), &|_| {}).await.unwrap_err();
    assert!(matches!(refused, TickError::NoTarget { .. }), "{refused}");
    assert!(refused.to_string().contains("[targets.logistics]"), "{refused}");
}
