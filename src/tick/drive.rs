//! What happens inside a tick once it is claimed: logging in and opening the MCP session
//! (with the tool policy applied), then one of the two drivers (the LLM role-play with
//! its self-rating, or the offline driver with its evidence ratings).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use sha2::Digest as _;

use super::agent::PersonaAgent;
use super::state::{Arguments, TickState};
use super::{CallContext, Driver, TickError, TickEvent, TickRunner, audit, offline, prompt, rating};
use crate::llm::{LlmClient, ToolNames};
use crate::mcp::{Capabilities, Connect, McpError, McpSession, ToolInfo};
use crate::model::rating::NewRating;
use crate::model::tick::RatingStatus;

/// How much of an unusable rating answer is kept on the tick.
const RATING_RAW_CHARS: usize = 20_000;

impl TickRunner {
    /// Logs in and opens the MCP session; one fresh login and one retry on a 401.
    pub(super) async fn connect(&self, ctx: &CallContext<'_>, state: &mut TickState) -> Result<(), TickError> {
        let email = ctx.persona.email.as_deref().unwrap_or_default();
        let product = self.products.of(ctx.persona);
        let credentials = product.auth.credentials(email).await?;
        // Before the session opens: an error opening it may already echo the token.
        state.remember(&credentials);
        let agent = self.agent(ctx, state);
        state.agent = Some(agent.clone());
        let session = match self.open_session(product, email, &credentials, &agent).await {
            Err(McpError::Unauthorized {
                credentials_sent: true, ..
            }) if !state.reauthenticated && credentials.token.is_some() => {
                state.reauthenticated = true;
                tracing::info!(email, "gateway refused the cached token; logging in again");
                product.auth.invalidate(email);
                let fresh = product.auth.credentials(email).await?;
                state.remember(&fresh);
                self.open_session(product, email, &fresh, &agent).await?
            }
            other => other?,
        };
        for secret in session.secrets() {
            if !state.redact.contains(&secret) {
                state.redact.push(secret);
            }
        }
        state.offered.clear();
        state.withheld.clear();
        state.validators.clear();
        for tool in session.tools() {
            match product.policy.check(tool) {
                Ok(()) => {
                    match self.validator(&tool.input_schema) {
                        Ok(validator) => {
                            state.validators.insert(tool.name.clone(), validator);
                        }
                        Err(err) => {
                            tracing::warn!(tool = %tool.name, %err, "tool schema is not a valid JSON Schema; arguments go unchecked")
                        }
                    }
                    state.offered.push(tool.clone());
                }
                Err(reason) => {
                    state.withheld.insert(tool.name.clone(), reason.to_string());
                }
            }
        }
        state.protocol_version = session.protocol_version();
        // The tool list as the persona got it: what was withheld, and why.
        let mut withheld: Vec<(&String, &String)> = state.withheld.iter().collect();
        withheld.sort();
        state.transcript.push(
            "tools",
            json!({
                "protocol_version": state.protocol_version,
                "offered": state.offered.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
                "withheld": withheld.into_iter().map(|(tool, reason)| json!({"tool": tool, "reason": reason})).collect::<Vec<_>>(),
            }),
        );
        state.session = Some(session);
        Ok(())
    }

    async fn open_session(
        &self,
        product: &super::product::Product,
        email: &str,
        credentials: &crate::auth::Credentials,
        agent: &Arc<PersonaAgent>,
    ) -> Result<McpSession, McpError> {
        let mcp = &product.mcp;
        McpSession::connect(Connect {
            config: mcp,
            policy: &product.policy,
            credentials,
            persona: email,
            oauth: product.oauth.clone(),
            agent: Some(agent.clone() as Arc<dyn crate::mcp::Agent>),
            capabilities: Capabilities {
                elicitation: mcp.elicitation,
                sampling: mcp.sampling && matches!(self.driver, Driver::Llm(_)),
                roots: mcp.roots.clone(),
            },
        })
        .await
    }

    /// The persona as it answers the server's own requests during this tick.
    fn agent(&self, ctx: &CallContext<'_>, state: &TickState) -> Arc<PersonaAgent> {
        let (llm, seed) = match &self.driver {
            Driver::Llm(llm) => (Some(llm.clone()), 0),
            Driver::Offline { seed, .. } => (None, *seed),
        };
        Arc::new(PersonaAgent {
            store: self.store.clone(),
            llm,
            tenant_id: ctx.persona.tenant_id,
            tick_id: ctx.tick_id,
            persona_id: ctx.persona.id,
            system_prompt: prompt::system_prompt(ctx.persona, crate::time::now(), ""),
            seq: state.seq.clone(),
            spend: state.spend.clone(),
            budget: self.config.tick.max_tokens_per_tick,
            redact: state.redact.clone(),
            seed,
            json_mode: self.config.llm.response_format,
            module: Default::default(),
            notes: Default::default(),
            failure: Default::default(),
        })
    }

    /// The compiled validator of a tool schema, from the cache when seen before.
    fn validator(&self, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        if let Some(found) = self.validators.lock().expect("validator cache").get(schema) {
            return Ok(found.clone());
        }
        let compiled = Arc::new(jsonschema::validator_for(schema).map_err(|e| e.to_string())?);
        self.validators
            .lock()
            .expect("validator cache")
            .insert(schema, compiled.clone());
        Ok(compiled)
    }

    pub(super) async fn play(&self, ctx: &CallContext<'_>, state: &mut TickState) -> Result<(), TickError> {
        // Fault injection for the reliability suite (debug builds only): a tick that panics.
        #[cfg(debug_assertions)]
        if std::env::var("PERSONA_RUNNER_FAULT_PANIC")
            .is_ok_and(|who| Some(who.as_str()) == ctx.persona.email.as_deref())
        {
            panic!("injected fault: a panic in the tick of {}", ctx.label);
        }
        self.connect(ctx, state).await?;
        match &self.driver {
            Driver::Llm(llm) => self.play_llm(llm, ctx, state).await,
            Driver::Offline { seed, chaos } => self.play_offline(*seed, *chaos, ctx, state).await,
        }
    }

    async fn play_llm(&self, llm: &LlmClient, ctx: &CallContext<'_>, state: &mut TickState) -> Result<(), TickError> {
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

    async fn store_ratings(
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

    async fn play_offline(
        &self,
        seed: u64,
        chaos: bool,
        ctx: &CallContext<'_>,
        state: &mut TickState,
    ) -> Result<(), TickError> {
        let persona = ctx.persona;
        // Seeded by the persona's email (stable across databases) and its tick count, so
        // the same seed replays the same sequence and each tick still differs.
        let ordinal = self.store.count_ticks(persona.id).await?;
        let email_bits = sha2::Sha256::digest(persona.email.as_deref().unwrap_or_default().as_bytes());
        let persona_seed = u64::from_le_bytes(email_bits[..8].try_into().expect("8 bytes"));
        let mut rng =
            fastrand::Rng::with_seed(seed ^ persona_seed ^ (ordinal as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut by_module: BTreeMap<String, Vec<ToolInfo>> = BTreeMap::new();
        for tool in &state.offered {
            by_module.entry(tool.module.clone()).or_default().push(tool.clone());
        }
        let weighted: Vec<(String, f64)> = persona
            .module_mix
            .iter()
            .filter(|(module, weight)| **weight > 0.0 && by_module.contains_key(module.as_str()))
            .map(|(module, weight)| (module.clone(), *weight))
            .collect();
        let count = if by_module.is_empty() {
            0
        } else {
            rng.usize(3..=8).min(self.config.tick.max_tool_calls as usize)
        };
        for turn in 0..count {
            let module = if weighted.is_empty() {
                // None of the persona's modules exist here: any module will do.
                by_module
                    .keys()
                    .nth(rng.usize(..by_module.len()))
                    .expect("non-empty")
                    .to_string()
            } else {
                let total: f64 = weighted.iter().map(|(_, w)| w).sum();
                let mut point = rng.f64() * total;
                weighted
                    .iter()
                    .find(|(_, w)| {
                        point -= w;
                        point < 0.0
                    })
                    .unwrap_or(&weighted[weighted.len() - 1])
                    .0
                    .clone()
            };
            let tools = &by_module[module.as_str()];
            let tool = tools[rng.usize(..tools.len())].clone();
            let is_chaos = chaos && rng.bool();
            let arguments = match offline::generate(&tool.input_schema, &mut rng) {
                Ok(mut arguments) => {
                    offline::reuse_ids(&mut arguments, &tool.input_schema, &state.known_ids, &mut rng);
                    // What the driver cannot build validly (a `pattern`, say) is not sent:
                    // the product is not blamed for the driver's limits.
                    let invalid = state
                        .validators
                        .get(&tool.name)
                        .and_then(|validator| validator.iter_errors(&arguments).next().map(|e| e.to_string()));
                    match invalid {
                        Some(problem) if !is_chaos => {
                            Arguments::Unbuildable(format!("the arguments it built do not match the schema: {problem}"))
                        }
                        _ if is_chaos => Arguments::Value(offline::chaos(&arguments, &tool.input_schema, &mut rng)),
                        _ => Arguments::Value(arguments),
                    }
                }
                Err(why) => Arguments::Unbuildable(why),
            };
            state.turns = turn as i32 + 1;
            (ctx.events)(TickEvent::Turn {
                persona: ctx.label.to_string(),
                turn: state.turns as u32,
            });
            state.transcript.push(
                "offline_choice",
                json!({"turn": state.turns, "module": module, "tool": tool.name, "chaos": is_chaos}),
            );
            let answer = self.call_tool(ctx, state, &tool.name, arguments, is_chaos).await?;
            offline::collect_ids(&answer, &mut state.known_ids);
        }
        // Only calls that reached the product count; a module with none is not rated.
        let ratings: Vec<rating::ModuleRating> = state
            .modules
            .iter()
            .filter_map(|(module, stats)| {
                let rating = stats.evidence_rating()?;
                let (calls, errors) = stats.evidence();
                let latency = stats.latency_text();
                Some(rating::ModuleRating {
                    module: module.clone(),
                    rating,
                    note: format!(
                        "offline driver, from evidence: {calls} calls, {errors} failed, {latency}{}",
                        if stats.chaos_sent > 0 {
                            format!(
                                ", plus {} edge cases ({} rejected)",
                                stats.chaos_sent, stats.chaos_errors
                            )
                        } else {
                            String::new()
                        }
                    ),
                })
            })
            .collect();
        if ratings.is_empty() {
            state.rating_status = Some(RatingStatus::Skipped);
            return Ok(());
        }
        self.store_ratings(ctx, state, &ratings).await?;
        state.rating_status = Some(RatingStatus::Valid);
        Ok(())
    }
}
