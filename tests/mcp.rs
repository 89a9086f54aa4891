//! The MCP client and the login flow against the real sample gateway (rmcp server) over
//! Streamable HTTP behind bearer auth, and over stdio.

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use common::TestGateway;
use persona_runner::auth::{AuthError, Authenticator};
use persona_runner::config::{LookupConfig, McpTransport};
use persona_runner::mcp::{CallOutcome, McpError, ToolPolicy};
use serde_json::json;

const ANNA: &str = "persona.anna@mana.test";

#[tokio::test]
async fn logs_in_lists_every_page_and_calls_tools_over_http() {
    let gateway = TestGateway::start().await;
    let auth = Authenticator::new(&gateway.config(), &gateway.env()).unwrap();
    let credentials = auth.credentials(ANNA).await.unwrap();
    assert_eq!(
        credentials.user_id.as_deref(),
        Some(persona_runner::gateway::user_id_of(ANNA).as_str())
    );
    assert!(
        credentials.refresh_at > chrono::Utc::now() + chrono::Duration::seconds(500),
        "refresh follows the JWT exp"
    );

    let session = common::open_session(&gateway.config().mcp, &credentials).await.unwrap();
    // 18 tools in pages of 5: every page was fetched.
    assert_eq!(session.tools().len(), 18);
    let todo = session.tools().iter().find(|t| t.name == "todo.delete").unwrap();
    assert_eq!(todo.module, "todo");
    assert!(todo.destructive);
    let policy = ToolPolicy::new(&gateway.config().mcp);
    assert!(policy.check(todo).is_err(), "destructive tools are withheld by default");

    let args = json!({"title": "Steuererklärung abgeben", "priority": "high"});
    let (outcome, _latency) = session
        .call("todo.create", args.as_object().cloned().unwrap())
        .await
        .unwrap();
    let CallOutcome::Ok { text } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(text.contains("Steuererklärung"));
    let (outcome, _) = session
        .call("todo.complete", json!({"id": 999}).as_object().cloned().unwrap())
        .await
        .unwrap();
    assert_eq!(
        outcome,
        CallOutcome::Error {
            text: "no to-do with id 999".into()
        }
    );
    let (outcome, _) = session
        .call("todo.create", json!({"title": ""}).as_object().cloned().unwrap())
        .await
        .unwrap();
    assert!(
        matches!(&outcome, CallOutcome::Error { text } if text.contains("invalid arguments")),
        "{outcome:?}"
    );
    let (outcome, _) = session.call("todo.fly", serde_json::Map::new()).await.unwrap();
    assert!(
        matches!(&outcome, CallOutcome::Error { text } if text.contains("unknown tool")),
        "{outcome:?}"
    );
    session.close().await;

    let calls = gateway.gateway.calls();
    assert_eq!(
        calls.len(),
        2,
        "invalid and unknown calls never reach the product: {calls:?}"
    );
    assert_eq!(calls[0].user, persona_runner::gateway::user_id_of(ANNA));
}

#[tokio::test]
async fn credentials_are_cached_and_a_rejected_token_surfaces_as_unauthorized() {
    let gateway = TestGateway::start().await;
    let auth = Authenticator::new(&gateway.config(), &gateway.env()).unwrap();
    let first = auth.credentials(ANNA).await.unwrap();
    let again = auth.credentials(ANNA).await.unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&first, &again),
        "cached until shortly before exp"
    );

    gateway.gateway.rotate_signing_key();
    let err = common::open_session(&gateway.config().mcp, &first).await.err().unwrap();
    assert!(matches!(err, McpError::Unauthorized { .. }), "{err}");
    auth.invalidate(ANNA);
    let fresh = auth.credentials(ANNA).await.unwrap();
    common::open_session(&gateway.config().mcp, &fresh)
        .await
        .unwrap()
        .close()
        .await;
}

#[tokio::test]
async fn login_failures_name_the_persona_and_status_never_the_password() {
    let gateway = TestGateway::start().await;
    let mut env = gateway.env();
    env.insert("TEST_SEED_SECRET".into(), "a-different-secret".into());
    let auth = Authenticator::new(&gateway.config(), &env).unwrap();
    let err = auth.credentials(ANNA).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, AuthError::Rejected { status: 401, .. }), "{message}");
    assert!(message.contains(ANNA) && message.contains("401"), "{message}");
    let wrong_password =
        persona_runner::auth::derive_password(&persona_runner::config::Secret::new("a-different-secret"), ANNA);
    assert!(!message.contains(wrong_password.expose()), "{message}");

    let mut config = gateway.config();
    config.auth.login_url = format!("http://{}/nope", gateway.addr);
    let err = Authenticator::new(&config, &gateway.env())
        .unwrap()
        .credentials(ANNA)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HTTP 404"), "{err}");
}

#[tokio::test]
async fn session_lookups_feed_header_placeholders() {
    let gateway = TestGateway::start_with(|o| o.require_space_header = true).await;
    let mut config = gateway.config();
    config.auth.lookups.insert(
        "space_id".into(),
        LookupConfig {
            url: gateway.organizations_url(),
            items: String::new(),
            filter: [("/metadata/type".to_string(), "personal".to_string())]
                .into_iter()
                .collect(),
            value: "/id".into(),
        },
    );
    let auth = Authenticator::new(&config, &gateway.env()).unwrap();
    let credentials = auth.credentials(ANNA).await.unwrap();
    let user = persona_runner::gateway::user_id_of(ANNA);
    assert_eq!(
        credentials.values["space_id"],
        persona_runner::gateway::personal_space_of(&user)
    );

    // Without the header the gateway refuses; with the placeholder it accepts.
    assert!(common::open_session(&config.mcp, &credentials).await.is_err());
    config.mcp.headers.insert("X-Mana-Space".into(), "{space_id}".into());
    let session = common::open_session(&config.mcp, &credentials).await.unwrap();
    assert_eq!(session.tools().len(), 18);
    session.close().await;
}

#[tokio::test]
async fn the_same_tools_over_stdio() {
    let mut config = persona_runner::config::Config::default();
    config.mcp.transport = McpTransport::Stdio;
    config.mcp.command = common::stdio_gateway_command(ANNA);
    config
        .mcp
        .env
        .insert("PERSONA_SEED_SECRET".into(), common::TEST_SEED.into());
    let credentials = persona_runner::auth::Credentials {
        token: None,
        user_id: None,
        values: Default::default(),
        refresh_at: chrono::Utc::now() + chrono::Duration::hours(1),
        password: None,
        session: None,
    };
    let session = common::open_session(&config.mcp, &credentials).await.unwrap();
    assert_eq!(session.tools().len(), 18);
    let (outcome, _) = session
        .call("mood.log", json!({"score": 4}).as_object().cloned().unwrap())
        .await
        .unwrap();
    assert!(
        matches!(&outcome, CallOutcome::Ok { text } if text.contains("\"score\":4")),
        "{outcome:?}"
    );
    session.close().await;
}
