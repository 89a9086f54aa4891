//! Text made safe to keep or show: every secret value replaced, and long text cut.
//! Whatever a product, a model or a dependency echoes back goes through here before it
//! is stored, logged or sent on.

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
