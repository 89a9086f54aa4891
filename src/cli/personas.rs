//! `persona-runner personas list|show`.

use anyhow::Result;
use clap::Subcommand;
use comfy_table::{ContentArrangement, Table};
use persona_runner::persona::{DEFAULT_TENANT, Persona};

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
                println!("{}", serde_json::to_string_pretty(&personas)?);
            } else {
                println!("{}", table(&personas));
                println!("{} personas", personas.len());
            }
            Outcome::Success
        }
        PersonasCommand::Show { id_or_email, json } => match store.find_persona(DEFAULT_TENANT, &id_or_email).await? {
            Some(persona) if json => {
                println!("{}", serde_json::to_string_pretty(&persona)?);
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
    let mut table = Table::new();
    table.set_content_arrangement(ContentArrangement::Disabled).set_header([
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
    println!("id:            {}", p.id);
    println!("email:         {}", opt(&p.email));
    println!("name:          {}", p.name);
    println!("archetype:     {}", p.archetype);
    println!("cadence:       {} ({})", p.tick_cadence, p.time_zone);
    println!("locale:        {}", opt(&p.locale));
    println!("paused:        {}", p.paused);
    println!("module mix:    {mix}");
    println!(
        "last active:   {}",
        p.last_active_at.map_or("never".into(), |t| t.to_rfc3339())
    );
    if let Some(flow) = p.flow {
        println!(
            "flow:          {flow} #{}",
            p.role_index.map_or("-".into(), |i| i.to_string())
        );
        println!("authority:     {}", opt(&p.primary_authority));
        println!(
            "decision focus:{}",
            p.decision_focus.as_deref().map_or(" -".into(), |d| format!(" {d}"))
        );
        let metrics = p
            .key_metrics
            .iter()
            .map(|m| format!("{} {}", m.id, m.weight))
            .collect::<Vec<_>>()
            .join(", ");
        println!("key metrics:   {metrics}");
    }
    if let Some(description) = &p.description {
        println!("description:   {description}");
    }
    println!("\n{}", p.system_prompt);
}
