//! Text made safe to keep or show: every secret value replaced, control characters
//! escaped, Rust `Debug` dumps put in words, and long text cut. Whatever a product, a model
//! or a dependency echoes back goes through here before it is stored, logged or sent on.
//!
//! The process's secrets and every tick's credentials are registered here
//! ([`register`]), so the log redacts them from every line, dependencies' included.

use std::borrow::Cow;
use std::sync::{LazyLock, RwLock};

/// Secrets registered for the log, newest last; per-tick credentials beyond the bound
/// are forgotten oldest first (a token that old has expired).
struct Known {
    secrets: Vec<String>,
    matcher: Option<aho_corasick::AhoCorasick>,
}

static KNOWN: LazyLock<RwLock<Known>> = LazyLock::new(|| {
    RwLock::new(Known {
        secrets: Vec::new(),
        matcher: None,
    })
});

/// Secrets the log keeps in mind at once.
const KNOWN_SECRETS: usize = 20_000;

/// Makes every later log line redact `secret` (values shorter than four characters are
/// ignored, as in [`redact`]).
pub fn register(secret: &str) {
    if secret.len() < 4 {
        return;
    }
    let mut known = KNOWN.write().expect("redaction lock");
    if known.secrets.iter().any(|s| s == secret) {
        return;
    }
    if known.secrets.len() >= KNOWN_SECRETS {
        known.secrets.remove(0);
    }
    known.secrets.push(secret.to_string());
    // Longest first, so a secret containing another is replaced whole.
    let mut patterns = known.secrets.clone();
    patterns.sort_by_key(|s| std::cmp::Reverse(s.len()));
    known.matcher = aho_corasick::AhoCorasick::builder()
        .match_kind(aho_corasick::MatchKind::LeftmostLongest)
        .build(&patterns)
        .ok();
}

/// `text` with every registered secret replaced by `[redacted]`.
pub fn redact_known(text: &str) -> Cow<'_, str> {
    let known = KNOWN.read().expect("redaction lock");
    match &known.matcher {
        Some(matcher) if matcher.is_match(text) => {
            Cow::Owned(matcher.replace_all(text, &["[redacted]"].repeat(matcher.patterns_len())))
        }
        _ => Cow::Borrowed(text),
    }
}

/// `text` with control characters (line breaks, escape sequences, C1 codes) written as
/// `\n`, `\u{1b}`…, so text from outside cannot forge a line or move a terminal.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_control(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A character that moves or recolours a terminal, or breaks a line: Unicode controls
/// and the line and paragraph separators.
pub fn is_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// `text` cut to `max` characters, saying how much was left out.
pub fn cap(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max || text.chars().count() <= max {
        return Cow::Borrowed(text);
    }
    let cut: String = text.chars().take(max).collect();
    Cow::Owned(format!("{cut}… [{} more bytes left out]", text.len() - cut.len()))
}

/// A Rust `Debug` dump (`reqwest::Error { kind: Request, … Os { code: 111, … message:
/// "Connection refused" } }`) put in words: the messages inside it, joined; other text is
/// returned as it is.
pub fn plain_debug(text: &str) -> Cow<'_, str> {
    static DUMP: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r"\b([a-z_][a-z0-9_]*::)*[A-Z][A-Za-z0-9]*(::[A-Za-z][A-Za-z0-9]*)*\s*(\{ \w+: |\()")
            .expect("regex")
    });
    static MESSAGE: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r#"(message|description|msg): "((?:[^"\\]|\\.)*)""#).expect("regex"));
    static FIRST_STRING: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r#"\(\s*"((?:[^"\\]|\\.)*)""#).expect("regex"));
    if !DUMP.is_match(text) {
        return Cow::Borrowed(text);
    }
    let mut words: Vec<String> = FIRST_STRING.captures_iter(text).map(|c| c[1].to_string()).collect();
    words.extend(MESSAGE.captures_iter(text).map(|c| c[2].to_string()));
    words.dedup();
    if words.is_empty() {
        return Cow::Borrowed(text);
    }
    let prefix = DUMP.find(text).map_or("", |m| text[..m.start()].trim_end());
    Cow::Owned(if prefix.is_empty() {
        words.join(": ")
    } else {
        format!("{prefix} {}", words.join(": "))
    })
}

/// One JSON log line with every string redacted and capped (JSON escaping already keeps
/// control characters out); text that is not JSON is redacted as it is.
pub fn json_line(line: &str, max: usize) -> String {
    fn clean(value: &mut serde_json::Value, max: usize) {
        match value {
            serde_json::Value::String(text) => {
                let plain = plain_debug(text);
                let redacted = redact_known(&plain);
                let capped = cap(&redacted, max).into_owned();
                *text = capped;
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| clean(v, max)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| clean(v, max)),
            _ => {}
        }
    }
    match serde_json::from_str::<serde_json::Value>(line.trim_end()) {
        Ok(mut value) => {
            clean(&mut value, max);
            format!("{value}\n")
        }
        Err(_) => redact_known(line).into_owned(),
    }
}

/// `text` with every secret of `secrets` replaced by `[redacted]`. Values shorter than
/// four characters are left alone: replacing them would mangle ordinary text. Borrowed
/// when no secret occurs (this runs on every audited output, and the caller can tell).
pub fn redact<'a>(text: &'a str, secrets: &[impl AsRef<str>]) -> std::borrow::Cow<'a, str> {
    let mut clean = std::borrow::Cow::Borrowed(text);
    for secret in secrets.iter().map(AsRef::as_ref).filter(|s| s.len() >= 4) {
        if clean.contains(secret) {
            clean = std::borrow::Cow::Owned(clean.replace(secret, "[redacted]"));
        }
    }
    clean
}

/// `text` with every secret replaced and cut to `max` characters.
pub fn redact_truncate(text: &str, secrets: &[impl AsRef<str>], max: usize) -> String {
    // PostgreSQL refuses NUL in TEXT (SQLite stores it): drop it so a call is audited
    // the same on both.
    let mut clean = redact(text, secrets).into_owned();
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

    #[test]
    fn debug_dumps_become_their_messages() {
        let dump = r#"error sending request: reqwest::Error { kind: Request, source: Os { code: 111, kind: ConnectionRefused, message: "Connection refused" } }"#;
        assert_eq!(plain_debug(dump), "error sending request: Connection refused");
        let nested = r#"worker quit with fatal: Transport channel closed, when Auth(AuthorizationFailed("Client credentials error: bad client"))"#;
        assert_eq!(
            plain_debug(nested),
            "worker quit with fatal: Transport channel closed, when Client credentials error: bad client"
        );
        // Words stay words, parentheses and all.
        let words = "HTTP 401 (WWW-Authenticate: Bearer realm=\"x\")";
        assert!(matches!(plain_debug(words), Cow::Borrowed(_)));
    }

    #[test]
    fn controls_are_escaped_and_long_text_capped() {
        assert_eq!(escape_controls("a\u{1b}[31mb\nc\u{2028}"), "a\\u{1b}[31mb\\nc\\u{2028}");
        assert!(matches!(escape_controls("plain"), Cow::Borrowed(_)));
        assert_eq!(cap("abcdef", 3), "abc… [3 more bytes left out]");
    }

    #[test]
    fn registered_secrets_leave_every_line_and_every_json_string() {
        register("s3cr3t-registered");
        assert_eq!(redact_known("x s3cr3t-registered y"), "x [redacted] y");
        let line = json_line(r#"{"fields":{"message":"sent s3cr3t-registered"}}"#, 100);
        assert_eq!(line, "{\"fields\":{\"message\":\"sent [redacted]\"}}\n");
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
