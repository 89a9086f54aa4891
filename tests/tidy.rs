//! The house rules of ARCHITECTURE.md, checked by reading `src/` (as rust-analyzer's
//! `tidy` does): which module may use which dependency, where printing happens, that time
//! arithmetic on outside values saturates, that state is never compared as text, and that
//! rooms stay small (a module doc on every file, files ≤ 600 lines, functions ≤ 100 lines
//! outside data tables). Each failure names the file, the line and the rule.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Files under `src/`, with their text.
fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out
}

/// The path below `src/`, with `/` separators.
fn rel(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/")
}

/// `text` with comments blanked and, when `strings` is false, string and char literals
/// blanked too; line breaks are kept so line numbers stay right.
fn blank(text: &str, strings: bool) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let keep = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(keep(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('#') || next == Some('"')) && !is_ident(chars.get(i.wrapping_sub(1))) {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let close: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
            let body_start = j + 1;
            let rest: String = chars[body_start..].iter().collect();
            let end = rest
                .find(&close)
                .map_or(chars.len(), |e| body_start + rest[..e].chars().count());
            for &ch in &chars[i..body_start] {
                out.push(if strings { ch } else { keep(ch) });
            }
            for &ch in &chars[body_start..end] {
                out.push(if strings { ch } else { keep(ch) });
            }
            let stop = (end + close.chars().count()).min(chars.len());
            for &ch in &chars[end..stop] {
                out.push(if strings { ch } else { keep(ch) });
            }
            i = stop;
        } else if c == '"' {
            out.push(if strings { c } else { ' ' });
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    out.push(if strings { chars[i] } else { ' ' });
                    out.push(if strings { chars[i + 1] } else { keep(chars[i + 1]) });
                    i += 2;
                    continue;
                }
                out.push(if strings { chars[i] } else { keep(chars[i]) });
                i += 1;
            }
            if i < chars.len() {
                out.push(if strings { '"' } else { ' ' });
                i += 1;
            }
        } else if c == '\'' && is_char_literal(&chars, i) {
            let end = chars[i + 1..]
                .iter()
                .position(|&ch| ch == '\'')
                .map_or(i + 1, |p| i + 1 + p);
            for _ in i..=end {
                out.push(' ');
            }
            i = end + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// `'x'`, `'\n'`, `'\u{…}'` rather than a lifetime `'a`.
fn is_char_literal(chars: &[char], at: usize) -> bool {
    matches!(
        (chars.get(at + 1), chars.get(at + 2)),
        (Some('\\'), _) | (Some(_), Some('\''))
    )
}

/// The code of a file before its unit tests (they may do what the product must not).
fn before_tests(code: &str) -> &str {
    code.find("#[cfg(test)]").map_or(code, |at| &code[..at])
}

/// The line number of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

/// Every match of `pattern` in `code` (outside tests), as `file:line: rule`.
fn find(problems: &mut Vec<String>, file: &str, code: &str, pattern: &regex::Regex, rule: &str) {
    for found in pattern.find_iter(before_tests(code)) {
        problems.push(format!(
            "{file}:{}: {rule}: `{}`",
            line_of(code, found.start()),
            found.as_str().trim()
        ));
    }
}

fn report(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn dependencies_stay_in_their_modules() {
    let rules: [(&str, &[&str], &str); 3] = [
        (r"\bsqlx::", &["store/"], "only store/ uses sqlx"),
        (
            r"\brmcp::",
            &["mcp/", "gateway/"],
            "only mcp/ (and the sample gateway) know rmcp",
        ),
        (r"\basync_openai::", &["llm/"], "only llm/ knows async-openai"),
    ];
    let mut problems = Vec::new();
    for (path, text) in sources() {
        let file = rel(&path);
        let code = blank(&text, false);
        for (pattern, allowed, rule) in rules {
            if allowed.iter().any(|dir| file.starts_with(dir)) {
                continue;
            }
            find(&mut problems, &file, &code, &regex::Regex::new(pattern).unwrap(), rule);
        }
    }
    report(problems);
}

#[test]
fn only_the_store_writes_sql() {
    let sql = regex::Regex::new(r#""\s*(SELECT\s|INSERT\s+INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s)"#).unwrap();
    let mut problems = Vec::new();
    for (path, text) in sources() {
        let file = rel(&path);
        if file.starts_with("store/") {
            continue;
        }
        find(&mut problems, &file, &blank(&text, true), &sql, "SQL outside store/");
    }
    report(problems);
}

#[test]
fn only_the_command_line_prints() {
    let printing = regex::Regex::new(r"\b(println|print|eprintln|eprint|dbg)!").unwrap();
    let mut problems = Vec::new();
    for (path, text) in sources() {
        let file = rel(&path);
        if file.starts_with("cli/") || file == "main.rs" {
            continue;
        }
        let rule = "printing outside cli/ (log through tracing instead)";
        find(&mut problems, &file, &blank(&text, false), &printing, rule);
    }
    report(problems);
}

#[test]
fn time_arithmetic_on_outside_values_saturates() {
    // `+` on an instant or a date panics when the span is absurd (an `expires_in` of
    // 2⁶⁴ − 1 seconds); `time::after`, `time::before` and `time::instant_after` saturate.
    let unchecked = regex::Regex::new(concat!(
        r"(Instant::now\(\)|Utc::now\(\)|SystemTime::now\(\)|time::now\(\))\s*[+-]\s|",
        r"[+-]\s*chrono::Duration::|",
        r"\+\s*(std::time::)?Duration::from_(secs|millis|micros|nanos)\((\s*[^0-9\s)]|[0-9_]+\s*[^0-9_\s)])"
    ))
    .unwrap();
    let mut problems = Vec::new();
    for (path, text) in sources() {
        let file = rel(&path);
        if file == "time.rs" {
            continue;
        }
        let rule = "unchecked time arithmetic (use time::after, time::before or time::instant_after)";
        find(&mut problems, &file, &blank(&text, false), &unchecked, rule);
    }
    report(problems);
}

/// The texts of every `text_enum!` of the crate.
fn enum_texts(files: &[(PathBuf, String)]) -> BTreeSet<String> {
    let block = regex::Regex::new(r"(?s)text_enum!\s*\{(.*?)\n\}").unwrap();
    let arm = regex::Regex::new(r#"=>\s*"([^"]+)""#).unwrap();
    files
        .iter()
        .flat_map(|(_, text)| block.captures_iter(text).map(|c| c[1].to_string()).collect::<Vec<_>>())
        .flat_map(|body| arm.captures_iter(&body).map(|c| c[1].to_string()).collect::<Vec<_>>())
        .collect()
}

#[test]
fn no_state_is_compared_as_text() {
    let files = sources();
    let texts = enum_texts(&files);
    assert!(texts.contains("not_sent") && texts.contains("running"), "{texts:?}");
    let alternatives = texts.iter().map(|t| regex::escape(t)).collect::<Vec<_>>().join("|");
    let compared = regex::Regex::new(&format!(
        r#"(==|!=)\s*"({alternatives})"|"({alternatives})"\s*(==|!=)|Some\("({alternatives})"\)\s*=>"#
    ))
    .unwrap();
    let mut problems = Vec::new();
    for (path, text) in &files {
        let file = rel(path);
        let code = blank(text, true);
        for found in compared.find_iter(before_tests(&code)) {
            let line = line_of(&code, found.start());
            // A text that only looks like state says so where it is compared.
            if text.lines().nth(line - 1).is_some_and(|l| l.contains("// not state:")) {
                continue;
            }
            problems.push(format!(
                "{file}:{line}: state compared as text (compare the enum): `{}`",
                found.as_str()
            ));
        }
    }
    report(problems);
}

#[test]
fn store_macros_only_choose_the_backend_or_compose_sql_text() {
    // Macros that run code are the ones that compile one body per backend; the rest only
    // join SQL text at compile time (`concat!`), which a `const` cannot do.
    let allowed = [
        "with_pool",
        "with_writer",
        "begin_write",
        "on_conn",
        "text_columns",
        "plan",
        "explain_all",
        "select_persona",
        "insert_persona",
        "spec_set",
        "select_profile",
        "scope_filters",
        "raw_cells",
    ];
    let definition = regex::Regex::new(r"macro_rules!\s*(\w+)").unwrap();
    let mut problems = Vec::new();
    for (path, text) in sources() {
        let file = rel(&path);
        for found in definition.captures_iter(&text) {
            let name = &found[1];
            let crate_wide = (file == "macros.rs" && name == "text_enum") || (file == "cli/mod.rs" && name == "out");
            let backend = file.starts_with("store/") && allowed.contains(&name);
            if !(crate_wide || backend) {
                problems.push(format!("{file}: macro `{name}` hides code (write a function)"));
            }
        }
    }
    report(problems);
}

#[test]
fn every_module_says_what_it_owns() {
    let mut problems = Vec::new();
    for (path, text) in sources() {
        if !text.trim_start().starts_with("//!") {
            problems.push(format!("{}: no module doc (`//!`) saying what it owns", rel(&path)));
        }
    }
    report(problems);
}

#[test]
fn files_stay_under_600_lines() {
    let mut problems = Vec::new();
    for (path, text) in sources() {
        let lines = text.lines().count();
        if lines > 600 {
            problems.push(format!("{}: {lines} lines; split it by job", rel(&path)));
        }
    }
    report(problems);
}

#[test]
fn functions_stay_under_100_lines() {
    // Data tables may be long: the sample product's tool definitions, the metric families.
    let tables = [("gateway/tools.rs", "definitions"), ("metrics.rs", "new")];
    let function = regex::Regex::new(r"\bfn\s+(\w+)").unwrap();
    let mut problems = Vec::new();
    for (path, text) in sources() {
        let file = rel(&path);
        let code = blank(&text, false);
        let bytes = code.as_bytes();
        for found in function.captures_iter(&code) {
            let name = found.get(1).unwrap();
            // The body: from the first `{` after the signature (or none, for a `;`).
            let Some(open) = code[name.end()..].find(['{', ';']).map(|at| name.end() + at) else {
                continue;
            };
            if bytes[open] == b';' {
                continue;
            }
            let mut depth = 0usize;
            let mut close = open;
            for (at, byte) in bytes.iter().enumerate().skip(open) {
                match byte {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            close = at;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let lines = line_of(&code, close) - line_of(&code, found.get(0).unwrap().start()) + 1;
            if lines > 100 && !tables.contains(&(file.as_str(), name.as_str())) {
                problems.push(format!(
                    "{file}:{}: fn {} is {lines} lines; split it into its steps",
                    line_of(&code, name.start()),
                    name.as_str()
                ));
            }
        }
    }
    report(problems);
}

#[test]
fn the_checks_see_what_they_look_for() {
    // The reader must not blank code, nor keep comments or strings it should blank.
    let text = "let a = \"x == \\\"ok\\\"\"; // Instant::now() + d\nlet b = 'c'; fn f<'a>() {}\n";
    let code = blank(text, false);
    assert!(!code.contains("Instant") && !code.contains("ok"), "{code}");
    assert!(code.contains("let b") && code.contains("fn f<'a>"), "{code}");
    assert_eq!(code.lines().count(), text.lines().count());
    let with_strings = blank("x == \"running\" // == \"ok\"", true);
    assert!(with_strings.contains("\"running\"") && !with_strings.contains("ok"));
    let raw = blank("let q = r#\"SELECT 1\"#; sqlx::query(q)", false);
    assert!(!raw.contains("SELECT") && raw.contains("sqlx::query"), "{raw}");
}
