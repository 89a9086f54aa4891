//! The LLM role-play of a tick: the persona's prompt and story so far, the loop of model
//! turns and tool calls, and the self-rating at the end (checked, with one repair turn).

use serde_json::{Value, json};

use super::state::{Arguments, TickState};
use super::{CallContext, TickError, TickEvent, TickRunner, audit, prompt, rating};
use crate::llm::{LlmClient, ToolNames};
use crate::model::rating::NewRating;
use crate::model::tick::RatingStatus;

/// How much of an unusable rating answer is kept on the tick.
const RATING_RAW_CHARS: usize = 20_000;

impl TickRunner {
    pub(super) async fn play_llm(
        &self,
        llm: &LlmClient,
        ctx: &CallContext<'_>,
        state: &mut TickState,
    ) -> Result<(), TickError> {
        let persona = ctx.persona;
        let limits = &self.config.tick;
        let story = prompt::story_so_far(
            &self.store.recent_calls(persona.id, limits.story_actions as i64).await?,
            &self.store.recent_ratings(persona.id, 5).await?,
        );
        // Every listed tool gets a name, so a call to a withheld one maps back to it.
        let mut withheld: Vec<&str> = state.withheld.keys().map(String::as_str).collect();
        withheld.sort_unstable();
        let names = ToolNames::new(state.offered.iter().map(|t| t.name.as_str()).chain(withheld));
        let tools: Vec<Value> = state
            .offered
            .iter()
            .map(|tool| {
                json!({"type": "function", "function": {
                    "name": names.llm_name(&tool.name),
                    "description": tool.description.clone().unwrap_or_default(),
                    "parameters": &*tool.input_schema,
                }})
            })
            .collect();
        let now = crate::time::now();
        let system = prompt::system_prompt(persona, now, &story);
        state
            .transcript
            .push("system", prompt::persona_part(persona, now, &story));
        let opening = "(You open the app.)";
        state.transcript.push("user", json!({"content": opening}));
        let mut messages = vec![
            json!({"role": "system", "content": audit::redact_truncate(&system, &state.redact, usize::MAX)}),
            json!({"role": "user", "content": opening}),
        ];
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
            let turn = llm.chat(&messages, &tools, None).await?;
            state.spend.add(turn.prompt_tokens, turn.completion_tokens);
            messages.push(turn.as_message());
            state.transcript.push(
                "assistant",
                json!({
                    "turn": state.turns,
                    "content": turn.content,
                    "tool_calls": turn.tool_calls.iter().map(|call| json!({
                        "id": call.id,
                        "tool": names.mcp_name(&call.name).unwrap_or(&call.name),
                        "arguments": call.arguments,
                    })).collect::<Vec<_>>(),
                }),
            );
            if turn.tool_calls.is_empty() {
                break;
            }
            // Every call of the turn executes (budget permitting) and every one is answered.
            for call in &turn.tool_calls {
                let mcp_name = names.mcp_name(&call.name).unwrap_or(&call.name).to_string();
                let answer = self
                    .call_tool(ctx, state, &mcp_name, Arguments::Raw(call.arguments.clone()), false)
                    .await?;
                messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": answer}));
            }
            if state.calls_made >= limits.max_tool_calls {
                break;
            }
        }
        self.rate_with_llm(llm, ctx, state, messages).await
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
        let format = self
            .config
            .llm
            .response_format
            .then(|| rating::response_format(&modules));
        let mut answers = Vec::new();
        self.save_completion(state).await?;
        for attempt in 0..2 {
            let turn = llm.chat(&messages, &[], format.clone()).await?;
            state.spend.add(turn.prompt_tokens, turn.completion_tokens);
            let answer = turn.content.clone().unwrap_or_default();
            answers.push(answer.clone());
            match rating::parse(&answer, &modules) {
                Ok(ratings) => {
                    state
                        .transcript
                        .push("rating_answer", json!({"attempt": attempt + 1, "content": answer}));
                    self.store_ratings(ctx, state, &ratings).await?;
                    state.rating_status = Some(RatingStatus::Valid);
                    return Ok(());
                }
                Err(problem) => {
                    state.transcript.push(
                        "rating_answer",
                        json!({"attempt": attempt + 1, "content": answer, "problem": problem}),
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
