//! The mutable state of one running tick. It lives outside the timed future, so what a
//! tick did is still known when a timeout, a shutdown, a lost lease or a panic ends it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use serde_json::Value;

use super::spend::Spend;
use super::transcript::TranscriptLog;
use crate::auth::Credentials;
use crate::mcp::{McpSession, ToolInfo};
use crate::model::call::Completion;
use crate::model::tick::RatingStatus;

/// Per-module evidence of one tick.
#[derive(Clone, Debug, Default)]
pub(super) struct ModuleStats {
    /// Calls the persona made to this module (sent, deduped, or refused locally).
    pub attempts: u32,
    /// Calls that reached the product, and how many of them failed.
    pub sent: u32,
    pub sent_errors: u32,
    /// Of those, calls sent as deliberate edge cases (offline chaos).
    pub chaos_sent: u32,
    pub chaos_errors: u32,
    pub latency_total_ms: u64,
    pub latency_count: u32,
}

impl ModuleStats {
    /// "mean 120 ms", or "no timing" when no call was timed (prompt and notes).
    pub fn latency_text(&self) -> String {
        self.mean_latency()
            .map_or("no timing".into(), |ms| format!("mean {ms:.0} ms"))
    }

    pub fn mean_latency(&self) -> Option<f64> {
        (self.latency_count > 0).then(|| self.latency_total_ms as f64 / f64::from(self.latency_count))
    }

    /// Ordinary calls that reached the product and their failures: the evidence a rating
    /// rests on (rejecting a deliberate edge case is correct behaviour, not a failure).
    pub fn evidence(&self) -> (u32, u32) {
        (
            self.sent - self.chaos_sent,
            self.sent_errors.saturating_sub(self.chaos_errors),
        )
    }

    /// The rating the evidence alone gives, when there is evidence.
    pub fn evidence_rating(&self) -> Option<i32> {
        let (calls, errors) = self.evidence();
        super::offline::rating_from_evidence(calls, errors, self.mean_latency())
    }
}

/// The arguments of a call as they arrived.
pub(super) enum Arguments {
    /// Text from the model, normally JSON.
    Raw(String),
    /// Built by the offline driver.
    Value(Value),
    /// The offline driver could not build valid arguments; why.
    Unbuildable(String),
}

pub(super) struct TickState {
    pub session: Option<McpSession>,
    /// Answers the server's own requests during this tick's session.
    pub agent: Option<Arc<super::agent::PersonaAgent>>,
    /// The budget of the server's requests, for every session of the tick.
    pub server_requests: Option<Arc<super::agent::ServerRequests>>,
    /// Secrets to redact from any text we store or show: every credential of the tick.
    pub redact: Vec<String>,
    pub offered: Vec<ToolInfo>,
    pub withheld: HashMap<String, String>,
    pub validators: HashMap<String, Arc<jsonschema::Validator>>,
    /// Shared with the session's handler, which audits the server's own requests.
    pub seq: Arc<AtomicI32>,
    pub calls_made: u32,
    /// Calls the persona asked for, whatever became of them: none at all makes the tick
    /// `idle`.
    pub calls_asked: u32,
    /// Rating answers the model gave.
    pub rating_attempts: i32,
    /// Outputs of this tick's successful calls by input hash (dedup within the tick).
    pub seen: HashMap<String, String>,
    pub modules: BTreeMap<String, ModuleStats>,
    pub turns: i32,
    /// Tokens spent by the tick, shared with the agent answering the server's requests.
    pub spend: Arc<Spend>,
    pub reauthenticated: bool,
    pub rating_status: Option<RatingStatus>,
    pub rating_raw: Option<String>,
    pub ratings: Vec<super::rating::ModuleRating>,
    /// Ids seen in this tick's tool outputs, for the offline driver's `*_id` arguments.
    pub known_ids: Vec<i64>,
    pub transcript: TranscriptLog,
    /// The MCP protocol version the gateway agreed to.
    pub protocol_version: Option<String>,
    /// The last call's completion, not committed yet: it rides with the tick's next row,
    /// or is committed alone before the tick waits for anything (see `TickRunner::send`).
    pub unsaved: Option<Completion>,
    /// A check tick's reads of the product's state after play, in the goal's order.
    pub state_answers: Vec<crate::model::goal::StateAnswer>,
    /// The tick's trace, when traces are exported.
    pub trace_id: Option<String>,
    /// The span of the call in progress, ended when the call is accounted for.
    pub call_span: Option<crate::telemetry::Span>,
    /// The id of the tick's shared space in the product (from the persona's organization
    /// list), sent as `spaces.header` or `spaces.argument`.
    pub space_id: Option<String>,
}

impl TickState {
    pub fn new(transcript_chars: usize) -> Self {
        Self {
            session: None,
            space_id: None,
            agent: None,
            server_requests: None,
            redact: Vec::new(),
            offered: Vec::new(),
            withheld: HashMap::new(),
            validators: HashMap::new(),
            seq: Arc::new(AtomicI32::new(0)),
            unsaved: None,
            state_answers: Vec::new(),
            calls_made: 0,
            calls_asked: 0,
            rating_attempts: 0,
            seen: HashMap::new(),
            modules: BTreeMap::new(),
            turns: 0,
            spend: Arc::new(Spend::default()),
            reauthenticated: false,
            rating_status: None,
            rating_raw: None,
            ratings: Vec::new(),
            known_ids: Vec::new(),
            transcript: TranscriptLog::new(transcript_chars),
            protocol_version: None,
            trace_id: None,
            call_span: None,
        }
    }

    /// Adds a model turn's tokens to the tick's spend; absurd counts the client clamped
    /// are said in the transcript and the log.
    pub fn spend_turn(&mut self, turn: &crate::llm::ChatTurn) {
        self.spend.add(turn.prompt_tokens, turn.completion_tokens);
        if turn.usage_clamped {
            tracing::warn!(
                tokens_in = turn.prompt_tokens,
                tokens_out = turn.completion_tokens,
                "the LLM endpoint's usage figures were absurd; clamped"
            );
            self.transcript.push(
                "usage_clamped",
                serde_json::json!({"tokens_in": turn.prompt_tokens, "tokens_out": turn.completion_tokens}),
            );
        }
    }

    /// The next audit sequence number of the tick.
    pub fn next_seq(&self) -> i32 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Moves the agent's transcript entries (elicitation, sampling) into the tick's.
    pub fn merge_agent_notes(&mut self) {
        if let Some(agent) = &self.agent {
            for (step, entry) in agent.take_notes() {
                self.transcript.push(step, entry);
            }
        }
    }

    /// Whether any row was audited.
    pub fn audited_any(&self) -> bool {
        self.seq.load(Ordering::Relaxed) > 0
    }

    /// Adds the secrets of `credentials` to what is redacted for the rest of the tick (a
    /// token replaced by a fresh login is still kept out).
    pub fn remember(&mut self, credentials: &Credentials) {
        for secret in credentials.secrets() {
            crate::redact::register(secret);
            if !self.redact.iter().any(|known| known == secret) {
                self.redact.push(secret.to_string());
            }
        }
    }

    /// Modules the persona really used: at least one call that it made (sent, deduped or
    /// refused locally).
    pub fn used_modules(&self) -> Vec<String> {
        self.modules
            .iter()
            .filter(|(_, s)| s.attempts > 0)
            .map(|(m, _)| m.clone())
            .collect()
    }
}
