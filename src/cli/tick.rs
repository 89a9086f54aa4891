//! `persona-runner tick`: one-off ticks, run in this process.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use comfy_table::Table;
use persona_runner::model::persona::DEFAULT_TENANT;
use persona_runner::model::tick::{TickStatus, Trigger};
use persona_runner::tick::{TickEvent, TickRequest, TickRunner, TickSummary};

use super::{App, Outcome};

#[derive(Args)]
pub struct TickArgs {
    /// A persona by email or id (repeatable).
    #[arg(long = "persona", value_name = "EMAIL|ID", required_unless_present_any = ["all", "space"])]
    personas: Vec<String>,
    /// Every runnable persona (not paused, with a login identity), within scheduler.concurrency.
    #[arg(long, conflicts_with_all = ["personas", "space"])]
    all: bool,
    /// A round of a shared space: its members one after another, each in the space, so a
    /// hand-off (one creates, the next completes) happens within one run.
    #[arg(long, value_name = "NAME", conflicts_with = "personas")]
    space: Option<String>,
    /// The order of the round's members (default: spaces.order).
    #[arg(long, value_name = "fixed|shuffled", requires = "space")]
    order: Option<persona_runner::model::space::RoundOrder>,
    /// Print the summaries as JSON.
    #[arg(long)]
    json: bool,
    /// Ask the daemon at this address (admin token from api.admin_token_*) instead of
    /// running the ticks in this process.
    #[arg(long, value_name = "http://HOST:PORT")]
    via: Option<String>,
}

pub async fn run(args: TickArgs, app: &App) -> Result<Outcome> {
    if let Some(via) = &args.via {
        return via_daemon(via, &args, app).await;
    }
    let store = app.store().await?;
    if let Some(space) = &args.space {
        let outcome = super::spaces::round(app, &store, space, args.order, args.json).await;
        store.close().await;
        return outcome;
    }
    let personas = if args.all {
        let personas = store.list_personas(DEFAULT_TENANT).await?;
        let config = app.config();
        personas
            .into_iter()
            .filter(|p| p.is_runnable() && config.runs_target(p.target.as_deref()))
            .collect()
    } else {
        let mut found = Vec::new();
        for id in &args.personas {
            match store.find_persona(DEFAULT_TENANT, id).await? {
                Some(persona) => found.push(persona),
                None => bail!("no persona with id or email `{id}` (see `persona-runner personas list`)"),
            }
        }
        found
    };
    if personas.is_empty() {
        bail!("no runnable persona: seed a catalog first (`persona-runner catalog seed`)");
    }
    let engine = Arc::new(
        TickRunner::new(store.clone(), Arc::new(app.config().clone()), &app.env)
            .context("preparing the tick engine")?,
    );
    let live = std::io::stderr().is_terminal() && !args.json;
    let events: Arc<dyn Fn(TickEvent) + Send + Sync> = Arc::new(move |event| {
        if live {
            print_progress(&event);
        }
    });
    eprintln!("ticking {} persona(s) with {}", personas.len(), engine.driver_name());

    // At most `scheduler.concurrency` ticks in flight, and only those spawned: a tick's
    // future is ~18 KB, so spawning every persona up front would hold them all at once.
    let concurrency = app.config().scheduler.concurrency.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    let mut results = Vec::new();
    for (index, persona) in personas.into_iter().enumerate() {
        if tasks.len() >= concurrency
            && let Some(joined) = tasks.join_next().await
        {
            results.push(joined.context("a tick task panicked")?);
        }
        let (engine, events) = (engine.clone(), events.clone());
        tasks.spawn(async move {
            let label = persona.label();
            let request = TickRequest {
                persona,
                trigger: Trigger::Cli,
                scheduled_for: None,
                attempt: 1,
                goal: None,
                space: Default::default(),
            };
            (index, label, engine.run(&request, &*events).await)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        results.push(joined.context("a tick task panicked")?);
    }
    results.sort_by_key(|(index, _, _)| *index);
    store.close().await;

    let mut failed = false;
    let mut summaries: Vec<TickSummary> = Vec::new();
    for (_, label, result) in results {
        match result {
            Ok(summary) => {
                failed |= summary.status != TickStatus::Ok;
                summaries.push(summary);
            }
            Err(err) => {
                failed = true;
                eprintln!("error: {label}: {}", super::error_line(&err));
            }
        }
    }
    if args.json {
        out!("{}", super::json(&summaries)?);
    } else if !summaries.is_empty() {
        out!("{}", table(&summaries));
        for summary in summaries.iter().filter(|s| s.error.is_some()) {
            // One line per tick: its error's own line breaks are escaped too.
            let error = persona_runner::redact::escape_controls(summary.error.as_deref().unwrap_or_default());
            out!("{}: {error}", summary.persona);
        }
    }
    Ok(if failed { Outcome::Problems } else { Outcome::Success })
}

/// Prints the summaries (JSON or a table with each error's line); `true` if any failed.
pub(super) fn report(summaries: &[TickSummary], json: bool) -> Result<bool> {
    if json {
        out!("{}", super::json(&summaries)?);
    } else if !summaries.is_empty() {
        out!("{}", table(summaries));
        for summary in summaries.iter().filter(|s| s.error.is_some()) {
            let error = persona_runner::redact::escape_controls(summary.error.as_deref().unwrap_or_default());
            out!("{}: {error}", summary.persona);
        }
    }
    Ok(summaries.iter().any(|s| s.status != TickStatus::Ok))
}

pub(super) fn print_progress(event: &TickEvent) {
    match event {
        TickEvent::Started { persona, tick } => eprintln!("[{persona}] tick {tick} started"),
        TickEvent::Turn { persona, turn } => eprintln!("[{persona}] turn {turn}"),
        TickEvent::Tool {
            persona,
            tool,
            result,
            latency_ms,
            chaos,
            ..
        } => eprintln!(
            "[{persona}]   {} → {result}{}{}",
            super::terminal_safe(tool),
            latency_ms.map(|ms| format!(" ({ms} ms)")).unwrap_or_default(),
            if *chaos { " [chaos]" } else { "" }
        ),
        TickEvent::Finished { summary } => {
            eprintln!("[{}] {} in {} ms", summary.persona, summary.status, summary.duration_ms)
        }
    }
}

fn table(summaries: &[TickSummary]) -> Table {
    let mut table = super::table(&[
        "persona",
        "status",
        "ok",
        "error",
        "deduped",
        "denied",
        "ratings",
        "tokens in/out",
        "duration",
    ]);
    for s in summaries {
        let ratings = if s.ratings.is_empty() {
            s.rating_status.map_or("-".into(), |r| r.to_string())
        } else {
            s.ratings
                .iter()
                .map(|r| format!("{} {}", r.module, r.rating))
                .collect::<Vec<_>>()
                .join(", ")
        };
        table.add_row([
            s.persona.clone(),
            s.status.to_string(),
            s.calls_ok.to_string(),
            s.calls_error.to_string(),
            s.calls_deduped.to_string(),
            s.calls_denied.to_string(),
            ratings,
            format!("{}/{}", s.tokens_in, s.tokens_out),
            format!("{:.1} s", s.duration_ms as f64 / 1000.0),
        ]);
    }
    table
}

/// Asks a running daemon to tick, through its admin API.
async fn via_daemon(base: &str, args: &TickArgs, app: &App) -> Result<Outcome> {
    let token = app.config().admin_token(&app.env)?.with_context(|| {
        format!(
            "--via needs the daemon's admin token: set {}",
            app.config().api.admin_token_env
        )
    })?;
    let http = persona_runner::http::client(std::time::Duration::from_secs(30));
    let base = base.trim_end_matches('/');
    let targets: Vec<String> = if args.all {
        vec![format!("{base}/api/v1/admin/ticks")]
    } else {
        args.personas
            .iter()
            .map(|p| format!("{base}/api/v1/admin/personas/{p}/tick"))
            .collect()
    };
    let mut failed = false;
    for (url, persona) in targets
        .iter()
        .zip(args.personas.iter().map(Some).chain(std::iter::repeat(None)))
    {
        let response = http
            .post(url)
            .bearer_auth(token.expose())
            .send()
            .await
            .with_context(|| format!("asking the daemon at {base}"))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let who = persona.map_or("every runnable persona".to_string(), Clone::clone);
        if status.is_success() {
            out!(
                "{who}: accepted{}",
                body["tick_id"]
                    .as_str()
                    .map(|id| format!(", tick {id}"))
                    .unwrap_or_default()
            );
        } else {
            failed = true;
            eprintln!(
                "error: {who}: HTTP {} {}",
                status.as_u16(),
                body["error"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(if failed { Outcome::Problems } else { Outcome::Success })
}
