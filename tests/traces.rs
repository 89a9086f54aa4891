//! Traces: a tick exported as one OpenTelemetry trace over OTLP/HTTP to a real receiver
//! (protobuf and JSON, decoded with the official protocol types), its spans named and
//! attributed by the GenAI and MCP conventions, its context propagated into the sample
//! product's requests (header and `params._meta`) and the LLM's, no secret on any span,
//! and a dead collector costing a tick nothing.
//!
//! The binary's tests set only the standard `OTEL_*` variables; the in-process ones set
//! the process's tracer provider, one per test process (nextest runs each test in its own).

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Output;

use common::otlp::{Collector, SeenSpan};
use common::{Backend, ScriptedLlm, Step, TEST_SEED, TestDb, TestGateway, text, tool_calls};
use persona_runner::model::tick::TickStatus;
use serde_json::Value;

const LLM_KEY: &str = "sk-otlp-test-key-4711-secret";
const TOKEN_PREFIX: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9";

async fn run(dir: &Path, args: &[&str], env: &[(String, String)]) -> Output {
    let (dir, env) = (dir.to_path_buf(), env.to_vec());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::run_binary(&dir, &args, &env)
    })
    .await
    .unwrap()
}

/// A role-play that creates a to-do, repeats the same call (deduped), stops, and rates.
fn script() -> Vec<Step> {
    let call = r#"{"title": "Statistik-Hausarbeit abgeben"}"#;
    vec![
        Step::Reply(tool_calls(&[("todo_create", call)])),
        Step::Reply(tool_calls(&[("todo_create", call)])),
        Step::Reply(text("fertig für heute")),
        Step::Reply(text(
            r#"{"ratings": [{"module": "todo", "rating": 4, "note": "geht schnell"}]}"#,
        )),
    ]
}

fn env_for(gateway: &TestGateway, llm: &ScriptedLlm, otel: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("PERSONA_RUNNER__AUTH__LOGIN_URL".to_string(), gateway.login_url()),
        ("PERSONA_RUNNER__MCP__URL".to_string(), gateway.mcp_url()),
        ("PERSONA_SEED_SECRET".to_string(), TEST_SEED.to_string()),
        ("PERSONA_RUNNER__LLM__PROVIDER".to_string(), "openai".to_string()),
        ("PERSONA_RUNNER__LLM__BASE_URL".to_string(), llm.base_url()),
        ("PERSONA_RUNNER__LLM__MODEL".to_string(), "test-model".to_string()),
        ("OPENAI_API_KEY".to_string(), LLM_KEY.to_string()),
    ];
    env.extend(otel.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

/// Exports this process's traces to `endpoint`, configured from `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn export_to(endpoint: &str) -> persona_runner::telemetry::Telemetry {
    let env: persona_runner::config::Env = [("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), endpoint.to_string())].into();
    let settings = persona_runner::config::TelemetryConfig::default()
        .resolve(&env)
        .unwrap()
        .expect("an endpoint turns export on");
    persona_runner::http::install_crypto_provider();
    persona_runner::telemetry::Telemetry::init(Some(&settings)).unwrap()
}

/// No secret of the tick (nor `extra`) is on any span: seed secret, Anna's derived
/// password, the LLM key, the prefix of every token the gateway issues.
fn assert_no_secret_in(spans: &[SeenSpan], extra: &[(&str, &str)]) {
    let password = persona_runner::auth::derive_password(
        &persona_runner::config::Secret::new(TEST_SEED),
        "persona.anna@mana.test",
    );
    let dump = format!("{spans:?}");
    let known = [
        ("seed secret", TEST_SEED),
        ("derived password", password.expose()),
        ("LLM API key", LLM_KEY),
        ("bearer token", TOKEN_PREFIX),
    ];
    for (what, secret) in known.iter().chain(extra) {
        assert!(!dump.contains(secret), "the {what} is on a span");
    }
}

fn by_id(spans: &[SeenSpan]) -> HashMap<&str, &SeenSpan> {
    spans.iter().map(|s| (s.span_id.as_str(), s)).collect()
}

/// The name of a span's parent ("" for the root).
fn parent_name<'a>(span: &SeenSpan, ids: &HashMap<&str, &'a SeenSpan>) -> &'a str {
    ids.get(span.parent_span_id.as_str()).map_or("", |p| p.name.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_tick_is_one_trace_that_the_product_joins() {
    let collector = Collector::start().await;
    let gateway = TestGateway::start().await;
    let llm = ScriptedLlm::start(script()).await;
    let dir = common::workdir_with_catalogs();
    let env = env_for(
        &gateway,
        &llm,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
            ("OTEL_SERVICE_NAME", "qa-personas".into()),
        ],
    );
    let seeded = run(dir.path(), &["catalog", "seed"], &env).await;
    assert!(seeded.status.success(), "{}", String::from_utf8_lossy(&seeded.stderr));
    let out = run(
        dir.path(),
        &["tick", "--persona", "persona.anna@mana.test", "--json"],
        &env,
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let summaries: Value = serde_json::from_slice(&out.stdout).expect("the summaries as JSON");
    let summary = summaries[0].clone();
    assert_eq!(summary["status"], "ok", "{summary}");
    let tick_id = summary["tick_id"].as_str().unwrap().to_string();
    let trace_id = summary["trace_id"]
        .as_str()
        .expect("the summary names its trace")
        .to_string();

    let spans = collector.spans();
    assert!(
        collector
            .batches()
            .iter()
            .all(|b| b.content_type == "application/x-protobuf"),
        "{:?}",
        collector.batches()
    );
    // One trace, one root, every span in it.
    let traces: HashSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(traces, HashSet::from([trace_id.as_str()]), "{spans:#?}");
    let roots: Vec<&SeenSpan> = spans.iter().filter(|s| s.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "{spans:#?}");
    let root = roots[0];
    assert_eq!(root.name, "invoke_agent Anna Keller");
    assert!(spans.iter().all(|s| s.service == "qa-personas"));
    assert_eq!(root.attr("gen_ai.operation.name"), Some("invoke_agent"));
    assert_eq!(root.attr("gen_ai.agent.name"), Some("Anna Keller"));
    assert_eq!(root.attr("gen_ai.conversation.id"), Some(tick_id.as_str()));
    assert_eq!(root.attr("gen_ai.agent.id"), summary["persona_id"].as_str());
    assert_eq!(root.attr("persona_runner.tick.status"), Some("ok"));
    assert_eq!(root.attr("persona_runner.tick.trigger"), Some("cli"));
    assert_eq!(root.attr("persona_runner.persona.archetype"), Some("adhd-student"));
    assert_eq!(root.attr("gen_ai.usage.input_tokens"), Some("300"), "100+100+50+50");
    let ids = by_id(&spans);
    for span in &spans {
        assert!(
            span.parent_span_id.is_empty() || ids.contains_key(span.parent_span_id.as_str()),
            "{} has a parent outside the trace",
            span.name
        );
    }

    // The steps, each under the root (the rating's chat under the rating).
    let names: Vec<(&str, &str)> = spans.iter().map(|s| (s.name.as_str(), parent_name(s, &ids))).collect();
    for (step, parent) in [
        ("login", "invoke_agent Anna Keller"),
        ("mcp connect", "invoke_agent Anna Keller"),
        ("initialize", "mcp connect"),
        ("tools/list", "mcp connect"),
        ("rating", "invoke_agent Anna Keller"),
        ("chat test-model", "rating"),
    ] {
        assert!(names.contains(&(step, parent)), "no {step} under {parent}: {names:?}");
    }
    let chats: Vec<&SeenSpan> = spans.iter().filter(|s| s.name == "chat test-model").collect();
    assert_eq!(chats.len(), 4, "three turns and the rating");
    for chat in &chats {
        assert_eq!(chat.attr("gen_ai.operation.name"), Some("chat"));
        assert_eq!(chat.attr("gen_ai.provider.name"), Some("openai"));
        assert_eq!(chat.attr("gen_ai.request.model"), Some("test-model"));
        assert_eq!(chat.attr("gen_ai.response.model"), Some("test-model"));
        assert!(chat.attr("gen_ai.usage.input_tokens").is_some() && chat.attr("gen_ai.usage.output_tokens").is_some());
        assert!(chat.attr("gen_ai.response.finish_reasons").is_some());
        assert!(chat.attr("gen_ai.input.messages").is_none(), "content is opt-in");
    }
    let tools: Vec<&SeenSpan> = spans.iter().filter(|s| s.name == "execute_tool todo.create").collect();
    assert_eq!(tools.len(), 2, "{names:?}");
    for tool in &tools {
        assert_eq!(parent_name(tool, &ids), "invoke_agent Anna Keller");
        assert_eq!(tool.attr("gen_ai.operation.name"), Some("execute_tool"));
        assert_eq!(tool.attr("gen_ai.tool.name"), Some("todo.create"));
        assert!(
            tool.attr("gen_ai.tool.call.id")
                .is_some_and(|id| id.starts_with("call_0_"))
        );
        assert!(tool.attr("gen_ai.tool.call.arguments").is_none(), "content is opt-in");
    }
    let (sent, deduped) = (tools[0], tools[1]);
    assert_eq!(sent.attr("persona_runner.call.result"), Some("ok"));
    assert_eq!(sent.attr("persona_runner.call.sent"), Some("true"));
    assert_eq!(sent.attr("mcp.method.name"), Some("tools/call"));
    assert_eq!(deduped.attr("mcp.method.name"), None, "no MCP request was made");
    assert_eq!(sent.attr("network.transport"), Some("tcp"));
    assert!(
        sent.attr("mcp.session.id").is_some_and(|id| !id.is_empty()),
        "{sent:#?}"
    );
    assert!(sent.attr("mcp.protocol.version").is_some());
    assert_eq!(deduped.attr("persona_runner.call.result"), Some("deduped"));
    assert_eq!(deduped.attr("persona_runner.call.sent"), Some("false"));

    // The product got the persona's call as its parent, in the header and in `_meta`.
    let calls = gateway.gateway.calls();
    assert_eq!(calls.len(), 1, "the repeat was not sent");
    let expected = format!("00-{trace_id}-{}-01", sent.span_id);
    assert_eq!(calls[0].traceparent.as_deref(), Some(expected.as_str()), "{calls:?}");
    assert_eq!(calls[0].meta_traceparent.as_deref(), Some(expected.as_str()));
    // And the LLM each chat request's span.
    let chat_ids: HashSet<String> = chats
        .iter()
        .map(|c| format!("00-{trace_id}-{}-01", c.span_id))
        .collect();
    let llm_parents: HashSet<String> = llm.traceparents().into_iter().flatten().collect();
    assert_eq!(llm_parents, chat_ids);

    // No secret on any span.
    assert_no_secret_in(&spans, &[]);

    // The tick's record keeps its trace.
    let store = common::default_store_in(dir.path()).await;
    let record = store
        .tick_record(persona_runner::model::persona::DEFAULT_TENANT, tick_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.trace_id.as_deref(), Some(trace_id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_opted_in_content_carry_the_trace_and_a_header_key_stays_secret() {
    let collector = Collector::start().await;
    let gateway = TestGateway::start().await;
    let llm = ScriptedLlm::start(script()).await;
    let dir = common::workdir_with_catalogs();
    let api_key = "lf-secret-9d8f7a6b5c4d";
    let env = env_for(
        &gateway,
        &llm,
        &[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                format!("{}/v1/traces", collector.endpoint()),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".into()),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                format!("Authorization=Bearer%20{api_key}"),
            ),
            ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true".into()),
            ("PERSONA_RUNNER__LOG__FORMAT", "json".into()),
            ("RUST_LOG", "debug".into()),
        ],
    );
    let seeded = run(dir.path(), &["catalog", "seed"], &env).await;
    assert!(seeded.status.success(), "{}", String::from_utf8_lossy(&seeded.stderr));
    let out = run(dir.path(), &["tick", "--persona", "persona.anna@mana.test"], &env).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");

    let batches = collector.batches();
    assert!(!batches.is_empty());
    for batch in &batches {
        assert_eq!(batch.content_type, "application/json");
        assert_eq!(batch.headers["authorization"], format!("Bearer {api_key}").as_str());
    }
    let spans = collector.spans();
    let trace_id = spans[0].trace_id.clone();
    let tool = spans.iter().find(|s| s.name == "execute_tool todo.create").unwrap();
    assert!(
        tool.attr("gen_ai.tool.call.arguments")
            .unwrap()
            .contains("Statistik-Hausarbeit")
    );
    assert!(tool.attr("gen_ai.tool.call.result").is_some());
    let chat = spans.iter().find(|s| s.name == "chat test-model").unwrap();
    assert!(chat.attr("gen_ai.input.messages").unwrap().contains("Anna Keller"));
    assert!(chat.attr("gen_ai.output.messages").is_some());
    assert_no_secret_in(&spans, &[("collector key", api_key)]);

    // The tick's JSON lines carry its trace; the header's key is in none of them.
    assert!(!stderr.contains(api_key), "the collector's key is in the log");
    let tick_lines: Vec<Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["span"]["trace_id"].is_string())
        .collect();
    assert!(!tick_lines.is_empty(), "{stderr}");
    for line in &tick_lines {
        assert_eq!(line["span"]["trace_id"], trace_id.as_str());
        assert_eq!(line["span"]["span_id"].as_str().map(str::len), Some(16));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_refusing_collector_costs_a_tick_nothing_and_its_drops_are_counted() {
    // Nothing listens on the first; the second answers every batch with 503; the third
    // takes the connection and never answers.
    let refusing = Collector::start_answering(axum::http::StatusCode::SERVICE_UNAVAILABLE).await;
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_url = format!("http://{}", hanging.local_addr().unwrap());
    let _holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = hanging.accept().await {
            held.push(connection);
        }
    });
    for endpoint in [dead, refusing.endpoint(), hanging_url] {
        let db = TestDb::new(Backend::Sqlite).await;
        let store = db.store().await;
        let persona = common::seed_anna(&store).await;
        let gateway = TestGateway::start().await;
        let llm = ScriptedLlm::start(script()).await;
        let engine = common::scripted_engine(&store, &gateway, &llm, "test-model");
        let telemetry = export_to(&endpoint);
        assert!(telemetry.enabled());

        let summary = common::tick_once(&engine, &persona).await;
        assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
        assert_eq!((summary.calls_ok, summary.calls_deduped), (1, 1));
        assert_eq!(summary.ratings.len(), 1);
        let started = std::time::Instant::now();
        telemetry.shutdown(std::time::Duration::from_secs(5)).await;
        assert!(
            started.elapsed() < std::time::Duration::from_secs(6),
            "the flush is bounded"
        );
    }
    let metrics = persona_runner::metrics::global().render();
    let failed: u64 = metrics
        .lines()
        .find(|l| l.starts_with("persona_runner_trace_spans_total{fate=\"export_failed\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(failed >= 2 * 9, "both ticks' spans were counted as dropped: {metrics}");
    assert!(!refusing.batches().is_empty(), "the refusing collector was asked");
    assert!(
        !metrics.contains("fate=\"exported\""),
        "nothing was counted as exported: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_any_setting_nothing_is_exported_and_no_header_is_sent() {
    let gateway = TestGateway::start().await;
    let llm = ScriptedLlm::start(script()).await;
    let dir = common::workdir_with_catalogs();
    let env = env_for(&gateway, &llm, &[]);
    assert!(run(dir.path(), &["catalog", "seed"], &env).await.status.success());
    let out = run(
        dir.path(),
        &["tick", "--persona", "persona.anna@mana.test", "--json"],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("trace_id"));
    let calls = gateway.gateway.calls();
    assert!(!calls.is_empty());
    assert!(
        calls
            .iter()
            .all(|c| c.traceparent.is_none() && c.meta_traceparent.is_none())
    );
    assert!(llm.traceparents().iter().all(Option::is_none));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reports_a_ticks_trace_and_its_page_links_to_the_viewer() {
    use common::app::{AppOptions, Auth};
    let collector = Collector::start().await;
    let telemetry = export_to(&collector.endpoint());
    let app = common::app::spawn_app_with(
        Backend::Sqlite,
        AppOptions {
            extra_toml: "\n[telemetry]\ntrace_url = \"http://jaeger.example/trace/{trace_id}\"\n".into(),
            ..AppOptions::default()
        },
    )
    .await;
    let (status, body) = app
        .call(
            "POST",
            "/api/v1/admin/personas",
            Auth::Admin,
            Some(serde_json::json!({
                "name": "Anna", "email": "persona.anna@mana.test", "archetype": "adhd-student",
                "systemPrompt": "Du bist eine Person mit vollem Kalender, die schnell Ordnung braucht und ehrlich urteilt.",
                "moduleMix": {"todo": 1}, "tickCadence": "daily"
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, started) = app
        .call(
            "POST",
            "/api/v1/admin/personas/persona.anna@mana.test/tick",
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let tick_id = started["tick_id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let detail = loop {
        let (_, detail) = app
            .call("GET", &format!("/api/v1/admin/ticks/{tick_id}"), Auth::Admin, None)
            .await;
        if detail["tick"]["status"] != "running" {
            break detail;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tick did not finish: {detail}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let trace_id = detail["tick"]["trace_id"]
        .as_str()
        .expect("the tick keeps its trace")
        .to_string();
    assert_eq!(trace_id.len(), 32);

    let signed_in = app
        .client
        .post(format!("{}/login", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", common::app::ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = app
        .client
        .get(format!("{}/ticks/{tick_id}", app.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("href=\"http://jaeger.example/trace/{trace_id}\"")),
        "{page}"
    );
    app.stop().await;
    telemetry.shutdown(std::time::Duration::from_secs(5)).await;
    let spans = collector.spans();
    let root = spans
        .iter()
        .find(|s| s.parent_span_id.is_empty())
        .expect("the tick's root was exported");
    assert_eq!(root.trace_id, trace_id);
    assert_eq!(root.attr("gen_ai.conversation.id"), Some(tick_id.as_str()));
    assert_eq!(root.attr("persona_runner.tick.trigger"), Some("api"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_stdio_is_traced_as_a_pipe() {
    let collector = Collector::start().await;
    let telemetry = export_to(&collector.endpoint());
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = common::seed_anna(&store).await;
    let gateway = TestGateway::start().await;
    let llm = ScriptedLlm::start(script()).await;
    let (mut config, env) = common::llm_config(&gateway, &llm, "test-model", "sk-test");
    config.mcp.transport = persona_runner::config::McpTransport::Stdio;
    config.mcp.command = common::stdio_gateway_command(persona.email.as_deref().unwrap());
    let engine = persona_runner::tick::TickRunner::new(store.clone(), std::sync::Arc::new(config), &env).unwrap();
    let summary = common::tick_once(&engine, &persona).await;
    assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
    telemetry.shutdown(std::time::Duration::from_secs(5)).await;
    let spans = collector.spans();
    let sent = spans
        .iter()
        .find(|s| s.name == "execute_tool todo.create" && s.attr("persona_runner.call.sent") == Some("true"))
        .expect("the sent call's span");
    assert_eq!(sent.attr("network.transport"), Some("pipe"));
    assert_eq!(sent.attr("mcp.method.name"), Some("tools/call"));
    assert_eq!(sent.attr("mcp.session.id"), None, "stdio has no session id");
    let init = spans.iter().find(|s| s.name == "initialize").unwrap();
    assert_eq!(init.attr("network.transport"), Some("pipe"));
}
