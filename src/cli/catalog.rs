//! `persona-runner catalog validate|seed|cleanup`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use persona_runner::catalog::{self, CatalogError, Rules};
use persona_runner::model::persona::DEFAULT_TENANT;

use super::{App, Outcome};

#[derive(Subcommand)]
pub enum CatalogCommand {
    /// Check catalog files and report every problem with its JSON path.
    Validate {
        /// Catalog files (default: catalog.files of the config).
        files: Vec<PathBuf>,
        /// Also ask the product (as the first persona with goals) which tools it lists:
        /// warn about goals naming a tool it does not list, refuse destructive state checks.
        #[arg(long)]
        product: bool,
    },
    /// Create or update the personas of the catalogs (idempotent, by email).
    Seed {
        /// Catalog files (default: catalog.files of the config).
        files: Vec<PathBuf>,
        /// Print the counts as JSON.
        #[arg(long)]
        json: bool,
        /// Also sign each persona up in its product (auth.signup_url); an existing account is fine.
        #[arg(long)]
        provision: bool,
        /// With --provision: print who would be signed up where, and change nothing.
        #[arg(long, requires = "provision")]
        dry_run: bool,
    },
    /// Delete every persona user with its personas, ticks, actions, feedback and profile
    /// rows. Never deletes a human user. Warns about personas no catalog lists.
    Cleanup {
        /// Catalogs to compare the store with (default: catalog.files of the config).
        files: Vec<PathBuf>,
        /// Only report what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(command: CatalogCommand, app: &App) -> Result<Outcome> {
    let rules = Rules::from(&app.config().catalog);
    let files = |given: Vec<PathBuf>| {
        if given.is_empty() {
            app.config().catalog.files.clone()
        } else {
            given
        }
    };
    match command {
        CatalogCommand::Validate { files: given, product } => {
            let files = files(given);
            match validate(&files, &rules)? {
                Outcome::Success if product => goal_tools(app, &files, &rules).await,
                outcome => Ok(outcome),
            }
        }
        CatalogCommand::Seed {
            files: given,
            json,
            provision,
            dry_run,
        } => seed(app, &files(given), &rules, json, provision, dry_run).await,
        CatalogCommand::Cleanup { files: given, dry_run } => cleanup(app, &files(given), &rules, dry_run).await,
    }
}

/// `catalog validate`: every problem with its JSON path.
fn validate(files: &[PathBuf], rules: &Rules) -> Result<Outcome> {
    match catalog::validate(files, rules) {
        Ok(checked) => {
            for file in &checked {
                out!(
                    "ok: {} ({} personas{})",
                    file.file.display(),
                    file.personas,
                    file.target
                        .as_deref()
                        .map(|t| format!(", target {t}"))
                        .unwrap_or_default()
                );
            }
            Ok(Outcome::Success)
        }
        Err(CatalogError::Invalid(problems)) => {
            for problem in &problems {
                out!("{problem}");
            }
            eprintln!("{} problem(s) in {} file(s)", problems.len(), files.len());
            Ok(Outcome::Problems)
        }
        Err(other) => Err(other.into()),
    }
}

/// `catalog validate --product`: the goals' tools against what the product lists.
async fn goal_tools(app: &App, files: &[PathBuf], rules: &Rules) -> Result<Outcome> {
    let specs: Vec<_> = catalog::load(files, rules)?
        .into_iter()
        .flat_map(|c| c.personas)
        .filter(|p| !p.goals.is_empty())
        .collect();
    let Some(first) = specs.first() else {
        out!("no persona has goals: nothing to check against the product");
        return Ok(Outcome::Success);
    };
    let tools = persona_runner::tick::probe::offered_tools(app.config(), &app.env, &first.email)
        .await
        .with_context(|| format!("listing the product's tools as {}", first.email))?;
    let listed: Vec<(String, bool)> = tools.iter().map(|t| (t.name.clone(), t.destructive)).collect();
    let mut refused = 0;
    for spec in &specs {
        let found = catalog::goals::tool_problems(&spec.goals, &listed);
        for (goal, tool) in found.unknown {
            out!(
                "warning: {} · goal `{goal}` names `{tool}`, which the product does not list",
                spec.email
            );
        }
        for (goal, tool) in found.destructive {
            refused += 1;
            out!(
                "error: {} · goal `{goal}`: the state check's tool `{tool}` is destructive; state checks read with read-only tools",
                spec.email
            );
        }
    }
    out!(
        "{} tool(s) listed by the product; {} persona(s) with goals checked",
        listed.len(),
        specs.len()
    );
    Ok(if refused > 0 {
        Outcome::Problems
    } else {
        Outcome::Success
    })
}

/// `catalog seed`: the idempotent upsert, then (with `--provision`) the sign-ups.
async fn seed(
    app: &App,
    files: &[PathBuf],
    rules: &Rules,
    json: bool,
    provision: bool,
    dry_run: bool,
) -> Result<Outcome> {
    if dry_run {
        return provision_personas(app, files, rules, true).await;
    }
    let store = app.store().await?;
    let seeded = catalog::seed_files(
        &store,
        DEFAULT_TENANT,
        files,
        rules,
        &app.config().catalog.default_time_zone,
    )
    .await;
    store.close().await;
    let report = match seeded {
        Ok(report) => report,
        Err(err) => return report_invalid(err),
    };
    if json {
        out!("{}", super::json(&report)?);
    } else {
        out!(
            "seeded {}: {} created, {} updated, {} unchanged",
            store.url(),
            report.created,
            report.updated,
            report.unchanged
        );
    }
    if provision {
        return provision_personas(app, files, rules, false).await;
    }
    Ok(Outcome::Success)
}

/// `catalog cleanup`: every persona user deleted with what it left.
async fn cleanup(app: &App, files: &[PathBuf], rules: &Rules, dry_run: bool) -> Result<Outcome> {
    let listed = match catalog::listed_emails(files, rules) {
        Ok(listed) => listed,
        Err(err) => return report_invalid(err),
    };
    let store = app.store().await?;
    if dry_run {
        let counts = store.row_counts(DEFAULT_TENANT).await?;
        out!(
            "would delete {} persona users and their personas, ticks ({}), actions ({}), feedback ({})",
            counts.persona_users,
            counts.ticks,
            counts.actions,
            counts.feedback
        );
        store.close().await;
        return Ok(Outcome::Success);
    }
    let outcome = catalog::cleanup(&store, DEFAULT_TENANT, &listed).await;
    store.close().await;
    let outcome = outcome?;
    for email in &outcome.unlisted {
        eprintln!("warning: {email} was in the store but in no catalog (deleted with the rest)");
    }
    out!(
        "deleted {} persona users and {} personas (with their ticks, actions, feedback and profiles)",
        outcome.deleted.users_deleted,
        outcome.deleted.personas_deleted
    );
    Ok(Outcome::Success)
}

fn report_invalid(err: CatalogError) -> Result<Outcome> {
    match err {
        CatalogError::Invalid(problems) => {
            for problem in &problems {
                eprintln!("{problem}");
            }
            eprintln!("{} problem(s); nothing was changed", problems.len());
            Ok(Outcome::Problems)
        }
        other => Err(other.into()),
    }
}

/// Signs the catalogs' personas up in their products (`--provision`), or says who would be
/// signed up where (`--dry-run`). Personas of an undeclared target are left out.
async fn provision_personas(app: &App, files: &[PathBuf], rules: &Rules, dry_run: bool) -> Result<Outcome> {
    use anyhow::Context as _;
    use persona_runner::auth::{Provisioner, SeedSecret, SignUp};
    let catalogs = match catalog::load(files, rules) {
        Ok(catalogs) => catalogs,
        Err(err) => return report_invalid(err),
    };
    let config = app.config();
    let mut provisioners = std::collections::BTreeMap::new();
    let (mut created, mut existed, mut skipped, mut failed) = (0, 0, 0, 0);
    for spec in catalogs.iter().flat_map(|c| &c.personas) {
        let target = spec.target.clone();
        let product = match &target {
            None => Some(config.clone()),
            Some(name) => config.for_target(name),
        };
        let Some(product) = product else {
            skipped += 1;
            continue;
        };
        if !provisioners.contains_key(&target) {
            let seed = SeedSecret::resolve(&product, &app.env)?;
            let provisioner = Provisioner::new(&product, seed.secret).with_context(|| match &target {
                Some(name) => format!("provisioning personas of target {name}"),
                None => "provisioning personas".to_string(),
            })?;
            provisioners.insert(target.clone(), provisioner);
        }
        let provisioner = &provisioners[&target];
        if dry_run {
            out!("would sign up {} ({}) at {}", spec.email, spec.name, provisioner.url());
            continue;
        }
        match provisioner.sign_up(&spec.email, &spec.name).await {
            Ok(SignUp::Created) => created += 1,
            Ok(SignUp::Exists) => existed += 1,
            Err(err) => {
                failed += 1;
                eprintln!("{err}");
            }
        }
    }
    if dry_run {
        super::spaces::provision_spaces(app, &catalogs, true).await?;
        out!("dry run: nothing was seeded or signed up; {skipped} persona(s) of undeclared targets left out");
        return Ok(Outcome::Success);
    }
    out!(
        "provisioned: {created} signed up, {existed} already had an account, {failed} failed, \
         {skipped} of undeclared targets left out"
    );
    // Spaces need their members' accounts: only once every sign-up went through.
    if failed == 0 {
        let spaces = super::spaces::provision_spaces(app, &catalogs, false).await?;
        out!(
            "spaces: {} created, {} joined, {} already present, {} failed{}",
            spaces.tally.created,
            spaces.tally.joined,
            spaces.tally.present,
            spaces.failed,
            match spaces.unconfigured {
                0 => String::new(),
                n => format!(", {n} left out (no [spaces] calls for their product)"),
            }
        );
        failed += spaces.failed;
    }
    Ok(if failed == 0 {
        Outcome::Success
    } else {
        Outcome::Problems
    })
}
