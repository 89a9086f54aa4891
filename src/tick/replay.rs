//! Replay: the recorded calls of a tick sent again, in order, with the persona's login,
//! and what changed (no LLM, no cost). A product fix is checked against the very calls
//! that found the problem.
//!
//! Sent again: calls that reached the product (`ok`, `error`). Skipped and listed: calls
//! the tick never sent (deduped, denied, not sent), calls whose first outcome is unknown,
//! and calls not safe to repeat now (destructive, or refused by today's tool policy).
//! Outputs are compared after masking what differs by nature (ids, times, dates).
//! When the session ends during a call (the product died on it, or dropped the login),
//! that call is `changed` with the cause and the calls after it are skipped, not sent.

use std::sync::LazyLock;

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{TickError, TickRunner, audit};
use crate::mcp::{CallOutcome, Capabilities, Connect, McpSession};
use crate::model::call::{Call, CallKind, CallResult};

/// What replaying one recorded call found.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict", content = "detail")]
pub enum Verdict {
    Same,
    /// What changed, in words.
    Changed(String),
    /// Why it was not sent.
    Skipped(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct ReplayedCall {
    pub seq: i32,
    pub tool: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The replay of one tick.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    pub tick_id: Uuid,
    pub persona: String,
    /// The shared space the tick worked in, and its replay too; `None`: the persona's own.
    pub space: Option<String>,
    pub calls: Vec<ReplayedCall>,
}

impl ReplayReport {
    pub fn changed(&self) -> usize {
        self.calls
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::Changed(_)))
            .count()
    }
}

/// Masks what differs between two runs by nature: UUIDs, timestamps, dates, numeric ids.
pub fn normalize(text: &str) -> String {
    static MASKS: LazyLock<Vec<(regex::Regex, &'static str)>> =
        LazyLock::new(|| {
            [
            (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "<id>"),
            (
                r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?",
                "<time>",
            ),
            (r"[0-9]{4}-[0-9]{2}-[0-9]{2}", "<date>"),
            (r#"("(?:[A-Za-z]+_)?id"\s*:\s*)[0-9]+"#, "${1}<n>"),
        ]
        .into_iter()
        .map(|(pattern, mask)| (regex::Regex::new(pattern).expect("a valid mask pattern"), mask))
        .collect()
        });
    MASKS.iter().fold(text.to_string(), |text, (pattern, mask)| {
        pattern.replace_all(&text, *mask).into_owned()
    })
}

impl TickRunner {
    /// Sends the recorded calls of `tick_id` again and compares the answers.
    pub async fn replay(&self, tick_id: Uuid) -> Result<ReplayReport, TickError> {
        let tick = self
            .store
            .get_tick(tick_id)
            .await?
            .ok_or_else(|| TickError::Replay(format!("no tick {tick_id}")))?;
        let persona = self
            .store
            .get_persona(tick.tenant_id, tick.persona_id)
            .await?
            .ok_or_else(|| TickError::Replay(format!("the persona of tick {tick_id} no longer exists")))?;
        let email = persona
            .email
            .clone()
            .ok_or_else(|| TickError::NotRunnable(persona.name.clone()))?;
        let recorded = self.store.tick_calls(tick_id).await?;
        let product = self.products.of(&persona);
        let credentials = product.auth.credentials(&email).await?;
        // A tick of a shared space is replayed in that space.
        let shared = self
            .space_settings(tick.space.as_deref(), &persona.label(), product, &credentials)
            .await?;
        let space_id = shared.as_ref().map(|(id, _)| id.as_str());
        let session = McpSession::connect(Connect {
            config: shared.as_ref().map_or(&product.mcp, |(_, mcp)| mcp),
            policy: &product.policy,
            credentials: &credentials,
            persona: &email,
            oauth: product.oauth.clone(),
            agent: None,
            capabilities: Capabilities::default(),
        })
        .await?;
        let mut secrets = self.process_secrets.clone();
        secrets.extend(credentials.secrets().map(str::to_string));
        secrets.extend(session.secrets());
        let mut calls = Vec::new();
        // Set once the session is gone (the gateway died, or dropped the login): the
        // calls after it are listed, not sent into a dead session.
        let mut ended_at: Option<i32> = None;
        for call in recorded.iter().filter(|c| c.kind == CallKind::Call) {
            let verdict = match ended_at {
                Some(seq) => Verdict::Skipped(format!("not sent: the session ended at call #{seq}")),
                None => match self.replay_call(product, &session, call, &secrets, space_id).await {
                    Ok(verdict) => verdict,
                    Err(verdict) => {
                        ended_at = Some(call.seq);
                        verdict
                    }
                },
            };
            calls.push(ReplayedCall {
                seq: call.seq,
                tool: call.tool_name.clone(),
                verdict,
            });
        }
        session.close().await;
        Ok(ReplayReport {
            tick_id,
            persona: email,
            space: tick.space.clone(),
            calls,
        })
    }

    /// The verdict on one recorded call; `Err` carries the verdict on a call during which
    /// the session ended (the product, or its connection, died on it).
    async fn replay_call(
        &self,
        product: &super::product::Product,
        session: &McpSession,
        call: &Call,
        secrets: &[String],
        space_id: Option<&str>,
    ) -> Result<Verdict, Verdict> {
        match call.result {
            CallResult::Ok | CallResult::Error => {}
            CallResult::Unknown | CallResult::Pending => {
                return Ok(Verdict::Skipped(
                    "its first outcome is unknown: nothing to compare with".into(),
                ));
            }
            _ => return Ok(Verdict::Skipped(format!("the tick did not send it ({})", call.result))),
        }
        if !call.sent {
            let refusal = call.error_message.as_deref().unwrap_or("refused before sending");
            return Ok(Verdict::Skipped(format!("the tick did not send it ({refusal})")));
        }
        let Some(tool) = session.tools().iter().find(|t| t.name == call.tool_name) else {
            return Ok(Verdict::Changed("the gateway no longer lists this tool".into()));
        };
        if let Err(reason) = product.policy.check(tool) {
            return Ok(Verdict::Skipped(format!("not safe to repeat: {reason}")));
        }
        let arguments = match call.arguments.as_deref().map(serde_json::from_str::<Value>) {
            Some(Ok(Value::Object(arguments))) => arguments,
            None => Default::default(),
            _ => return Ok(Verdict::Skipped("its recorded arguments are not a JSON object".into())),
        };
        let max_output = self.config.tick.max_output_chars;
        let arguments = self.with_space_argument(space_id, arguments);
        let (now_ok, now_text) = match session.call(&call.tool_name, arguments).await {
            Ok((CallOutcome::Ok { text }, _)) => (true, audit::redact_truncate(&text, secrets, max_output)),
            Ok((CallOutcome::Error { text } | CallOutcome::Denied { text }, _)) => {
                (false, audit::redact_truncate(&text, secrets, 500))
            }
            Err(err) if err.ends_session() => {
                let cause = audit::redact_truncate(&err.to_string(), secrets, 500);
                return Err(Verdict::Changed(format!(
                    "was {}, now the session ended: {cause}",
                    call.result
                )));
            }
            Err(err) => (false, audit::redact_truncate(&err.to_string(), secrets, 500)),
        };
        let was_ok = call.result == CallResult::Ok;
        let before = if was_ok {
            call.output.clone()
        } else {
            call.error_message.clone()
        }
        .unwrap_or_default();
        Ok(match (was_ok, now_ok) {
            (true, false) => Verdict::Changed(format!("was ok, now an error: {now_text}")),
            (false, true) => Verdict::Changed(format!("was an error ({before}), now ok")),
            _ if normalize(&before) == normalize(&now_text) => Verdict::Same,
            (true, true) => Verdict::Changed(format!("the output differs: was {before:?}, now {now_text:?}")),
            (false, false) => Verdict::Changed(format!("the error differs: was {before:?}, now {now_text:?}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_times_are_masked_the_rest_is_kept() {
        let a = r#"{"id": 17, "todo_id": "0196b3f4-6c1e-7a52-9d3b-1f0e2a4c5d6e", "at": "2026-11-30T08:00:00.123Z", "due": "2026-12-01", "title": "Abgabe"}"#;
        let b = r#"{"id": 18, "todo_id": "1196b3f4-6c1e-7a52-9d3b-1f0e2a4c5d6f", "at": "2026-12-01T09:30:00Z", "due": "2026-12-02", "title": "Abgabe"}"#;
        assert_eq!(normalize(a), normalize(b));
        assert_ne!(normalize(a), normalize(&b.replace("Abgabe", "Klausur")));
        assert_ne!(
            normalize(r#"{"count": 17}"#),
            normalize(r#"{"count": 18}"#),
            "only ids are masked"
        );
    }
}
