//! The persona answering the server's own requests during a tick: forms (elicitation)
//! filled in character by the LLM (constrained to the requested schema) or with valid
//! values by the offline driver, URL forms declined, and sampling served by the persona's
//! LLM within the tick's token budget. Each exchange is audited as an action of its kind
//! (never counted as a call to the product) and kept for the transcript.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::spend::Spend;
use super::{audit, offline, prompt};
use crate::llm::LlmClient;
use crate::mcp::{
    Agent, ElicitationAnswer, ElicitationRequest, SamplingRefused, SamplingReply, SamplingRequest, ServerRequest,
};
use crate::model::call::{Call, CallKind, CallResult};
use crate::store::Store;

/// Longest server message or answer kept in the audit.
const KEPT_CHARS: usize = 4000;

/// The budget of the server's own requests in one tick: how many were answered during
/// the call in flight and during the whole tick, and how many of each kind were declined
/// since the last audit of them. Shared by every session of the tick (a re-login opens a
/// new one).
#[derive(Debug)]
pub(super) struct ServerRequests {
    per_call: u32,
    per_tick: u32,
    this_call: AtomicU32,
    this_tick: AtomicU32,
    declined: Mutex<[u32; 3]>,
}

impl ServerRequests {
    pub fn new(per_call: u32, per_tick: u32) -> Self {
        Self {
            per_call,
            per_tick,
            this_call: AtomicU32::new(0),
            this_tick: AtomicU32::new(0),
            declined: Mutex::new([0; 3]),
        }
    }

    /// A new tool call starts: its own count of the server's requests starts at zero.
    pub fn next_call(&self) {
        self.this_call.store(0, Ordering::Relaxed);
    }

    fn admit(&self, kind: ServerRequest) -> bool {
        let call = self.this_call.fetch_add(1, Ordering::Relaxed);
        let tick = self.this_tick.fetch_add(1, Ordering::Relaxed);
        let admitted = call < self.per_call && tick < self.per_tick;
        if !admitted {
            self.declined.lock().expect("declined lock")[kind as usize] += 1;
        }
        admitted
    }

    fn take_declined(&self) -> [u32; 3] {
        std::mem::take(&mut *self.declined.lock().expect("declined lock"))
    }
}

pub(super) struct PersonaAgent {
    pub store: Store,
    pub llm: Option<Arc<LlmClient>>,
    pub tenant_id: Uuid,
    pub tick_id: Uuid,
    pub persona_id: Uuid,
    /// The shared space of the tick; `None`: the persona's own.
    pub space: Option<String>,
    /// The persona's system prompt (the role it answers in).
    pub system_prompt: String,
    pub seq: Arc<AtomicI32>,
    pub spend: Arc<Spend>,
    pub budget: u64,
    pub redact: Vec<String>,
    pub seed: u64,
    /// The module of the call in flight (the server asks while it runs).
    pub module: Mutex<String>,
    /// Transcript entries not yet merged into the tick's.
    pub notes: Mutex<Vec<(&'static str, Value)>>,
    /// An audit row that could not be written: the tick must end.
    pub failure: Mutex<Option<String>>,
    /// The budget of the server's requests in this tick.
    pub requests: Arc<ServerRequests>,
}

impl PersonaAgent {
    pub fn set_module(&self, module: &str) {
        *self.module.lock().expect("agent module lock") = module.to_string();
        self.requests.next_call();
    }

    /// Audits the server's requests declined since the last time, one row per kind that
    /// had any, saying how many.
    pub async fn audit_declined(&self) {
        let declined = self.requests.take_declined();
        let kinds = [
            (ServerRequest::Elicitation, CallKind::Elicitation, "elicitation/create"),
            (ServerRequest::Sampling, CallKind::Sampling, "sampling/createMessage"),
            (ServerRequest::Roots, CallKind::Elicitation, "roots/list"),
        ];
        for (kind, audited_as, method) in kinds {
            let count = declined[kind as usize];
            if count == 0 {
                continue;
            }
            let error = format!(
                "declined {count} more {method} request(s) of the server: over mcp.max_server_requests_per_call \
                 ({}) or mcp.max_server_requests_per_tick ({})",
                self.requests.per_call, self.requests.per_tick
            );
            self.audit(Exchange {
                kind: audited_as,
                method,
                request: json!({"declined": count}),
                answer: Value::Null,
                result: CallResult::Denied,
                error: Some(error),
                started: Instant::now(),
            })
            .await;
        }
    }

    /// Transcript entries since the last call.
    pub fn take_notes(&self) -> Vec<(&'static str, Value)> {
        std::mem::take(&mut *self.notes.lock().expect("agent notes lock"))
    }

    /// Why the tick must end, if an exchange could not be audited.
    pub fn take_failure(&self) -> Option<String> {
        self.failure.lock().expect("agent failure lock").take()
    }

    fn keep(&self, text: &str) -> String {
        audit::redact_truncate(text, &self.redact, KEPT_CHARS)
    }

    /// Writes the exchange; `false` if it could not be (the answer is then withheld).
    async fn audit(&self, exchange: Exchange<'_>) -> bool {
        let module = self.module.lock().expect("agent module lock").clone();
        let arguments = self.keep(&exchange.request.to_string());
        let record = Call {
            id: Call::new_id(),
            space: self.space.clone(),
            tenant_id: self.tenant_id,
            tick_id: self.tick_id,
            persona_id: self.persona_id,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            kind: exchange.kind,
            tool_name: exchange.method.to_string(),
            module: if module.is_empty() { "other".into() } else { module },
            input_hash: crate::model::call::hash_text(exchange.method, &arguments),
            result: exchange.result,
            error_message: exchange.error.map(|e| self.keep(&e)),
            arguments: Some(arguments),
            output: Some(self.keep(&exchange.answer.to_string())),
            chaos: false,
            latency_ms: Some(exchange.started.elapsed().as_millis().min(i32::MAX as u128) as i32),
            // The server's request was answered: the exchange took place.
            sent: true,
            recovered: false,
            refusal: None,
            created_at: crate::time::now(),
        };
        self.notes.lock().expect("agent notes lock").push((
            match exchange.kind {
                CallKind::Sampling => "sampling",
                _ => "elicitation",
            },
            json!({
                "seq": record.seq,
                "request": exchange.request,
                "answer": exchange.answer,
                "result": record.result,
                "error": record.error_message,
            }),
        ));
        match self.store.record_call(record).await {
            Ok(()) => true,
            Err(err) => {
                *self.failure.lock().expect("agent failure lock") =
                    Some(format!("auditing the server's {} failed: {err}", exchange.method));
                false
            }
        }
    }

    fn fits(schema: &Value, content: &Map<String, Value>) -> Result<(), String> {
        let validator = jsonschema::validator_for(schema).map_err(|e| format!("the form's schema is invalid: {e}"))?;
        let value = Value::Object(content.clone());
        let problems: Vec<String> = validator.iter_errors(&value).take(3).map(|e| e.to_string()).collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("the answer does not fit the form: {}", problems.join("; ")))
        }
    }

    /// The offline driver's answer: every default, and valid values for the rest.
    fn offline_answer(&self, schema: &Value) -> Result<Map<String, Value>, String> {
        let mut rng = fastrand::Rng::with_seed(self.seed ^ self.seq.load(Ordering::Relaxed) as u64);
        let generated = offline::generate(schema, &mut rng)?;
        let mut content = generated.as_object().cloned().unwrap_or_default();
        crate::mcp::apply_defaults(&mut content, schema);
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, property) in properties {
                if let Some(default) = property.get("default") {
                    content.insert(name.clone(), default.clone());
                }
            }
        }
        Ok(content)
    }

    async fn llm_answer(&self, llm: &LlmClient, request: &ElicitationRequest) -> Result<ElicitationAnswer, String> {
        if self.spend.total() >= self.budget {
            return Err("the tick's token budget (tick.max_tokens_per_tick) is spent".into());
        }
        let messages = [
            json!({"role": "system", "content": audit::redact_truncate(&self.system_prompt, &self.redact, usize::MAX)}),
            json!({"role": "user", "content": prompt::elicitation_prompt(&request.message, &request.schema)}),
        ];
        let turn = llm
            .chat(&messages, &[], crate::llm::Want::Json(None))
            .await
            .map_err(|e| e.to_string())?;
        self.spend.add(turn.prompt_tokens, turn.completion_tokens);
        let text = turn.content.unwrap_or_default();
        // The answer's object, wherever the model put it (a fence, a sentence around it).
        let value = crate::llm::recover::json_values(&text)
            .into_iter()
            .find(|v| v.get("action").is_some())
            .ok_or_else(|| format!("the answer holds no JSON object with an action: {text}"))?;
        match value.get("action").and_then(Value::as_str) {
            Some("accept") => {
                let mut content = value
                    .get("content")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                crate::mcp::apply_defaults(&mut content, &request.schema);
                Self::fits(&request.schema, &content)?;
                Ok(ElicitationAnswer::Accept(content))
            }
            Some("decline") => Ok(ElicitationAnswer::Decline),
            Some("cancel") => Ok(ElicitationAnswer::Cancel),
            other => Err(format!(
                "the answer's action is {other:?}, not accept, decline or cancel"
            )),
        }
    }

    async fn answer_form(&self, request: ElicitationRequest) -> ElicitationAnswer {
        let started = Instant::now();
        let answer = match &self.llm {
            Some(llm) => self.llm_answer(llm, &request).await,
            None => self.offline_answer(&request.schema).map(ElicitationAnswer::Accept),
        };
        let (answer, result, error) = match answer {
            Ok(answer @ ElicitationAnswer::Accept(_)) => (answer, CallResult::Ok, None),
            Ok(answer) => (answer, CallResult::Denied, None),
            // An answer that cannot be used is not sent: the form is declined.
            Err(problem) => (ElicitationAnswer::Decline, CallResult::Error, Some(problem)),
        };
        let shown = match &answer {
            ElicitationAnswer::Accept(content) => json!({"action": "accept", "content": content}),
            ElicitationAnswer::Decline => json!({"action": "decline"}),
            ElicitationAnswer::Cancel => json!({"action": "cancel"}),
        };
        let audited = self
            .audit(Exchange {
                kind: CallKind::Elicitation,
                method: "elicitation/create",
                request: json!({"message": request.message, "requestedSchema": request.schema}),
                answer: shown,
                result,
                error,
                started,
            })
            .await;
        if audited { answer } else { ElicitationAnswer::Cancel }
    }

    async fn answer_sampling(&self, request: SamplingRequest) -> Result<SamplingReply, SamplingRefused> {
        let started = Instant::now();
        let shown_request = json!({
            "systemPrompt": request.system_prompt,
            "messages": request.messages.iter().map(|m| json!({"role": m.role, "text": m.text})).collect::<Vec<_>>(),
            "maxTokens": request.max_tokens,
        });
        let remaining = self.budget.saturating_sub(self.spend.total());
        let reply = match &self.llm {
            None => Err(SamplingRefused::NoModel),
            Some(_) if remaining == 0 => Err(SamplingRefused::BudgetSpent),
            Some(llm) => {
                let system = request
                    .system_prompt
                    .clone()
                    .unwrap_or_else(|| audit::redact_truncate(&self.system_prompt, &self.redact, usize::MAX));
                let mut messages = vec![json!({"role": "system", "content": system})];
                messages.extend(
                    request
                        .messages
                        .iter()
                        .map(|m| json!({"role": m.role, "content": m.text})),
                );
                let limit = request.max_tokens.min(remaining.min(u32::MAX as u64) as u32);
                match llm.complete(&messages, limit, request.temperature).await {
                    Ok(turn) => {
                        self.spend.add(turn.prompt_tokens, turn.completion_tokens);
                        let stop_reason = if turn.hit_token_limit() { "maxTokens" } else { "endTurn" };
                        Ok(SamplingReply {
                            text: turn.content.unwrap_or_default(),
                            model: llm.model().to_string(),
                            stop_reason: stop_reason.to_string(),
                        })
                    }
                    Err(err) => Err(SamplingRefused::ModelFailed(err.to_string())),
                }
            }
        };
        let (result, answer, error) = match &reply {
            Ok(reply) => (CallResult::Ok, json!({"text": reply.text, "model": reply.model}), None),
            Err(why) => (CallResult::Denied, Value::Null, Some(why.to_string())),
        };
        let audited = self
            .audit(Exchange {
                kind: CallKind::Sampling,
                method: "sampling/createMessage",
                request: shown_request,
                answer,
                result,
                error,
                started,
            })
            .await;
        if !audited {
            return Err(SamplingRefused::NotRecorded);
        }
        reply.map(|mut reply| {
            reply.text = audit::redact_truncate(&reply.text, &self.redact, usize::MAX);
            reply
        })
    }
}

/// One exchange with the server, as audited.
struct Exchange<'a> {
    kind: CallKind,
    method: &'a str,
    request: Value,
    answer: Value,
    result: CallResult,
    error: Option<String>,
    started: Instant,
}

impl Agent for PersonaAgent {
    fn admit(&self, kind: ServerRequest) -> bool {
        self.requests.admit(kind)
    }

    fn elicit(&self, request: ElicitationRequest) -> BoxFuture<'_, ElicitationAnswer> {
        self.answer_form(request).boxed()
    }

    fn decline_url(&self, message: String, url: String) -> BoxFuture<'_, ()> {
        async move {
            let started = Instant::now();
            self.audit(Exchange {
                kind: CallKind::Elicitation,
                method: "elicitation/create",
                request: json!({"mode": "url", "message": message, "url": url}),
                answer: json!({"action": "decline"}),
                result: CallResult::Denied,
                error: Some("a URL form needs a browser, which a persona does not have: declined".into()),
                started,
            })
            .await;
        }
        .boxed()
    }

    fn sample(&self, request: SamplingRequest) -> BoxFuture<'_, Result<SamplingReply, SamplingRefused>> {
        self.answer_sampling(request).boxed()
    }
}
