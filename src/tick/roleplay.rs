//! The LLM role-play of a tick: the persona's prompt and story so far, an opening that
//! asks it to act, the loop of model turns and tool calls (calls written as text are
//! recovered; a persona that only talks is nudged once), and the self-rating at the end
//! (checked, with one repair turn).

use serde_json::{Value, json};

use super::call::CallRequest;
use super::state::{Arguments, TickState};
use super::{CallContext, TickError, TickEvent, TickRunner, audit, prompt, rating};
use crate::config::TextToolCalls;
use crate::llm::{ChatTurn, LlmClient, ToolCall, ToolNames, Want};
use crate::model::persona::Persona;
use crate::model::rating::NewRating;
use crate::model::tick::RatingStatus;
use crate::telemetry::{Kind, Span, semconv};

/// How much of an unusable rating answer is kept on the tick.
const RATING_RAW_CHARS: usize = 20_000;

impl TickRunner {
    pub(super) async fn play_llm(
        &self,
        llm: &LlmClient,
        ctx: &CallContext<'_>,
        state: &mut TickState,
    ) -> Result<(), TickError> {
        let limits = &self.config.tick;
        let names = tool_names(state);
        let tools = tool_definitions(state, &names);
        let mut messages = self.opening(ctx, state, &names).await?;
        let mut nudges_left = limits.nudges;
        loop {
            if state.turns as u32 >= limits.max_turns || state.spend.total() >= limits.max_tokens_per_tick {
                tracing::debug!(persona = %ctx.label, turns = state.turns, "tick budget reached");
                break;
            }
            state.turns += 1;
            (ctx.events)(TickEvent::Turn {
                persona: ctx.label.to_string(),
                turn: state.turns as u32,
            });
            self.save_completion(state).await?;
            let mut turn = llm.chat(&messages, &tools, Want::Text).await?;
            state.spend_turn(&turn);
            let written = turn.content.clone();
            let recovered = self.config.llm.text_tool_calls == TextToolCalls::Recover
                && recover_calls(&mut turn, &names, state.turns);
            messages.push(turn.as_message());
            state.transcript.push(
                "assistant",
                json!({
                    "turn": state.turns,
                    "content": written,
                    "recovered": recovered,
                    "tool_calls": turn.tool_calls.iter().map(|call| json!({
                        "id": call.id,
                        "tool": names.mcp_name(&call.name).unwrap_or(&call.name),
                        "arguments": call.arguments,
                    })).collect::<Vec<_>>(),
                }),
            );
            if turn.tool_calls.is_empty() {
                // Text before any call: remind the persona, in character, what it came for.
                if state.calls_asked == 0 && nudges_left > 0 {
                    nudges_left -= 1;
                    let nudge = prompt::nudge(&example_tool(state, ctx.persona, &names));
                    state.transcript.push("nudge", json!({"content": nudge}));
                    messages.push(json!({"role": "user", "content": nudge}));
                    continue;
                }
                break;
            }
            // Every call of the turn executes (budget permitting) and every one is answered.
            for call in &turn.tool_calls {
                let request = CallRequest {
                    tool: names.mcp_name(&call.name).unwrap_or(&call.name).to_string(),
                    arguments: Arguments::Raw(call.arguments.clone()),
                    chaos: false,
                    recovered,
                    call_id: Some(call.id.clone()),
                };
                let answer = self.call_tool(ctx, state, request).await?;
                messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": answer}));
            }
            if state.calls_made >= limits.max_tool_calls {
                break;
            }
        }
        let span = Span::child(semconv::RATING, Kind::Internal, Vec::new());
        let rated = span.run(self.rate_with_llm(llm, ctx, state, messages)).await;
        if let Some(status) = state.rating_status {
            span.set(semconv::RATING_STATUS, status.as_str());
        }
        rated
    }

    /// The conversation's start: the system prompt (the persona, its day, its story so
    /// far) and the opening turn that asks it to do what it came to do.
    async fn opening(
        &self,
        ctx: &CallContext<'_>,
        state: &mut TickState,
        names: &ToolNames,
    ) -> Result<Vec<Value>, TickError> {
        let persona = ctx.persona;
        let mut story = prompt::story_so_far(
            &self
                .store
                .recent_calls(persona.id, self.config.tick.story_actions as i64)
                .await?,
            &self.store.recent_ratings(persona.id, 5).await?,
        );
        story.push_str(&self.space_story(ctx).await?);
        let now = crate::time::now();
        let system = prompt::system_prompt(persona, now, &story);
        state
            .transcript
            .push("system", prompt::persona_part(persona, now, &story));
        let example = example_tool(state, persona, names);
        let opening = match ctx.goal {
            Some(goal) => prompt::goal_opening(&goal.task, &example),
            None => prompt::opening(&example),
        };
        state.transcript.push("user", json!({"content": opening}));
        Ok(vec![
            json!({"role": "system", "content": audit::redact_truncate(&system, &state.redact, usize::MAX)}),
            json!({"role": "user", "content": opening}),
        ])
    }

    fn evidence(state: &TickState, modules: &[String]) -> String {
        modules
            .iter()
            .map(|module| {
                let stats = &state.modules[module];
                format!(
                    "- {module}: {} calls, {} failed, {}",
                    stats.sent,
                    stats.sent_errors,
                    stats.latency_text()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn rate_with_llm(
        &self,
        llm: &LlmClient,
        ctx: &CallContext<'_>,
        state: &mut TickState,
        mut messages: Vec<Value>,
    ) -> Result<(), TickError> {
        let modules = state.used_modules();
        if modules.is_empty() {
            state.rating_status = Some(RatingStatus::Skipped);
            return Ok(());
        }
        let request = prompt::rating_prompt(&modules, &Self::evidence(state, &modules));
        state.transcript.push("rating_request", json!({"content": request}));
        messages.push(json!({"role": "user", "content": request}));
        let schema = rating::schema(&modules);
        let mut answers = Vec::new();
        self.save_completion(state).await?;
        for attempt in 0..2 {
            let turn = llm.chat(&messages, &[], Want::Json(Some(&schema))).await?;
            state.rating_attempts += 1;
            state.spend_turn(&turn);
            let answer = turn.content.clone().unwrap_or_default();
            answers.push(answer.clone());
            let cut = turn.hit_token_limit();
            match rating::parse(&answer, &modules, cut) {
                Ok(ratings) => {
                    state.transcript.push(
                        "rating_answer",
                        json!({"attempt": attempt + 1, "content": answer, "cut": cut}),
                    );
                    self.store_ratings(ctx, state, &ratings).await?;
                    state.rating_status = Some(RatingStatus::Valid);
                    return Ok(());
                }
                Err(problem) => {
                    state.transcript.push(
                        "rating_answer",
                        json!({"attempt": attempt + 1, "content": answer, "cut": cut, "problem": problem}),
                    );
                    if attempt == 0 {
                        tracing::info!(persona = %ctx.label, %problem, "rating answer unusable; asking once more");
                        messages.push(turn.as_message());
                        messages.push(json!({"role": "user", "content": format!(
                            "That answer cannot be used: {problem}. Reply again with only the JSON object described above."
                        )}));
                    } else {
                        tracing::warn!(persona = %ctx.label, %problem, "rating answer unusable after one repair; no rating recorded");
                    }
                }
            }
        }
        state.rating_status = Some(RatingStatus::Invalid);
        state.rating_raw = Some(audit::redact_truncate(
            &answers.join("\n\n--- repair answer ---\n\n"),
            &state.redact,
            RATING_RAW_CHARS,
        ));
        Ok(())
    }

    pub(super) async fn store_ratings(
        &self,
        ctx: &CallContext<'_>,
        state: &mut TickState,
        ratings: &[rating::ModuleRating],
    ) -> Result<(), TickError> {
        let records: Vec<NewRating> = ratings
            .iter()
            .map(|rating| {
                let stats = state.modules.get(&rating.module).cloned().unwrap_or_default();
                NewRating {
                    tenant_id: ctx.persona.tenant_id,
                    tick_id: ctx.tick_id,
                    persona_id: ctx.persona.id,
                    module: rating.module.clone(),
                    rating: rating.rating,
                    notes: (!rating.note.is_empty()).then(|| audit::redact_truncate(&rating.note, &state.redact, 2000)),
                    evidence_calls: stats.sent as i32,
                    evidence_errors: stats.sent_errors as i32,
                    evidence_mean_latency_ms: stats.mean_latency(),
                    evidence_rating: stats.evidence_rating(),
                    simulator: self.simulator().to_string(),
                    recorded_at: None,
                }
            })
            .collect();
        // The last call's result first (a tick declared dead meanwhile stores no ratings),
        // then one commit for the tick's ratings: all of them or none.
        self.save_completion(state).await?;
        self.store.record_ratings(records).await?;
        state.transcript.push("ratings", json!({"ratings": ratings}));
        state.ratings.extend(ratings.iter().cloned());
        Ok(())
    }
}

/// The session's tools under names the LLM API accepts. Every listed tool gets a name, so
/// a call to a withheld one maps back to it.
fn tool_names(state: &TickState) -> ToolNames {
    let mut withheld: Vec<&str> = state.withheld.keys().map(String::as_str).collect();
    withheld.sort_unstable();
    ToolNames::new(state.offered.iter().map(|t| t.name.as_str()).chain(withheld))
}

/// The offered tools as chat-completions function definitions.
fn tool_definitions(state: &TickState, names: &ToolNames) -> Vec<Value> {
    state
        .offered
        .iter()
        .map(|tool| {
            json!({"type": "function", "function": {
                "name": names.llm_name(&tool.name),
                "description": tool.description.clone().unwrap_or_default(),
                "parameters": &*tool.input_schema,
            }})
        })
        .collect()
}

/// A tool the persona would reach for first (the first offered one of its most weighted
/// module), by its LLM-side name: the opening and the nudge name it as an example.
fn example_tool(state: &TickState, persona: &Persona, names: &ToolNames) -> String {
    let mut modules: Vec<(&String, &f64)> = persona.module_mix.iter().filter(|(_, w)| **w > 0.0).collect();
    modules.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    modules
        .iter()
        .find_map(|(module, _)| state.offered.iter().find(|t| &t.module == *module))
        .or_else(|| state.offered.first())
        .and_then(|tool| names.llm_name(&tool.name))
        .unwrap_or_default()
        .to_string()
}

/// A turn without tool calls whose text holds calls to offered tools gets them as its
/// calls (ids `recovered_TURN_N`), and no text: the conversation then shows the model
/// its call made the proper way. Whether any were recovered.
fn recover_calls(turn: &mut ChatTurn, names: &ToolNames, turn_number: i32) -> bool {
    if !turn.tool_calls.is_empty() {
        return false;
    }
    let Some(content) = turn.content.as_deref() else {
        return false;
    };
    let offered = |name: &str| {
        names
            .mcp_name(name)
            .map(|_| name.to_string())
            .or_else(|| names.llm_name(name).map(str::to_string))
    };
    let found = crate::llm::recover::tool_calls(content, &offered);
    if found.is_empty() {
        return false;
    }
    turn.tool_calls = found
        .into_iter()
        .enumerate()
        .map(|(index, call)| ToolCall {
            id: format!("recovered_{turn_number}_{index}"),
            name: call.name,
            arguments: call.arguments,
        })
        .collect();
    turn.content = None;
    true
}
