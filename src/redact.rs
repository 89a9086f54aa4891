//! What the audit records of a call: the input hash, and text made safe to store.

use serde_json::Value;
use sha2::{Digest, Sha256};

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

/// `text` with every secret replaced and cut to `max` characters.
pub fn redact_truncate(text: &str, secrets: &[impl AsRef<str>], max: usize) -> String {
    // PostgreSQL refuses NUL in TEXT (SQLite stores it): drop it so a call is audited
    // the same on both.
    let mut clean = crate::config::redact(text, secrets).into_owned();
    if clean.contains('\0') {
        clean = clean.replace('\0', "");
    }
    // More bytes than `max` is the cheap test that there may be more characters.
    if clean.len() > max && clean.chars().count() > max {
        let cut: String = clean.chars().take(max).collect();
        format!("{cut}… [truncated]")
    } else {
        clean
    }
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

    #[test]
    fn secrets_are_redacted_before_truncation() {
        let text = "token eyJabc.def.ghi rejected";
        assert_eq!(
            redact_truncate(text, &["eyJabc.def.ghi"], 100),
            "token [redacted] rejected"
        );
        assert_eq!(redact_truncate("abcdef", &[] as &[&str], 3), "abc… [truncated]");
        // A cut through the secret would keep its prefix if truncation came first.
        assert_eq!(
            redact_truncate(text, &["eyJabc.def.ghi"], 10),
            "token [red… [truncated]"
        );
        // NUL, which PostgreSQL refuses in text, is dropped.
        assert_eq!(redact_truncate("a\0b", &[] as &[&str], 10), "ab");
    }
}
