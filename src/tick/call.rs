//! The path of one requested call, whoever asked for it (the model or the offline
//! driver): budget, policy, arguments, schema, dedup, rate limits, then the call itself.
//!
//! Every call is audited on the way. A call that goes out is written `pending` first
//! (write-ahead) and completed when the answer arrives; one that does not is written with
//! its final result. If a row cannot be written, the tick ends: a call that cannot be
//! recorded must not happen.

use serde_json::{Map, Value, json};

use super::state::{Arguments, TickState};
use super::{CallContext, TickError, TickEvent, TickRunner, audit};
use crate::config::DedupWindow;
use crate::mcp::{CallOutcome, McpError};
use crate::model::call::{
    Call, CallKind, CallResult, Completion, EarlierCall, Refusal, canonical_json, hash_text, input_hash,
};

/// A call someone asked for: the tool, its arguments as they came, and how they came.
pub(super) struct CallRequest {
    pub tool: String,
    pub arguments: Arguments,
    /// Sent as a deliberate edge case (the offline driver's chaos).
    pub chaos: bool,
    /// Written by the model as text rather than as a tool call.
    pub recovered: bool,
    /// The model's id of the call, when it gave one.
    pub call_id: Option<String>,
}

/// A call refused before it was sent: why, how it is audited and what the model is told.
struct Refused {
    reason: Refusal,
    result: CallResult,
    audit: String,
    answer: String,
}

impl Refused {
    fn new(reason: Refusal, result: CallResult, audit: impl Into<String>, answer: impl Into<String>) -> Self {
        Self {
            reason,
            result,
            audit: audit.into(),
            answer: answer.into(),
        }
    }
}

/// Longest arguments text kept in the audit (what replay sends again).
const ARGUMENTS_CHARS: usize = 16_000;

/// The arguments as JSON, or why they are not.
fn parse(arguments: &Arguments) -> Result<Value, Refused> {
    match arguments {
        Arguments::Value(value) => Ok(value.clone()),
        Arguments::Raw(text) if text.trim().is_empty() => Ok(json!({})),
        Arguments::Raw(text) => serde_json::from_str::<Value>(text).map_err(|err| {
            let problem = format!("the arguments are not valid JSON ({err})");
            Refused::new(
                Refusal::NotJson,
                CallResult::Error,
                format!("not sent: {problem}"),
                format!("Error: {problem}. Call the tool again with a JSON object."),
            )
        }),
        Arguments::Unbuildable(why) => Err(Refused::new(
            Refusal::Unbuildable,
            CallResult::NotSent,
            format!("not sent: the offline driver cannot build arguments for this schema ({why})"),
            "Not sent: no valid arguments could be built.",
        )),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl TickRunner {
    /// Executes one requested call and returns what the model is told. `Err` ends the
    /// tick: the audit could not be written, or the MCP session is gone.
    pub(super) async fn call_tool(
        &self,
        ctx: &CallContext<'_>,
        state: &mut TickState,
        request: CallRequest,
    ) -> Result<String, TickError> {
        let CallRequest {
            tool,
            arguments,
            chaos,
            recovered,
            call_id,
        } = request;
        let tool = tool.as_str();
        state.calls_asked += 1;
        let seq = state.next_seq();
        // Offered tools know their module; only an unknown name needs the policy's rule.
        let module = state.offered.iter().find(|t| t.name == tool).map_or_else(
            || self.products.of(ctx.persona).policy.module_of(tool),
            |t| t.module.clone(),
        );
        let parsed = parse(&arguments);
        let hash = match (&parsed, &arguments) {
            (Ok(value), _) => input_hash(tool, value),
            (Err(_), Arguments::Raw(text)) => hash_text(tool, text),
            (Err(_), Arguments::Unbuildable(why)) => hash_text(tool, why),
            (Err(_), Arguments::Value(value)) => input_hash(tool, value),
        };
        let arguments_text = match (&parsed, &arguments) {
            (Ok(value), _) => Some(canonical_json(value)),
            (Err(_), Arguments::Raw(text)) => Some(text.clone()),
            _ => None,
        };
        let record = Call {
            id: Call::new_id(),
            space: ctx.space.map(str::to_string),
            tenant_id: ctx.persona.tenant_id,
            tick_id: ctx.tick_id,
            persona_id: ctx.persona.id,
            seq,
            kind: CallKind::Call,
            tool_name: tool.to_string(),
            module,
            input_hash: hash.clone(),
            result: CallResult::Denied,
            error_message: None,
            arguments: arguments_text.map(|text| audit::redact_truncate(&text, &state.redact, ARGUMENTS_CHARS)),
            output: None,
            chaos,
            latency_ms: None,
            sent: false,
            recovered,
            refusal: None,
            created_at: crate::time::now(),
        };
        state.call_span = Some(super::trace::call(tool, call_id.as_deref(), &record));
        let vetted = parsed.and_then(|value| self.vet(state, tool, value, chaos));
        let (record, answer) = match vetted {
            Err(refusal) => {
                let record = Call {
                    result: refusal.result,
                    refusal: Some(refusal.reason),
                    error_message: Some(audit::redact_truncate(&refusal.audit, &state.redact, 500)),
                    ..record
                };
                (record, refusal.answer)
            }
            Ok(map) => match self.earlier_call(ctx, state, &hash).await {
                Some(earlier) => {
                    let answer = match earlier {
                        EarlierCall::Answered(output) => {
                            format!("(Same call as before, not sent again. Earlier result:)\n{output}")
                        }
                        EarlierCall::MayHaveRun => "(Same call as an earlier one whose answer was lost; it may have \
                                                    run. Not sent again.)"
                            .to_string(),
                    };
                    let record = Call {
                        result: CallResult::Deduped,
                        ..record
                    };
                    (record, answer)
                }
                None => return self.send(ctx, state, tool, map, record).await,
            },
        };
        self.record_after_unsaved(state, record.clone()).await?;
        self.account(ctx, state, &record, &answer, false);
        Ok(answer)
    }

    /// Budget, policy, arguments and schema: the map to send, or why not.
    fn vet(&self, state: &mut TickState, tool: &str, value: Value, chaos: bool) -> Result<Map<String, Value>, Refused> {
        if state.calls_made >= self.config.tick.max_tool_calls {
            return Err(Refused::new(
                Refusal::Budget,
                CallResult::Denied,
                "not sent: the tick's tool-call budget (tick.max_tool_calls) is used up",
                "Error: you have used up your actions for now; this call was not executed.",
            ));
        }
        if !state.offered.iter().any(|t| t.name == tool) {
            let withheld = state.withheld.get(tool);
            let refusal = if withheld.is_some() {
                Refusal::Withheld
            } else {
                Refusal::UnknownTool
            };
            let reason = withheld.map_or("no such tool", String::as_str);
            return Err(Refused::new(
                refusal,
                CallResult::Denied,
                format!("not sent: {reason}"),
                format!("Error: the tool `{tool}` is not available to you ({reason})."),
            ));
        }
        state.calls_made += 1;
        let map = match value {
            Value::Object(map) => map,
            other => {
                return Err(Refused::new(
                    Refusal::NotObject,
                    CallResult::Error,
                    format!("not sent: the arguments must be a JSON object, got {}", kind(&other)),
                    "Error: the arguments must be a JSON object.",
                ));
            }
        };
        if !chaos && let Some(validator) = state.validators.get(tool) {
            let value = Value::Object(map);
            let problems: Vec<String> = validator
                .iter_errors(&value)
                .take(5)
                .map(|e| {
                    let path = e.instance_path().to_string();
                    if path.is_empty() {
                        e.to_string()
                    } else {
                        format!("{path}: {e}")
                    }
                })
                .collect();
            if !problems.is_empty() {
                let problem = format!("the arguments do not match the tool's schema: {}", problems.join("; "));
                return Err(Refused::new(
                    Refusal::Schema,
                    CallResult::Error,
                    format!("not sent: {problem}"),
                    format!("Error: {problem}. Fix the arguments and call the tool again."),
                ));
            }
            let Value::Object(map) = value else {
                unreachable!("built as an object")
            };
            return Ok(map);
        }
        Ok(map)
    }

    /// An identical call within the dedup window: this tick's answers, or the store's.
    async fn earlier_call(&self, ctx: &CallContext<'_>, state: &TickState, hash: &str) -> Option<EarlierCall> {
        if let Some(output) = state.seen.get(hash) {
            return Some(EarlierCall::Answered(output.clone()));
        }
        // A check trial is a fresh attempt: it never counts as a repeat of an earlier tick.
        let DedupWindow::Last(window) = self.config.tick.dedup_window else {
            return None;
        };
        if ctx.goal.is_some() {
            return None;
        }
        let since = crate::time::before(crate::time::now(), window.0);
        self.store
            .earlier_call(ctx.persona.id, hash, since, ctx.space)
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(%err, "dedup lookup failed; sending the call");
                None
            })
    }

    /// Sends a vetted call: the write-ahead row, the call (one fresh login and one retry
    /// after a 401, which proves it did not run), then the completed row.
    async fn send(
        &self,
        ctx: &CallContext<'_>,
        state: &mut TickState,
        tool: &str,
        arguments: Map<String, Value>,
        record: Call,
    ) -> Result<String, TickError> {
        // A rate limit that makes the call wait: the last call's result is committed first.
        if let Some(limit) = &self.tool_limit
            && limit.check().is_err()
        {
            self.save_completion(state).await?;
            limit.until_ready().await;
        }
        if let Some(limit) = &self.tool_limit_per_persona
            && limit.check_key(&ctx.persona.id).is_err()
        {
            self.save_completion(state).await?;
            limit.until_key_ready(&ctx.persona.id).await;
        }
        let pending = Call {
            result: CallResult::Pending,
            sent: true,
            created_at: crate::time::now(),
            ..record
        };
        if let Some(agent) = &state.agent {
            agent.set_module(&pending.module);
        }
        // The row goes to the writer; the tick keeps a copy to account for the call.
        self.record_after_unsaved(state, pending.clone()).await?;
        let span = state.call_span.as_ref().map(|span| span.context()).unwrap_or_default();
        let outcome = crate::telemetry::scope(span, self.call_with_relogin(ctx, state, tool, arguments)).await;
        if let (Err(err), Some(span)) = (&outcome, &state.call_span) {
            span.fail(err.kind(), "the call failed");
        }
        if let (Some(span), Some(session)) = (&state.call_span, &state.session)
            && span.recording()
        {
            span.set_all(session.span_attributes());
        }
        if let Some(agent) = state.agent.clone() {
            agent.audit_declined().await;
        }
        let (completion, answer, fatal, reached) =
            settle(outcome, state, &pending.input_hash, self.config.tick.max_output_chars);
        let (result, error_message, output, latency_ms) = completion;
        // Committed with the tick's next row, or alone before the tick next waits. The
        // output and error move there: accounting reads neither.
        state.unsaved = Some(Completion {
            tick_id: pending.tick_id,
            seq: pending.seq,
            result,
            error_message,
            output,
            latency_ms,
        });
        let record = Call {
            result,
            latency_ms,
            ..pending
        };
        self.account(ctx, state, &record, &answer, reached);
        if let Some(failure) = state.agent.as_ref().and_then(|agent| agent.take_failure()) {
            return Err(crate::store::StoreError::NotCommitted(failure).into());
        }
        match fatal {
            Some(err) => Err(err.into()),
            None => Ok(answer),
        }
    }

    /// The call, and after a 401 (which proves it did not run) one fresh login and one
    /// retry.
    async fn call_with_relogin(
        &self,
        ctx: &CallContext<'_>,
        state: &mut TickState,
        tool: &str,
        arguments: Map<String, Value>,
    ) -> Result<(CallOutcome, std::time::Duration), McpError> {
        let outcome = self.call_session(state, tool, arguments.clone()).await;
        if !matches!(outcome, Err(McpError::Unauthorized { .. })) || state.reauthenticated {
            return outcome;
        }
        state.reauthenticated = true;
        let email = ctx.persona.email.as_deref().unwrap_or_default();
        self.products.of(ctx.persona).auth.invalidate(email);
        if let Some(old) = state.session.take() {
            old.close().await;
        }
        match self.connect(ctx, state).await {
            Ok(()) => self.call_session(state, tool, arguments).await,
            Err(err) => {
                let err = audit::redact_truncate(&err.to_string(), &state.redact, 500);
                tracing::warn!(%err, "reconnecting after a 401 failed");
                outcome
            }
        }
    }

    /// Writes `record` and, in the same commit, the last call's completion if it is still
    /// unsaved (a call's result usually rides with the next call's write-ahead row).
    pub(super) async fn record_after_unsaved(&self, state: &mut TickState, record: Call) -> Result<(), TickError> {
        match state.unsaved.take() {
            None => self.store.record_call(record).await?,
            Some(done) => {
                if !self.store.complete_then_record(done, record).await? {
                    return Err(lease_lost());
                }
            }
        }
        Ok(())
    }

    /// Commits the last call's completion if it is still unsaved: before the tick waits
    /// for anything (the model, a rate limit, its ratings, its end), so a crash while it
    /// waits loses no answered call.
    pub(super) async fn save_completion(&self, state: &mut TickState) -> Result<(), TickError> {
        if let Some(done) = state.unsaved.take()
            && !self.store.complete_call(done).await?
        {
            return Err(lease_lost());
        }
        Ok(())
    }

    async fn call_session(
        &self,
        state: &TickState,
        tool: &str,
        arguments: Map<String, Value>,
    ) -> Result<(CallOutcome, std::time::Duration), McpError> {
        let arguments = self.with_space_argument(state.space_id.as_deref(), arguments);
        match &state.session {
            Some(session) => session.call(tool, arguments).await,
            None => Err(McpError::NoSession),
        }
    }

    /// Counts an audited call in the tick's evidence and summary, tells the listener, and
    /// adds it to the transcript (the answer as the model saw it; `record`'s output and
    /// error are not read).
    fn account(&self, ctx: &CallContext<'_>, state: &mut TickState, record: &Call, answer: &str, reached: bool) {
        // What the server asked the persona while the call ran comes first.
        state.merge_agent_notes();
        if let Some(span) = state.call_span.take() {
            super::trace::end_call(span, record, answer, state);
        }
        if !matches!(record.result, CallResult::Denied | CallResult::NotSent) {
            let stats = state.modules.entry(record.module.clone()).or_default();
            stats.attempts += 1;
            if reached {
                let failed = record.result != CallResult::Ok;
                stats.sent += 1;
                stats.sent_errors += u32::from(failed);
                if record.chaos {
                    stats.chaos_sent += 1;
                    stats.chaos_errors += u32::from(failed);
                }
            }
            if let Some(ms) = record.latency_ms {
                stats.latency_total_ms += ms.max(0) as u64;
                stats.latency_count += 1;
            }
        }
        state.transcript.push(
            "call",
            json!({
                "seq": record.seq,
                "tool": record.tool_name,
                "module": record.module,
                "arguments": record.arguments,
                "result": record.result,
                "chaos": record.chaos,
                "recovered": record.recovered,
                "refusal": record.refusal,
                "latency_ms": record.latency_ms,
                "answer": answer,
            }),
        );
        // Metric labels come from what the gateway listed: a name a model invents is `other`.
        let listed =
            state.offered.iter().any(|t| t.module == record.module) || state.withheld.contains_key(&record.tool_name);
        (ctx.events)(TickEvent::Tool {
            persona: ctx.label.to_string(),
            tool: record.tool_name.clone(),
            module: if listed { record.module.clone() } else { "other".into() },
            result: record.result,
            latency_ms: record.latency_ms,
            chaos: record.chaos,
        });
    }
}

/// What a sent call came to: its completion (result, error, output, latency), what the
/// model is told, the error that ends the tick (a session gone), and whether the call
/// reached the product (answered, timed out, or lost in flight).
pub(super) type Settled = (
    (CallResult, Option<String>, Option<String>, Option<i32>),
    String,
    Option<McpError>,
    bool,
);

pub(super) fn settle(
    outcome: Result<(CallOutcome, std::time::Duration), McpError>,
    state: &mut TickState,
    input_hash: &str,
    max_output: usize,
) -> Settled {
    let latency_of = |elapsed: std::time::Duration| Some(elapsed.as_millis().min(i32::MAX as u128) as i32);
    // Whether the call reached the product (answered, timed out, or lost in flight).
    let mut reached = true;
    let (completion, answer, fatal) = match outcome {
        Ok((CallOutcome::Ok { text }, elapsed)) => {
            let text = audit::redact_truncate(&text, &state.redact, max_output);
            state.seen.insert(input_hash.to_string(), text.clone());
            (
                (CallResult::Ok, None, Some(text.clone()), latency_of(elapsed)),
                text,
                None,
            )
        }
        Ok((CallOutcome::Denied { text }, elapsed)) => (
            (
                CallResult::Denied,
                Some(audit::redact_truncate(&text, &state.redact, 500)),
                None,
                latency_of(elapsed),
            ),
            format!(
                "The app refused this: {}",
                audit::redact_truncate(&text, &state.redact, max_output)
            ),
            None,
        ),
        Ok((CallOutcome::Error { text }, elapsed)) => (
            (
                CallResult::Error,
                Some(audit::redact_truncate(&text, &state.redact, 500)),
                None,
                latency_of(elapsed),
            ),
            format!(
                "Error from the app: {}",
                audit::redact_truncate(&text, &state.redact, max_output)
            ),
            None,
        ),
        Err(err) => {
            let message = audit::redact_truncate(&err.to_string(), &state.redact, 500);
            // A session that is gone ends the tick; whether the call ran is unknown.
            reached = err.reached_product();
            let (result, fatal) = if err.ends_session() {
                (CallResult::Unknown, Some(err))
            } else {
                (CallResult::Error, None)
            };
            (
                (result, Some(message.clone()), None, None),
                format!("Error: the call failed ({message})."),
                fatal,
            )
        }
    };
    (completion, answer, fatal, reached)
}

/// A completion that found its call no longer pending: another runner declared the tick
/// dead (its lease had expired) and turned its calls `unknown`.
fn lease_lost() -> TickError {
    TickError::LeaseLost("its calls were declared unknown by another runner (the lease had expired)".into())
}
