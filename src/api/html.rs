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

/// `n word` in agreement: "1 call", "2 calls".
pub(super) fn count(n: i64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --fg:#1b1f24; --muted:#5b6470; --bg:#f7f8fa; --card:#fff; --line:#d8dde3; --bad:#b42318; --badbg:#fde8e7; --good:#067647; --mine:#eef4ff; --minel:#2563eb; --warnfg:#92400e; --infofg:#1d4ed8; }
@media (prefers-color-scheme: dark) { :root { --fg:#e6e8eb; --muted:#9aa4b2; --bg:#0f1216; --card:#171b21; --line:#2a313a; --bad:#ff8a80; --badbg:#3a1614; --good:#6fd3a1; --mine:#14213a; --minel:#60a5fa; --warnfg:#fbbf24; --infofg:#93c5fd; } }
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
caption { text-align:left; color:var(--muted); font-size:.85rem; padding-bottom:.3rem; }
ol.story { margin:0; padding:0; list-style:none; display:grid; gap:.6rem; }
ol.story > li { display:grid; gap:.2rem; min-width:0; }
.bubble { border:1px solid var(--line); border-radius:12px; padding:.5rem .7rem; max-width:52rem; }
.bubble.user { background:var(--bg); } .bubble.assistant { background:var(--mine); border-color:var(--minel); margin-left:auto; width:min(100%, 52rem); }
.bubble p.who { margin:0; font-size:.8rem; font-weight:600; color:var(--muted); }
.card { border:1px solid var(--line); border-left:4px solid var(--minel); border-radius:8px; padding:.5rem .7rem; }
.card.server { border-left-color:#7c3aed; } .card.ratings { border-left-color:#b45309; }
.card p { margin:.1rem 0; } .card ul { margin:.2rem 0; padding-left:1.2rem; }
.badge { display:inline-block; border-radius:999px; padding:0 .5rem; font-size:.8rem; font-weight:600; border:1px solid currentColor; }
.badge.good { color:var(--good); } .badge.bad { color:var(--bad); } .badge.warn { color:var(--warnfg); } .badge.info { color:var(--infofg); }
details.raw summary, details summary { cursor:pointer; color:var(--muted); font-size:.85rem; }
details.raw { justify-self:end; } details.raw[open] { justify-self:stretch; }
code { font-size:.85rem; }
@media (max-width: 600px) { main { padding:.5rem; } section { padding:.7rem; } .bubble.assistant { margin-left:0; } }
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
