//! The prompts of a tick, rendered from the templates in `prompts/`.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::model::call::Call;
use crate::model::persona::Persona;
use crate::model::rating::Rating;

const ROLEPLAY: &str = include_str!("../../prompts/roleplay.md");
const RATING: &str = include_str!("../../prompts/rating.md");
const ELICITATION: &str = include_str!("../../prompts/elicitation.md");
const OPENING: &str = include_str!("../../prompts/opening.md");
const NUDGE: &str = include_str!("../../prompts/nudge.md");
const GOAL: &str = include_str!("../../prompts/goal.md");

/// A short hash of the templates, stored on every tick as its prompt version.
pub fn version() -> &'static str {
    static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let digest = Sha256::digest(
            format!("{ROLEPLAY}\u{0}{RATING}\u{0}{ELICITATION}\u{0}{OPENING}\u{0}{NUDGE}\u{0}{GOAL}").as_bytes(),
        );
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    });
    &VERSION
}

/// Replaces `{{name}}` placeholders.
fn render(template: &str, values: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    out
}

/// The persona's modules, most weighted first, with their share.
pub fn preferred_modules(persona: &Persona) -> String {
    let total: f64 = persona.module_mix.values().sum();
    let mut modules: Vec<_> = persona.module_mix.iter().filter(|(_, w)| **w > 0.0).collect();
    modules.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    modules
        .iter()
        .map(|(module, weight)| format!("{module} ({:.0}%)", **weight / total * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A few lines on what the persona did lately and how it felt about it.
pub fn story_so_far(actions: &[Call], feedback: &[Rating]) -> String {
    if actions.is_empty() && feedback.is_empty() {
        return "Nothing yet: this is your first time in the app.".into();
    }
    let mut story = String::new();
    for action in actions.iter().rev() {
        let _ = writeln!(
            story,
            "- {}: {} ({})",
            action.created_at.format("%a %d.%m. %H:%M"),
            action.tool_name,
            action.result
        );
    }
    for note in feedback.iter().filter(|f| f.notes.is_some()) {
        let _ = writeln!(
            story,
            "- you rated {} {}/5: {}",
            note.module,
            note.rating,
            note.notes.as_deref().unwrap_or_default()
        );
    }
    story.trim_end().to_string()
}

/// The system prompt of a tick.
pub fn system_prompt(persona: &Persona, now: DateTime<Utc>, story: &str) -> String {
    let zone = persona.zone();
    let local = now.with_timezone(&zone);
    render(
        ROLEPLAY,
        &[
            ("persona_prompt", persona.system_prompt.trim().to_string()),
            ("weekday", local.format("%A").to_string()),
            ("date", local.format("%Y-%m-%d").to_string()),
            ("local_time", local.format("%H:%M").to_string()),
            ("time_zone", persona.time_zone.clone()),
            ("preferred_modules", preferred_modules(persona)),
            ("story_so_far", story.to_string()),
        ],
    )
}

/// The persona-specific part of the system prompt, for the transcript (the template is
/// named by its hash, so it is not stored again with every tick).
pub fn persona_part(persona: &Persona, now: DateTime<Utc>, story: &str) -> serde_json::Value {
    let local = now.with_timezone(&persona.zone());
    serde_json::json!({
        "template": version(),
        "persona_prompt": persona.system_prompt.trim(),
        "local_time": local.format("%A %Y-%m-%d %H:%M").to_string(),
        "time_zone": persona.time_zone,
        "preferred_modules": preferred_modules(persona),
        "story_so_far": story,
    })
}

/// The role-play template itself (for estimating a request's size).
pub fn system_prompt_template() -> &'static str {
    ROLEPLAY
}

/// The role-play's first user turn: act now, with one tool as an example.
pub fn opening(example_tool: &str) -> String {
    render(OPENING, &[("example_tool", example_tool.to_string())])
        .trim_end()
        .to_string()
}

/// A check tick's first user turn: the goal's task as the persona's intention.
pub fn goal_opening(task: &str, example_tool: &str) -> String {
    render(
        GOAL,
        &[
            ("task", task.trim().to_string()),
            ("example_tool", example_tool.to_string()),
        ],
    )
    .trim_end()
    .to_string()
}

/// The reminder when the persona answers with text before using the app at all.
pub fn nudge(example_tool: &str) -> String {
    render(NUDGE, &[("example_tool", example_tool.to_string())])
        .trim_end()
        .to_string()
}

/// The form a server asks the persona to fill in.
pub fn elicitation_prompt(message: &str, schema: &serde_json::Value) -> String {
    render(
        ELICITATION,
        &[("message", message.to_string()), ("schema", schema.to_string())],
    )
}

/// The end-of-tick rating request.
pub fn rating_prompt(modules: &[String], evidence: &str) -> String {
    render(
        RATING,
        &[("modules", modules.join(", ")), ("evidence", evidence.to_string())],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_json_braces_kept() {
        let text = rating_prompt(&["todo".into(), "mood".into()], "- todo: 2 calls");
        assert!(text.contains("Parts to rate: todo, mood"));
        assert!(text.contains(r#"{"ratings": [{"module""#));
        assert!(!text.contains("{{"));
        assert_eq!(version().len(), 12);
    }
}
