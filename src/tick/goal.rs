//! A check tick's own reads of the product's state: after the persona played, the runner
//! calls each state check's tool itself (a tool the product lists, never a destructive
//! one), audits the read as a `check` row (never the persona's), and keeps the answer for
//! the verdict.

use serde_json::Value;

use super::state::TickState;
use super::{CallContext, TickError, TickRunner, audit};
use crate::model::call::{Call, CallKind, CallResult, Completion, canonical_json, input_hash};
use crate::model::goal::{StateAnswer, StateRead};

/// The most of a state read's answer kept for the verdict (and in its audit row).
const STATE_CHARS: usize = 64 * 1024;

impl TickRunner {
    /// Reads the product's state for every state check of the tick's goal.
    pub(super) async fn read_state(&self, ctx: &CallContext<'_>, state: &mut TickState) -> Result<(), TickError> {
        let Some(goal) = ctx.goal else {
            return Ok(());
        };
        for read in crate::model::goal::state_reads(goal) {
            let answer = self.read_one(ctx, state, read).await?;
            state.transcript.push(
                "state",
                serde_json::json!({"tool": answer.tool, "error": answer.error,
                    "text": answer.text.as_deref().map(|t| audit::redact_truncate(t, &state.redact, 2000))}),
            );
            state.state_answers.push(answer);
        }
        Ok(())
    }

    async fn read_one(
        &self,
        ctx: &CallContext<'_>,
        state: &mut TickState,
        read: &StateRead,
    ) -> Result<StateAnswer, TickError> {
        let refused = |error: String| StateAnswer {
            tool: read.tool.clone(),
            text: None,
            error: Some(error),
        };
        let Some(session) = state.session.as_ref() else {
            return Ok(refused("no session to read the state with".into()));
        };
        let Some(tool) = session.tools().iter().find(|t| t.name == read.tool).cloned() else {
            return Ok(refused(format!("the product lists no tool `{}`", read.tool)));
        };
        if tool.destructive {
            return Ok(refused(format!(
                "`{}` is destructive (destructiveHint): a state check reads with read-only tools only",
                read.tool
            )));
        }
        let arguments = match &read.arguments {
            Value::Object(map) => map.clone(),
            _ => return Ok(refused("the state check's `arguments` must be an object".into())),
        };
        let value = Value::Object(arguments.clone());
        let pending = Call {
            id: Call::new_id(),
            space: ctx.space.map(str::to_string),
            tenant_id: ctx.persona.tenant_id,
            tick_id: ctx.tick_id,
            persona_id: ctx.persona.id,
            seq: state.next_seq(),
            kind: CallKind::Check,
            tool_name: tool.name.clone(),
            module: tool.module.clone(),
            input_hash: input_hash(&tool.name, &value),
            result: CallResult::Pending,
            error_message: None,
            arguments: Some(audit::redact_truncate(&canonical_json(&value), &state.redact, 4000)),
            output: None,
            chaos: false,
            latency_ms: None,
            sent: true,
            recovered: false,
            refusal: None,
            created_at: crate::time::now(),
        };
        self.record_after_unsaved(state, pending.clone()).await?;
        let outcome = match state.session.as_ref() {
            Some(session) => session.call(&tool.name, arguments).await,
            None => unreachable!("checked above"),
        };
        let (completion, answer, fatal, _) = super::call::settle(outcome, state, &pending.input_hash, STATE_CHARS);
        let (result, error_message, output, latency_ms) = completion;
        state.unsaved = Some(Completion {
            tick_id: pending.tick_id,
            seq: pending.seq,
            result,
            error_message: error_message.clone(),
            output: output.clone(),
            latency_ms,
        });
        if let Some(err) = fatal {
            return Err(err.into());
        }
        Ok(match result {
            CallResult::Ok => StateAnswer {
                tool: tool.name,
                text: output,
                error: None,
            },
            _ => StateAnswer {
                tool: tool.name,
                text: None,
                error: Some(error_message.unwrap_or(answer)),
            },
        })
    }
}
