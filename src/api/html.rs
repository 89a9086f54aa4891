//! The sidecar's HTML in one place: escaping, the one style sheet (light and dark), the
//! page frame, and the response every page goes out as. Server-rendered, no script.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Escapes text for HTML element content and quoted attributes.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --fg:#1b1f24; --muted:#5b6470; --bg:#f7f8fa; --card:#fff; --line:#d8dde3; --bad:#b42318; --badbg:#fde8e7; --good:#067647; }
@media (prefers-color-scheme: dark) { :root { --fg:#e6e8eb; --muted:#9aa4b2; --bg:#0f1216; --card:#171b21; --line:#2a313a; --bad:#ff8a80; --badbg:#3a1614; --good:#6fd3a1; } }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; flex-wrap:wrap; gap:.75rem; align-items:center; justify-content:space-between; padding:.9rem 1.2rem; border-bottom:1px solid var(--line); background:var(--card); }
header h1 { font-size:1.1rem; margin:0; }
nav a { margin-right:.6rem; color:var(--muted); } nav a.on { color:var(--fg); font-weight:600; }
main { max-width:1200px; margin:0 auto; padding:1rem; display:grid; gap:1rem; grid-template-columns: 1fr; }
@media (min-width: 980px) { main { grid-template-columns: 1fr 1fr; } .wide { grid-column: 1 / -1; } }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:1rem; min-width:0; }
section h2 { font-size:1rem; margin:0 0 .6rem; }
.stats { display:flex; flex-wrap:wrap; gap:1.5rem; } .stat b { display:block; font-size:1.4rem; }
.muted { color:var(--muted); }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; width:100%; font-size:.9rem; }
th, td { text-align:left; padding:.35rem .5rem; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; white-space:nowrap; }
td.num { text-align:right; font-variant-numeric: tabular-nums; white-space:nowrap; }
tr.regression td { background:var(--badbg); } .bad { color:var(--bad); font-weight:600; } .good { color:var(--good); }
.warn { color:#b45309; font-weight:600; }
.marks a { text-decoration:none; font-weight:700; padding:0 .1rem; }
.dist { display:inline-flex; gap:1px; align-items:flex-end; height:18px; }
.dist span { display:inline-block; width:7px; background:var(--muted); }
svg { width:100%; height:auto; display:block; }
.legend { display:flex; flex-wrap:wrap; gap:.4rem 1rem; margin-top:.5rem; font-size:.85rem; }
.legend i { display:inline-block; width:12px; height:12px; border-radius:2px; margin-right:.3rem; vertical-align:-1px; }
form.login { max-width:360px; margin:12vh auto; background:var(--card); border:1px solid var(--line); border-radius:10px; padding:1.4rem; display:grid; gap:.7rem; }
input, button { font:inherit; padding:.5rem .6rem; border-radius:6px; border:1px solid var(--line); background:var(--bg); color:var(--fg); }
button { cursor:pointer; font-weight:600; }
pre { margin:.2rem 0 0; white-space:pre-wrap; word-break:break-word; font-size:.85rem; }
ol.story { margin:0; padding-left:1.4rem; display:grid; gap:.6rem; }
ol.story li { border-left:3px solid var(--line); padding-left:.6rem; }
ol.story li.assistant { border-color:#2563eb; } ol.story li.tool_result { border-color:#16a34a; } ol.story li.ratings { border-color:#d97706; }
"#;

pub(super) fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    )
}

pub(super) fn html(status: StatusCode, text: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}
