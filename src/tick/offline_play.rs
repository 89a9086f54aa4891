//! The offline driver's play: modules picked by the persona's mix, tools of those
//! modules, arguments built from each tool's schema (deterministically from a seed; edge
//! cases on purpose with `llm.chaos`), and ratings from the evidence alone.

use std::collections::BTreeMap;

use serde_json::json;
use sha2::Digest as _;

use super::call::CallRequest;
use super::state::{Arguments, TickState};
use super::{CallContext, TickError, TickEvent, TickRunner, offline, rating};
use crate::mcp::ToolInfo;
use crate::model::persona::Persona;
use crate::model::tick::RatingStatus;

/// The offered tools by module, and the persona's weights of the modules offered.
struct Menu {
    by_module: BTreeMap<String, Vec<ToolInfo>>,
    weighted: Vec<(String, f64)>,
}

impl Menu {
    fn of(offered: &[ToolInfo], persona: &Persona) -> Self {
        let mut by_module: BTreeMap<String, Vec<ToolInfo>> = BTreeMap::new();
        for tool in offered {
            by_module.entry(tool.module.clone()).or_default().push(tool.clone());
        }
        let weighted = persona
            .module_mix
            .iter()
            .filter(|(module, weight)| **weight > 0.0 && by_module.contains_key(module.as_str()))
            .map(|(module, weight)| (module.clone(), *weight))
            .collect();
        Self { by_module, weighted }
    }

    /// A module by the persona's weights; any module when none of its own is offered.
    fn pick_module(&self, rng: &mut fastrand::Rng) -> String {
        if self.weighted.is_empty() {
            return self
                .by_module
                .keys()
                .nth(rng.usize(..self.by_module.len()))
                .expect("non-empty")
                .to_string();
        }
        let total: f64 = self.weighted.iter().map(|(_, w)| w).sum();
        let mut point = rng.f64() * total;
        self.weighted
            .iter()
            .find(|(_, w)| {
                point -= w;
                point < 0.0
            })
            .unwrap_or(&self.weighted[self.weighted.len() - 1])
            .0
            .clone()
    }

    /// A tool of `module`.
    fn pick_tool(&self, module: &str, rng: &mut fastrand::Rng) -> ToolInfo {
        let tools = &self.by_module[module];
        tools[rng.usize(..tools.len())].clone()
    }
}

/// The driver's random source for one tick: seeded by the persona's email (stable across
/// databases) and its tick count, so the same seed replays the same sequence and each
/// tick still differs.
fn tick_rng(seed: u64, persona: &Persona, ordinal: i64) -> fastrand::Rng {
    let email_bits = sha2::Sha256::digest(persona.email.as_deref().unwrap_or_default().as_bytes());
    let persona_seed = u64::from_le_bytes(email_bits[..8].try_into().expect("8 bytes"));
    fastrand::Rng::with_seed(seed ^ persona_seed ^ (ordinal as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Arguments for `tool` built from its schema: ids seen earlier in the tick reused, an
/// edge case on purpose when `chaos`, and not sent at all when the driver cannot build
/// them validly (a `pattern`, say): the product is not blamed for the driver's limits.
fn arguments_for(state: &TickState, tool: &ToolInfo, chaos: bool, rng: &mut fastrand::Rng) -> Arguments {
    let mut arguments = match offline::generate(&tool.input_schema, rng) {
        Ok(arguments) => arguments,
        Err(why) => return Arguments::Unbuildable(why),
    };
    offline::reuse_ids(&mut arguments, &tool.input_schema, &state.known_ids, rng);
    if chaos {
        return Arguments::Value(offline::chaos(&arguments, &tool.input_schema, rng));
    }
    let invalid = state
        .validators
        .get(&tool.name)
        .and_then(|validator| validator.iter_errors(&arguments).next().map(|e| e.to_string()));
    match invalid {
        Some(problem) => Arguments::Unbuildable(format!("the arguments it built do not match the schema: {problem}")),
        None => Arguments::Value(arguments),
    }
}

/// The offered tools a goal's call checks name, each as often as its `min`, in order.
fn wanted_tools(goal: &crate::model::goal::Goal, offered: &[ToolInfo]) -> Vec<ToolInfo> {
    let mut wanted = Vec::new();
    for check in &goal.checks {
        let crate::model::goal::Check::Called(called) = check else {
            continue;
        };
        let Ok(glob) = globset::Glob::new(&called.called).map(|g| g.compile_matcher()) else {
            continue;
        };
        if let Some(tool) = offered.iter().find(|t| glob.is_match(&t.name)) {
            for _ in 0..called.min.unwrap_or(1).min(20) {
                wanted.push(tool.clone());
            }
        }
    }
    wanted
}

/// The ratings the evidence alone gives: only calls that reached the product count, and
/// a module with none is not rated.
fn evidence_ratings(state: &TickState) -> Vec<rating::ModuleRating> {
    state
        .modules
        .iter()
        .filter_map(|(module, stats)| {
            let rating = stats.evidence_rating()?;
            let (calls, errors) = stats.evidence();
            let latency = stats.latency_text();
            let edge_cases = if stats.chaos_sent > 0 {
                format!(
                    ", plus {} edge cases ({} rejected)",
                    stats.chaos_sent, stats.chaos_errors
                )
            } else {
                String::new()
            };
            Some(rating::ModuleRating {
                module: module.clone(),
                rating,
                note: format!("offline driver, from evidence: {calls} calls, {errors} failed, {latency}{edge_cases}"),
            })
        })
        .collect()
}

impl TickRunner {
    pub(super) async fn play_offline(
        &self,
        seed: u64,
        chaos: bool,
        ctx: &CallContext<'_>,
        state: &mut TickState,
    ) -> Result<(), TickError> {
        let ordinal = self.store.count_ticks(ctx.persona.id).await?;
        let mut rng = tick_rng(seed, ctx.persona, ordinal);
        let menu = Menu::of(&state.offered, ctx.persona);
        // A check tick calls the tools its goal's checks name first (so goals run without
        // an LLM), then plays on as usual.
        let wanted = ctx
            .goal
            .map(|goal| wanted_tools(goal, &state.offered))
            .unwrap_or_default();
        let count = if menu.by_module.is_empty() {
            0
        } else {
            rng.usize(3..=8)
                .max(wanted.len())
                .min(self.config.tick.max_tool_calls as usize)
        };
        for turn in 0..count {
            let (tool, module, is_chaos) = match wanted.get(turn) {
                Some(tool) => (tool.clone(), tool.module.clone(), false),
                None => {
                    let module = menu.pick_module(&mut rng);
                    (menu.pick_tool(&module, &mut rng), module, chaos && rng.bool())
                }
            };
            let arguments = arguments_for(state, &tool, is_chaos, &mut rng);
            state.turns = turn as i32 + 1;
            (ctx.events)(TickEvent::Turn {
                persona: ctx.label.to_string(),
                turn: state.turns as u32,
            });
            state.transcript.push(
                "offline_choice",
                json!({"turn": state.turns, "module": module, "tool": tool.name, "chaos": is_chaos}),
            );
            let request = CallRequest {
                tool: tool.name.clone(),
                arguments,
                chaos: is_chaos,
                recovered: false,
                call_id: None,
            };
            let answer = self.call_tool(ctx, state, request).await?;
            offline::collect_ids(&answer, &mut state.known_ids);
        }
        let ratings = evidence_ratings(state);
        if ratings.is_empty() {
            state.rating_status = Some(RatingStatus::Skipped);
            return Ok(());
        }
        self.store_ratings(ctx, state, &ratings).await?;
        state.rating_status = Some(RatingStatus::Valid);
        Ok(())
    }
}
