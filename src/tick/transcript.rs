//! A tick's story as it happened: the persona-specific part of the system prompt (the
//! template is named by its hash), every assistant message, every tool call and the result
//! as the model saw it, the rating request and answer, the offline driver's choices, and
//! the server's own requests. Kept with the tick (redacted, capped), so QA can see *why* a
//! rating is low.

use serde_json::{Value, json};

use crate::model::tick::Transcript;

/// The transcript being written during a tick.
#[derive(Debug)]
pub(crate) struct TranscriptLog {
    entries: Vec<Value>,
    chars: usize,
    cap: usize,
    truncated: bool,
}

/// Longest text kept in one entry (a tool output the model saw is capped already).
const ENTRY_TEXT: usize = 8_000;

impl TranscriptLog {
    pub fn new(cap: usize) -> Self {
        Self {
            entries: Vec::new(),
            chars: 0,
            cap,
            truncated: false,
        }
    }

    /// Appends one step (`step` names its kind). Once the cap is reached, later steps are
    /// dropped and the transcript says it was cut.
    pub fn push(&mut self, step: &str, mut fields: Value) {
        if self.truncated || self.cap == 0 {
            self.truncated = self.truncated || self.cap > 0;
            return;
        }
        shorten_strings(&mut fields);
        if let Value::Object(map) = &mut fields {
            map.insert("step".into(), Value::String(step.into()));
        }
        let size = json_chars(&fields);
        if self.chars + size > self.cap {
            self.truncated = true;
            return;
        }
        self.chars += size;
        self.entries.push(fields);
    }

    /// The transcript to store, with every secret of the tick redacted (the log is left
    /// empty: a tick finishes once).
    pub fn finish(&mut self, secrets: &[String]) -> Transcript {
        let entries = Value::Array(std::mem::take(&mut self.entries));
        let text = entries.to_string();
        let entries = match crate::config::redact(&text, secrets) {
            // No secret in it: the entries as they are, not parsed back.
            std::borrow::Cow::Borrowed(_) => entries,
            // Redaction replaces whole secret values inside JSON strings: the text stays JSON.
            std::borrow::Cow::Owned(clean) => serde_json::from_str(&clean).unwrap_or_else(|_| json!([])),
        };
        Transcript {
            entries,
            chars: self.chars as i64,
            truncated: self.truncated,
        }
    }
}

/// The characters of `value`'s compact JSON, counted without building the text.
fn json_chars(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            // UTF-8: every byte but a continuation byte starts a character.
            self.0 += bytes.iter().filter(|&&b| b & 0xC0 != 0x80).count();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

fn shorten_strings(value: &mut Value) {
    match value {
        Value::String(text) if text.chars().count() > ENTRY_TEXT => {
            let cut: String = text.chars().take(ENTRY_TEXT).collect();
            *text = format!("{cut}… [truncated]");
        }
        Value::Array(items) => items.iter_mut().for_each(shorten_strings),
        Value::Object(map) => map.values_mut().for_each(shorten_strings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_cuts_the_story_and_says_so_and_secrets_go() {
        let mut log = TranscriptLog::new(200);
        log.push("assistant", json!({"content": "I log in with hunter2-secret"}));
        log.push("assistant", json!({"content": "x".repeat(500)}));
        log.push("assistant", json!({"content": "short"}));
        let transcript = log.finish(&["hunter2-secret".to_string()]);
        assert!(transcript.truncated);
        let entries = transcript.entries.as_array().unwrap();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0]["content"], "I log in with [redacted]");
        assert_eq!(entries[0]["step"], "assistant");
    }

    #[test]
    fn sizes_are_counted_in_characters_of_the_compact_json() {
        let value = json!({"content": "Grüße ✓ \"quoted\"\n", "n": [1, 2.5, null], "emoji": "🙂"});
        assert_eq!(json_chars(&value), value.to_string().chars().count());
        let mut log = TranscriptLog::new(10_000);
        log.push("user", json!({"content": "nothing secret"}));
        let kept = log.finish(&["a-secret-value".to_string()]);
        assert_eq!(kept.entries, json!([{"content": "nothing secret", "step": "user"}]));
    }
}
