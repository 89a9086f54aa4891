//! What small local models write instead of a proper answer, read back: JSON inside code
//! fences, `<tool_call>` tags (Hermes/Qwen) or prose, braces doubled by a template, and
//! tool calls written as text in one of the shapes models use (`{"name", "arguments"}`,
//! `{"function", "parameters"}`, `{"tool", "args"}`, OpenAI's own `{"function": {…}}`,
//! `<function=NAME>{…}</function>`). A call is only recovered when it names a tool that
//! was offered: text that merely mentions a tool is not a call.

use serde_json::{Map, Value};

/// A tool call found in a message's text.
#[derive(Clone, Debug, PartialEq)]
pub struct RecoveredCall {
    /// The offered tool's name as the model knows it (the LLM-side name).
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

/// The JSON values in `text`, in the order they appear: `<tool_call>` blocks and fenced
/// blocks first (their insides only), then balanced `{…}` and `[…]` in the prose around
/// them. A value that parses only with its doubled braces (`{{…}}`) collapsed counts too.
pub fn json_values(text: &str) -> Vec<Value> {
    let mut values = Vec::new();
    let mut rest = String::with_capacity(text.len());
    let mut at = 0;
    while let Some((start, inner, end)) = next_block(text, at) {
        rest.push_str(&text[at..start]);
        values.extend(balanced(inner));
        at = end;
    }
    rest.push_str(&text[at..]);
    values.extend(balanced(&rest));
    values
}

/// The next `<tool_call>…</tool_call>` or fenced block at or after `from`: where it
/// starts, its inside, and where it ends.
fn next_block(text: &str, from: usize) -> Option<(usize, &str, usize)> {
    let tag = text[from..].find("<tool_call>").map(|i| from + i);
    let fence = text[from..].find("```").map(|i| from + i);
    match (tag, fence) {
        (Some(t), f) if f.is_none_or(|f| t < f) => {
            let inner_start = t + "<tool_call>".len();
            let end = text[inner_start..].find("</tool_call>").map(|i| inner_start + i);
            let (inner_end, block_end) = end.map_or((text.len(), text.len()), |e| (e, e + "</tool_call>".len()));
            Some((t, &text[inner_start..inner_end], block_end))
        }
        (_, Some(f)) => {
            // The info string (```json) ends at the first line break.
            let body_start = text[f + 3..].find('\n').map_or(text.len(), |i| f + 3 + i + 1);
            let close = text[body_start..].find("```").map(|i| body_start + i);
            let (inner_end, block_end) = close.map_or((text.len(), text.len()), |c| (c, c + 3));
            Some((f, &text[body_start.min(inner_end)..inner_end], block_end))
        }
        _ => None,
    }
}

/// The top-level balanced JSON objects and arrays of `text` that parse.
fn balanced(text: &str) -> Vec<Value> {
    let bytes = text.as_bytes();
    let mut values = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if (bytes[i] == b'{' || bytes[i] == b'[')
            && let Some(end) = matching(bytes, i)
        {
            let candidate = &text[i..=end];
            if let Some(value) = parse_lenient(candidate) {
                values.push(value);
                i = end + 1;
                continue;
            }
        }
        i += 1;
    }
    values
}

/// Walks JSON text byte by byte, telling its structure from the inside of its strings.
#[derive(Default)]
struct Scan {
    in_string: bool,
    escaped: bool,
}

impl Scan {
    /// `byte` when it is structure (a quote opening a string included), `None` inside a
    /// string.
    fn structural(&mut self, byte: u8) -> Option<u8> {
        if self.in_string {
            match byte {
                _ if self.escaped => self.escaped = false,
                b'\\' => self.escaped = true,
                b'"' => self.in_string = false,
                _ => {}
            }
            return None;
        }
        self.in_string = byte == b'"';
        Some(byte)
    }
}

/// The index of the bracket closing the one at `open`, skipping strings.
fn matching(bytes: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut scan = Scan::default();
    for (at, &byte) in bytes.iter().enumerate().skip(open) {
        match scan.structural(byte) {
            Some(b'{' | b'[') => depth += 1,
            Some(b'}' | b']') => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(at);
                }
            }
            _ => {}
        }
    }
    None
}

/// `text` as JSON, or with doubled braces collapsed (a template's escaping leaked).
fn parse_lenient(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok().or_else(|| {
        let collapsed = text.replace("{{", "{").replace("}}", "}");
        (collapsed != text)
            .then(|| serde_json::from_str(&collapsed).ok())
            .flatten()
    })
}

/// The JSON value an answer cut off by the token limit began, completed: a string cut
/// open is closed and marked `…`, open arrays and objects are closed. When that does not
/// parse (the cut fell inside a key or a number), the text is cut back to its last
/// complete member instead. Values the answer closed itself are `json_values`' business:
/// this completes only the one still open at the end. `None` when none is open, or a
/// bracket mismatch shows it was never JSON.
pub fn complete_cut(text: &str) -> Option<Value> {
    let mut start = None;
    let mut open: Vec<u8> = Vec::new();
    // Where each member ended (the comma after it), with the brackets open there.
    let mut members: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut scan = Scan::default();
    for (at, byte) in text.bytes().enumerate() {
        if open.is_empty() {
            // Prose between values: only an opening bracket starts the next one.
            if !matches!(byte, b'{' | b'[') {
                continue;
            }
            (start, scan) = (Some(at), Scan::default());
            members.clear();
        }
        match scan.structural(byte) {
            Some(b'{') => open.push(b'}'),
            Some(b'[') => open.push(b']'),
            // The guard pops the bracket this one closes.
            Some(closer @ (b'}' | b']')) if open.pop() != Some(closer) => return None,
            Some(b',') => members.push((at, open.clone())),
            _ => {}
        }
    }
    let start = start.filter(|_| !open.is_empty())?;
    let body = &text[start..];
    let closing = |open: &[u8]| open.iter().rev().map(|&b| char::from(b)).collect::<String>();
    let mut whole = body.trim_end().to_string();
    if scan.in_string {
        if scan.escaped {
            whole.pop();
        }
        whole.push_str("…\"");
    }
    whole.push_str(&closing(&open));
    serde_json::from_str(&whole).ok().or_else(|| {
        members
            .iter()
            .rev()
            .find_map(|(at, open)| serde_json::from_str(&format!("{}{}", &text[start..*at], closing(open))).ok())
    })
}

/// The tool calls written as text in `content`, for tools `offered` accepts (it maps a
/// name the model wrote, LLM-side or MCP, to the LLM-side name; `None`: not offered).
pub fn tool_calls(content: &str, offered: &dyn Fn(&str) -> Option<String>) -> Vec<RecoveredCall> {
    let mut calls = Vec::new();
    for value in json_values(content) {
        let items = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        calls.extend(items.iter().filter_map(|item| call_of(item, offered)));
    }
    calls.extend(function_tags(content, offered));
    calls
}

/// One call in one of the shapes models write.
fn call_of(value: &Value, offered: &dyn Fn(&str) -> Option<String>) -> Option<RecoveredCall> {
    let object = value.as_object()?;
    // OpenAI's own shape, written out: {"type": "function", "function": {"name", "arguments"}}.
    if let Some(inner) = object.get("function").and_then(Value::as_object)
        && inner.contains_key("name")
    {
        return call_of(&Value::Object(inner.clone()), offered);
    }
    let shapes = [
        ("name", "arguments"),
        ("name", "parameters"),
        ("function", "parameters"),
        ("tool", "args"),
        ("tool", "arguments"),
    ];
    let (name, arguments) = shapes.iter().find_map(|(name_key, args_key)| {
        let name = object.get(*name_key)?.as_str()?;
        Some((name, object.get(*args_key)))
    })?;
    let name = offered(name.trim())?;
    let arguments = match arguments {
        None | Some(Value::Null) => "{}".to_string(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    };
    Some(RecoveredCall { name, arguments })
}

/// `<function=NAME>{…}</function>` and `<function name="NAME">{…}</function>`.
fn function_tags(content: &str, offered: &dyn Fn(&str) -> Option<String>) -> Vec<RecoveredCall> {
    let mut calls = Vec::new();
    let mut at = 0;
    while let Some(open) = content[at..].find("<function").map(|i| at + i) {
        let Some(head_end) = content[open..].find('>').map(|i| open + i) else {
            break;
        };
        let head = &content[open + "<function".len()..head_end];
        let name = head
            .trim()
            .trim_start_matches('=')
            .trim_start_matches("name=")
            .trim_matches(|c| c == '"' || c == '\'' || c == '/' || c == ' ');
        let body_end = content[head_end..]
            .find("</function>")
            .map_or(content.len(), |i| head_end + i);
        let body = &content[head_end + 1..body_end.max(head_end + 1)];
        if let Some(name) = offered(name) {
            let arguments = balanced(body)
                .into_iter()
                .find(Value::is_object)
                .unwrap_or(Value::Object(Map::new()));
            calls.push(RecoveredCall {
                name,
                arguments: arguments.to_string(),
            });
        }
        at = body_end.max(head_end + 1);
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn offered(name: &str) -> Option<String> {
        match name {
            "todo_create" | "todo.create" => Some("todo_create".into()),
            "mood_log" | "mood.log" => Some("mood_log".into()),
            _ => None,
        }
    }

    #[test]
    fn only_the_value_left_open_by_the_cut_is_completed() {
        // A value the answer closed itself is not completed again; the one after it is.
        let answer = r#"Context: {"a": 1}. Rating: ```json
{"ratings": [{"module": "todo", "rating": 4, "reason": "Lange \"Liste"#;
        assert_eq!(
            complete_cut(answer),
            Some(json!({"ratings": [{"module": "todo", "rating": 4, "reason": "Lange \"Liste…"}]}))
        );
        // Cut right after a backslash: the half escape goes, the string still closes.
        assert_eq!(complete_cut(r#"{"a": "x\"#), Some(json!({"a": "x…"})));
        // Cut after a colon: back to the last complete member.
        assert_eq!(
            complete_cut(r#"[{"a": 1}, {"b": 2, "c": "#),
            Some(json!([{"a": 1}, {"b": 2}]))
        );
        // Nothing open at the end, no JSON at all, or brackets that never matched.
        assert_eq!(complete_cut(r#"{"a": 1} and done"#), None);
        assert_eq!(complete_cut("four stars"), None);
        assert_eq!(complete_cut(r#"{"a": [1}"#), None);
    }

    #[test]
    fn calls_written_as_text_are_found_in_every_shape_models_use() {
        let fenced = "```json\n{\n  \"name\": \"todo_create\",\n  \"arguments\": {\"title\": \"Milch\"}\n}\n```";
        assert_eq!(
            tool_calls(fenced, &offered),
            [RecoveredCall {
                name: "todo_create".into(),
                arguments: r#"{"title":"Milch"}"#.into()
            }]
        );
        let hermes =
            "<tool_call>\n{\"name\": \"todo.create\", \"arguments\": \"{\\\"title\\\": \\\"x\\\"}\"}\n</tool_call>";
        assert_eq!(tool_calls(hermes, &offered)[0].arguments, r#"{"title": "x"}"#);
        let doubled = "Ich lege das an: {{\"function\": \"mood_log\", \"parameters\": {{\"score\": 3}}}}";
        assert_eq!(tool_calls(doubled, &offered)[0].name, "mood_log");
        let array = r#"[{"tool": "todo_create", "args": {"title": "a"}}, {"tool": "mood_log", "args": {"score": 2}}]"#;
        assert_eq!(tool_calls(array, &offered).len(), 2);
        let openai = r#"{"type": "function", "function": {"name": "todo_create", "arguments": "{}"}}"#;
        assert_eq!(tool_calls(openai, &offered)[0].arguments, "{}");
        let tag = r#"<tools><function=todo_create>{"title": "Abgabe"}</function></tools>"#;
        assert_eq!(tool_calls(tag, &offered)[0].arguments, r#"{"title":"Abgabe"}"#);
        let named = r#"<function name="mood.log">{"score": 4}</function>"#;
        assert_eq!(tool_calls(named, &offered)[0].name, "mood_log");
    }

    #[test]
    fn text_that_mentions_a_tool_or_names_one_not_offered_is_no_call() {
        assert!(tool_calls("I will use todo_create to add my task later.", &offered).is_empty());
        assert!(tool_calls(r#"{"name": "todo_delete", "arguments": {"id": 1}}"#, &offered).is_empty());
        assert!(tool_calls(r#"{"title": "Milch", "due": "morgen"}"#, &offered).is_empty());
    }

    #[test]
    fn json_is_found_inside_fences_and_prose_but_not_inside_strings() {
        let text = "Here: ```json\n{\"ratings\": [1]}\n``` and also {\"a\": \"}{\"} done";
        assert_eq!(json_values(text), [json!({"ratings": [1]}), json!({"a": "}{"})]);
        assert!(json_values("no json here { not closed").is_empty());
    }
}
