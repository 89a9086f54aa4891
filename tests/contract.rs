//! The API contract at its edges, on both stores: what the OpenAPI document says the
//! server takes is what it takes, shape errors are 400 and rule errors 422, NUL text is
//! refused alike everywhere, and error bodies are JSON without the database's words.
//! (schemathesis explores the same contract at large in `.ci/schemathesis`.)

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use common::Backend;
use common::app::{Auth, TestApp, spawn_app};
use serde_json::{Value, json};

fn persona(email: &str, name: &str) -> Value {
    json!({
        "name": name,
        "email": email,
        "archetype": "solo-dev",
        "systemPrompt": "Du bist eine Entwicklerin, die allein an ihrem Produkt arbeitet und Aufgaben knapp plant.",
        "moduleMix": {"todo": 3, "journal": 1},
        "tickCadence": "daily",
    })
}

fn fields(body: &Value) -> Vec<&str> {
    body["details"]
        .as_array()
        .map(|d| d.iter().filter_map(|f| f["field"].as_str()).collect())
        .unwrap_or_default()
}

async fn bodies_are_refused_by_shape_with_400_and_by_rule_with_422(backend: Backend) {
    let app = spawn_app(backend).await;
    let post = |body: Value| app.call("POST", "/api/v1/admin/personas", Auth::Admin, Some(body));

    // Null is not an absent field: the schema has no nullable fields.
    let mut body = persona("a@example.test", "A");
    body["timeZone"] = Value::Null;
    let (status, error) = post(body).await;
    assert_eq!((status, fields(&error)), (400, vec!["timeZone"]), "{error}");

    // NUL cannot be kept by PostgreSQL; both stores refuse it before storing anything.
    let mut body = persona("a@example.test", "A");
    body["description"] = json!("before\u{0}after");
    let (status, error) = post(body).await;
    assert_eq!((status, fields(&error)), (400, vec!["description"]), "{error}");
    let mut body = persona("a@example.test", "A");
    body["moduleMix"] = json!({"to\u{0}do": 1});
    let (status, error) = post(body).await;
    assert_eq!((status, fields(&error)), (400, vec!["moduleMix.to\u{0}do"]), "{error}");

    // The documented shape, a rule broken: a cron that never fires, an email outside the
    // test domains.
    let mut body = persona("a@example.com", "A");
    body["tickCadence"] = json!("0 0 31 2 *");
    let (status, error) = post(body).await;
    assert_eq!((status, fields(&error)), (422, vec!["email", "tickCadence"]), "{error}");

    // JSON Schema's integer admits 3.0; so does the server.
    let mut body = persona("a@example.test", "A");
    body["roleIndex"] = json!(3.0);
    let (status, created) = post(body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["persona"]["roleIndex"], 3);

    // Nothing of the refused bodies was stored.
    let (_, listed) = app.call("GET", "/api/v1/admin/personas", Auth::Admin, None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    app.stop().await;
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    app.call("GET", path, Auth::Admin, None).await
}

async fn query_parameters_take_what_the_document_says(backend: Backend) {
    let app = spawn_app(backend).await;
    for (query, field) in [
        ("limit=1.5", "limit"),
        ("limit=", "limit"),
        ("limit=501", "limit"),
        ("since=2026-02-29", "since"),
        ("since=%207d", "since"),
        ("until=99999d", "until"),
        ("status=done", "status"),
        ("cursor=abc", "cursor"),
        ("tick=not-a-uuid", "tick"),
    ] {
        let path = if query.starts_with("tick") { "actions" } else { "ticks" };
        let (status, body) = get(&app, &format!("/api/v1/admin/{path}?{query}")).await;
        assert_eq!((status, fields(&body)), (400, vec![field]), "{query}: {body}");
    }
    for query in [
        "limit=500&since=2028-02-29&until=",
        "since=1h30m&cursor=",
        "persona=nobody%40example.test",
    ] {
        let (status, body) = get(&app, &format!("/api/v1/admin/ticks?{query}")).await;
        assert_eq!((status, &body["items"]), (200, &json!([])), "{query}: {body}");
    }
    // A window from the year 813 has a previous window that starts at year 1, not before.
    let (status, report) = get(&app, "/api/v1/admin/feedback?since=0813-11-30").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["previous_window"]["since"], "0001-01-01T00:00:00Z");
    app.stop().await;
}

both_backends!(
    bodies_are_refused_by_shape_with_400_and_by_rule_with_422,
    query_parameters_take_what_the_document_says,
);

#[tokio::test]
async fn the_sign_in_form_answers_json_errors_as_documented() {
    let app = spawn_app(Backend::Sqlite).await;
    let login = |content_type: Option<&'static str>, body: &'static str| {
        let mut request = app.client.post(format!("{}/login", app.base)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let json: Value = response.json().await.unwrap_or(Value::Null);
            (status, json)
        }
    };
    let (status, body) = login(None, "token=x").await;
    assert_eq!(status, 415, "{body}");
    assert!(body["error"].as_str().unwrap().contains("form"), "{body}");
    let (status, body) = login(Some("application/x-www-form-urlencoded"), "other=x").await;
    assert_eq!((status, fields(&body)), (400, vec!["token"]), "{body}");
    let operation = &app.openapi["paths"]["/login"]["post"]["responses"];
    for documented in ["400", "415"] {
        assert!(operation[documented].is_object(), "{documented} is documented");
    }
    app.stop().await;
}

/// The OpenAPI document is the contract: a change to it is a change for every client, so
/// it is compared byte for byte with the committed copy. When a change is meant, write the
/// new document there (`PERSONA_RUNNER_BLESS=1 cargo nextest run openapi_document`) and
/// review the diff.
#[test]
fn openapi_document_matches_the_committed_copy() {
    let served = persona_runner::api::openapi_text();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/openapi.json");
    if std::env::var_os("PERSONA_RUNNER_BLESS").is_some() {
        std::fs::write(path, served).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap();
    assert!(
        served == committed,
        "the OpenAPI document changed; diff it against tests/snapshots/openapi.json"
    );
}
