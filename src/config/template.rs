//! JSON body templates of the product's calls (sign-up, and the like): JSON with
//! `{placeholder}`s inside its strings, filled with values that are escaped as JSON
//! because they replace text inside already-parsed strings, never raw text.

use serde_json::Value;

/// `template` (JSON) with every `{name}` of `values` replaced inside its strings.
/// `key` names the config key the template came from, for the error.
pub fn fill_json(key: &str, template: &str, values: &[(&str, &str)]) -> Result<Value, String> {
    fn fill(value: &mut Value, values: &[(&str, &str)]) {
        match value {
            Value::String(text) => {
                for (name, replacement) in values {
                    let placeholder = format!("{{{name}}}");
                    if text.contains(&placeholder) {
                        *text = text.replace(&placeholder, replacement);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| fill(v, values)),
            Value::Object(map) => map.values_mut().for_each(|v| fill(v, values)),
            _ => {}
        }
    }
    let mut body: Value = serde_json::from_str(template).map_err(|err| format!("{key} is not JSON: {err}"))?;
    fill(&mut body, values);
    Ok(body)
}

/// The body of a sign-up: `template` with `{email}`, `{password}` and `{name}` filled.
/// It must use `{email}` and `{password}`.
pub fn signup_body(template: &str, email: &str, password: &str, name: &str) -> Result<Value, String> {
    let body = fill_json(
        "auth.signup_body",
        template,
        &[("email", email), ("password", password), ("name", name)],
    )?;
    if !template.contains("{email}") || !template.contains("{password}") {
        return Err("auth.signup_body must use {email} and {password}".into());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_inside_strings_and_missing_placeholders_are_refused() {
        let body = signup_body(
            r#"{"e": "{email}", "p": "{password}", "n": ["{name}"]}"#,
            "a@b.test",
            "p\"w",
            "N",
        )
        .unwrap();
        assert_eq!(body, serde_json::json!({"e": "a@b.test", "p": "p\"w", "n": ["N"]}));
        assert!(
            signup_body(r#"{"e": "{email}"}"#, "a", "b", "c")
                .unwrap_err()
                .contains("{password}")
        );
        assert!(fill_json("k", "{nope", &[]).unwrap_err().starts_with("k is not JSON"));
    }
}
