//! `persona-runner catalog validate|seed|cleanup`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use persona_runner::catalog::{self, CatalogError, Rules};
use persona_runner::persona::DEFAULT_TENANT;

use super::{App, Outcome};

#[derive(Subcommand)]
pub enum CatalogCommand {
    /// Check catalog files and report every problem with its JSON path.
    Validate {
        /// Catalog files (default: catalog.files of the config).
        files: Vec<PathBuf>,
    },
    /// Create or update the personas of the catalogs (idempotent, by email).
    Seed {
        /// Catalog files (default: catalog.files of the config).
        files: Vec<PathBuf>,
        /// Print the counts as JSON.
        #[arg(long)]
        json: bool,
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
        CatalogCommand::Validate { files: given } => {
            let files = files(given);
            match catalog::validate(&files, &rules) {
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
        CatalogCommand::Seed { files: given, json } => {
            let store = app.store().await?;
            let seeded = catalog::seed_files(
                &store,
                DEFAULT_TENANT,
                &files(given),
                &rules,
                &app.config().catalog.default_time_zone,
            )
            .await;
            store.close().await;
            let report = match seeded {
                Ok(report) => report,
                Err(err) => return report_invalid(err),
            };
            if json {
                out!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!(
                    "seeded {}: {} created, {} updated, {} unchanged",
                    store.url(),
                    report.created,
                    report.updated,
                    report.unchanged
                );
            }
            Ok(Outcome::Success)
        }
        CatalogCommand::Cleanup { files: given, dry_run } => {
            let listed = match catalog::listed_emails(&files(given), &rules) {
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
    }
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
