//! `catalog seed --provision`'s second half: each catalog space created in its product
//! (the owner's session) and every other member invited and joined (the member's),
//! idempotently; `--dry-run` prints the plan.

use anyhow::{Context as _, Result};
use persona_runner::auth::{Authenticator, SpaceCalls, SpaceTally};
use persona_runner::catalog::Catalog;
use persona_runner::model::persona::DEFAULT_TENANT;

use super::App;

/// What provisioning the spaces did, with the spaces that failed and those left out
/// because their product has no `[spaces]` calls (their ticks stay personal).
#[derive(Default)]
pub(super) struct SpaceReport {
    pub tally: SpaceTally,
    pub failed: usize,
    pub unconfigured: usize,
}

pub(super) async fn provision_spaces(app: &App, catalogs: &[Catalog], dry_run: bool) -> Result<SpaceReport> {
    let config = app.config();
    let mut report = SpaceReport::default();
    let store = match dry_run {
        true => None,
        false => Some(app.store().await?),
    };
    for space in catalogs.iter().flat_map(|c| &c.spaces) {
        let product = match &space.target {
            None => config.clone(),
            Some(name) => match config.for_target(name) {
                Some(product) => product,
                None => continue,
            },
        };
        let calls = match SpaceCalls::new(&product, &product.auth) {
            Ok(calls) => calls,
            Err(err) => {
                eprintln!(
                    "space {} left out: {}",
                    super::terminal_safe(&space.name),
                    super::error_line(&err)
                );
                report.unconfigured += 1;
                continue;
            }
        };
        let Some(store) = &store else {
            let owner = space.owner().context("a checked space has an owner")?;
            out!(
                "would create space {} ({}) at {} as {}, and have {} join",
                space.name,
                space.kind,
                calls.create_url(),
                owner.email,
                space
                    .partners_of(&owner.email)
                    .map(|m| m.email.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            continue;
        };
        let auth = Authenticator::new(&product, &app.env).context("logging the space's members in")?;
        match calls.provision(&auth, space).await {
            Ok(tally) => {
                report.tally.add(tally);
                store
                    .mark_space_provisioned(DEFAULT_TENANT, &space.name)
                    .await
                    .context("recording the provisioned space")?;
            }
            Err(err) => {
                report.failed += 1;
                eprintln!(
                    "space {}: {}",
                    super::terminal_safe(&space.name),
                    super::error_line(&err)
                );
            }
        }
    }
    if let Some(store) = store {
        store.close().await;
    }
    Ok(report)
}

/// `tick --space NAME`: one round of the space, its members one after another, each in
/// the space (so what one creates, the next can see and finish).
pub(super) async fn round(
    app: &App,
    store: &persona_runner::store::Store,
    name: &str,
    order: Option<persona_runner::model::space::RoundOrder>,
    json: bool,
) -> Result<super::Outcome> {
    use persona_runner::model::tick::Trigger;
    use persona_runner::tick::{RoundPlan, TickRunner};
    let config = app.config();
    let Some(space) = store.get_space(DEFAULT_TENANT, name).await? else {
        anyhow::bail!("no space `{name}`: declare it in a catalog's `spaces` and seed it (`catalog seed`)");
    };
    let engine = TickRunner::new(store.clone(), std::sync::Arc::new(config.clone()), &app.env)
        .context("preparing the tick engine")?;
    let live = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !json;
    let events = move |event: persona_runner::tick::TickEvent| {
        if live {
            super::tick::print_progress(&event);
        }
    };
    eprintln!(
        "a round of {} ({} members: {}) with {}",
        space.name,
        space.members.len(),
        space
            .members
            .iter()
            .map(|m| m.email.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        engine.driver_name()
    );
    let plan = RoundPlan {
        order: order.unwrap_or(config.spaces.order),
        pause: config.spaces.pause.0,
        trigger: Trigger::Cli,
    };
    let never = tokio_util::sync::CancellationToken::new();
    let mut summaries = Vec::new();
    let mut failed = false;
    for member in engine
        .run_round(DEFAULT_TENANT, &space, plan, &events, &never, &never)
        .await
    {
        match member.outcome {
            Ok(summary) => summaries.push(summary),
            Err(err) => {
                failed = true;
                eprintln!("error: {}: {}", member.email, super::error_line(&err));
            }
        }
    }
    failed |= super::tick::report(&summaries, json)?;
    Ok(if failed {
        super::Outcome::Problems
    } else {
        super::Outcome::Success
    })
}
