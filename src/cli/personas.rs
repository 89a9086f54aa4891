//! `persona-runner personas list|show`.

use anyhow::Result;
use clap::Subcommand;
use comfy_table::Table;
use persona_runner::model::persona::{DEFAULT_TENANT, Persona};

use super::{App, Outcome};

#[derive(Subcommand)]
pub enum PersonasCommand {
    /// List every persona.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one persona by id or email.
    Show {
        /// Persona id (UUID) or the email it logs in with.
        id_or_email: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: PersonasCommand, app: &App) -> Result<Outcome> {
    let store = app.store().await?;
    let result = match command {
        PersonasCommand::List { json } => {
            let personas = store.list_personas(DEFAULT_TENANT).await?;
            if json {
                out!("{}", super::json(&personas)?);
            } else {
                out!("{}", table(&personas));
                out!("{} personas", personas.len());
            }
            Outcome::Success
        }
        PersonasCommand::Show { id_or_email, json } => match store.find_persona(DEFAULT_TENANT, &id_or_email).await? {
            Some(persona) if json => {
                out!("{}", super::json(&persona)?);
                Outcome::Success
            }
            Some(persona) => {
                print_detail(&persona);
                Outcome::Success
            }
            None => {
                eprintln!("no persona with id or email `{id_or_email}` (see `persona-runner personas list`)");
                Outcome::Problems
            }
        },
    };
    store.close().await;
    Ok(result)
}

fn table(personas: &[Persona]) -> Table {
    let mut table = super::table(&[
        "email",
        "name",
        "archetype",
        "cadence",
        "time zone",
        "paused",
        "last active",
    ]);
    for p in personas {
        table.add_row([
            p.email.clone().unwrap_or_else(|| "(profile only)".into()),
            p.name.clone(),
            p.archetype.clone(),
            p.tick_cadence.to_string(),
            p.time_zone.clone(),
            if p.paused { "yes" } else { "no" }.into(),
            p.last_active_at
                .map_or_else(|| "never".into(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
        ]);
    }
    table
}

fn print_detail(p: &Persona) {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mix = p
        .module_mix
        .iter()
        .map(|(m, w)| format!("{m} {w}"))
        .collect::<Vec<_>>()
        .join(", ");
    out!("id:            {}", p.id);
    out!("email:         {}", opt(&p.email));
    out!("name:          {}", p.name);
    out!("archetype:     {}", p.archetype);
    out!("cadence:       {} ({})", p.tick_cadence, p.time_zone);
    out!("locale:        {}", opt(&p.locale));
    out!("paused:        {}", p.paused);
    out!("module mix:    {mix}");
    out!(
        "last active:   {}",
        p.last_active_at.map_or("never".into(), |t| t.to_rfc3339())
    );
    if let Some(flow) = p.flow {
        out!(
            "flow:          {flow} #{}",
            p.role_index.map_or("-".into(), |i| i.to_string())
        );
        out!("authority:     {}", opt(&p.primary_authority));
        out!(
            "decision focus:{}",
            p.decision_focus.as_deref().map_or(" -".into(), |d| format!(" {d}"))
        );
        let metrics = p
            .key_metrics
            .iter()
            .map(|m| format!("{} {}", m.id, m.weight))
            .collect::<Vec<_>>()
            .join(", ");
        out!("key metrics:   {metrics}");
    }
    if let Some(description) = &p.description {
        out!("description:   {description}");
    }
    out!("\n{}", p.system_prompt);
}
