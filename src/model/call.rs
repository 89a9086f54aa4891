//! A call as data: one audited row of a tick (a tool call of the persona, or a request of
//! the server that the persona answered), how it ended, whether it reached the product,
//! and the input hash that dedup compares (DESIGN.md §3).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

text_enum! {
    /// The outcome of one audited call.
    ///
    /// `pending` is written before the call is sent and completed when the answer
    /// arrives; a tick that dies in between leaves `unknown` (the call may have run).
    /// `not_sent`: the runner could not build the call (never sent, never held against
    /// the product).
    pub enum CallResult {
        Pending => "pending",
        Ok => "ok",
        Error => "error",
        Deduped => "deduped",
        Denied => "denied",
        Unknown => "unknown",
        NotSent => "not_sent",
    }
}

text_enum! {
    /// What an audited row is: a tool call of the persona, a request of the server that
    /// the persona answered, or the runner's own read of the product's state after a
    /// check tick (`check`, never the persona's).
    pub enum CallKind { Call => "call", Elicitation => "elicitation", Sampling => "sampling", Check => "check" }
}

text_enum! {
    /// Why a call was refused before it was sent: the tick's budget, the tool policy, a
    /// tool the product does not list, arguments that are not JSON, not an object or not
    /// what the tool's schema asks, or arguments the offline driver could not build.
    pub enum Refusal {
        Budget => "budget",
        Withheld => "withheld",
        UnknownTool => "unknown_tool",
        NotJson => "not_json",
        NotObject => "not_object",
        Schema => "schema",
        Unbuildable => "unbuildable",
    }
}

/// One audited call: what was asked, how it ended, and whether it went to the product.
/// The same record is written (first `pending`, or final when it was never sent) and
/// read back (the story so far, the tick page, replay, the admin listing).
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub tick_id: Uuid,
    pub persona_id: Uuid,
    pub seq: i32,
    pub kind: CallKind,
    pub tool_name: String,
    pub module: String,
    pub input_hash: String,
    pub result: CallResult,
    pub error_message: Option<String>,
    /// Canonical JSON of the arguments (redacted and capped).
    pub arguments: Option<String>,
    pub output: Option<String>,
    pub chaos: bool,
    pub latency_ms: Option<i32>,
    /// Whether the call went (or may have gone) to the product. A call refused before
    /// sending (budget, policy, bad arguments, dedup) was not, whatever its result.
    pub sent: bool,
    /// The model wrote this call as text (JSON in its message) rather than as a tool call.
    pub recovered: bool,
    /// Why it was refused before sending, when it was.
    pub refusal: Option<Refusal>,
    /// The shared space it acted in; `None`: the persona's own.
    pub space: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Call {
    /// A new call's id: time-ordered (UUID v7), so a batch of inserts lands on the
    /// rightmost pages of the id index instead of one random page per row.
    pub fn new_id() -> Uuid {
        Uuid::now_v7()
    }

    /// Whether the persona made this call (a tool call, not a server's request) and it is
    /// one of its actions: a call the runner could not build is not.
    pub fn is_persona_action(&self) -> bool {
        self.kind == CallKind::Call && self.result != CallResult::NotSent
    }
}

/// How a `pending` call ended.
#[derive(Clone, Debug)]
pub struct Completion {
    pub tick_id: Uuid,
    pub seq: i32,
    pub result: CallResult,
    pub error_message: Option<String>,
    pub output: Option<String>,
    pub latency_ms: Option<i32>,
}

/// An earlier identical call, for deduplication.
#[derive(Clone, Debug, PartialEq)]
pub enum EarlierCall {
    /// It ran and answered this.
    Answered(String),
    /// It was sent but its answer was never recorded (its tick died): it may have run.
    MayHaveRun,
}

/// JSON with object keys sorted (recursively) and no insignificant whitespace, whatever
/// order the model produced. serde_json's map is ordered by key (the `preserve_order`
/// feature is off; a test below fails if anything turns it on), so its compact output is
/// already canonical: one pass, no intermediate strings.
pub fn canonical_json(value: &Value) -> String {
    value.to_string()
}

/// Hex SHA-256 over the tool name and the canonical JSON of the arguments, separated by
/// a newline (which neither can contain unescaped).
pub fn input_hash(tool: &str, arguments: &Value) -> String {
    hash_text(tool, &canonical_json(arguments))
}

/// The hash of a call whose arguments are not JSON: the raw text stands in.
pub fn hash_text(tool: &str, text: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(tool.as_bytes());
    hasher.update(b"\n");
    hasher.update(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in hasher.finalize() {
        use std::fmt::Write as _;
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_whitespace_do_not_change_the_hash() {
        let a: Value = serde_json::from_str(r#"{ "b": [1, {"y": 2, "x": 1}], "a": "ä" }"#).unwrap();
        let b = json!({"a": "ä", "b": [1, {"x": 1, "y": 2}]});
        assert_eq!(canonical_json(&a), r#"{"a":"ä","b":[1,{"x":1,"y":2}]}"#);
        assert_eq!(input_hash("todo.create", &a), input_hash("todo.create", &b));
        assert_ne!(input_hash("todo.create", &a), input_hash("todo.update", &a));
        // Independently computed: printf 'todo.create\n{"title":"x"}' | sha256sum
        assert_eq!(
            input_hash("todo.create", &json!({"title": "x"})),
            "2496d4371e9d9fed85ac8d1ec33ba92fb678db1fea5331b941def36a3ef4d37f"
        );
    }
}
