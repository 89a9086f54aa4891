//! The dashboard's "Shared spaces" section: per space, its members' calls, who read or
//! changed whose entries, conflicts, denials, ratings per member, and low ratings linked
//! to the rated tick and the partners' ticks around it.

use std::fmt::Write as _;

use super::html::esc;
use crate::feedback::spaces::{SpaceView, Touch};

pub(super) fn spaces_section(views: &[SpaceView]) -> String {
    if views.is_empty() {
        return String::new();
    }
    let mut body = String::from("<section class=\"wide\" id=\"spaces\"><h2>Shared spaces</h2>");
    for view in views {
        body.push_str(&one_space(view));
    }
    body.push_str("</section>");
    body
}

fn tick_link(id: uuid::Uuid, label: &str) -> String {
    format!("<a href=\"/ticks/{id}\">{}</a>", esc(label))
}

fn one_space(view: &SpaceView) -> String {
    let calls: Vec<String> = view.calls.iter().map(|(who, n)| format!("{} {n}", esc(who))).collect();
    let mut html = format!(
        "<article class=\"space\"><h3>{} <span class=\"muted\">{}{} · {} ticks · calls: {}</span></h3>",
        esc(&view.name),
        esc(&view.kind),
        if view.provisioned { "" } else { " · not provisioned" },
        view.ticks.len(),
        if calls.is_empty() {
            "none".into()
        } else {
            calls.join(", ")
        }
    );
    // A quiet space is one line: nothing below would say more.
    if view.ticks.is_empty() && view.calls.is_empty() {
        let members: Vec<String> = view.members.iter().map(|m| esc(m)).collect();
        let _ = write!(
            html,
            "<p class=\"muted\">No ticks in this space in this window (members: {}).</p></article>",
            members.join(", ")
        );
        return html;
    }
    let mut rows = String::new();
    for i in &view.interactions {
        let verb = match i.touch {
            Touch::Read => "read",
            Touch::Changed => "changed",
        };
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{verb}</td><td>{}'s {}{}</td><td><code>{}</code></td><td>{} · made in {}</td></tr>",
            esc(&i.by),
            esc(&i.of),
            esc(&i.entry),
            i.text.as_deref().map(|t| format!(" “{}”", esc(t))).unwrap_or_default(),
            esc(&i.tool),
            tick_link(i.tick_id, &i.at.format("%m-%d %H:%M").to_string()),
            tick_link(i.made_in, "tick"),
        );
    }
    if rows.is_empty() {
        html.push_str("<p class=\"muted\">No member read or changed another's entry in this window.</p>");
    } else {
        let _ = write!(
            html,
            "<div class=\"scroll\" tabindex=\"0\"><table><caption>Across members</caption>\
             <thead><tr><th>who</th><th>did</th><th>what</th><th>tool</th><th>when</th></tr></thead><tbody>{rows}</tbody></table></div>"
        );
    }
    html.push_str(&troubles(view));
    html.push_str(&ratings(view));
    html.push_str("</article>");
    html
}

/// Conflicts and denials, each a line.
fn troubles(view: &SpaceView) -> String {
    let mut html = String::new();
    for c in &view.conflicts {
        let ticks: Vec<String> = c.ticks.iter().map(|t| tick_link(*t, "tick")).collect();
        let _ = write!(
            html,
            "<p class=\"bad\">Conflict: {} changed by {} between {} and {} ({})</p>",
            esc(&c.entry),
            esc(&c.members.join(" and ")),
            c.first.format("%m-%d %H:%M"),
            c.last.format("%H:%M"),
            ticks.join(", ")
        );
    }
    for d in &view.denials {
        let _ = write!(
            html,
            "<p class=\"bad\">Denied: {} <code>{}</code> ({})</p>",
            esc(&d.email),
            esc(&d.tool),
            tick_link(d.tick_id, &d.at.format("%m-%d %H:%M").to_string())
        );
    }
    if html.is_empty() {
        html.push_str("<p class=\"muted\">No conflicts, no denials.</p>");
    }
    html
}

/// Ratings per member, then the low ones with both members' ticks.
fn ratings(view: &SpaceView) -> String {
    if view.ratings.is_empty() {
        return "<p class=\"muted\">No ratings from ticks in this space.</p>".into();
    }
    let mut rows = String::new();
    for r in &view.ratings {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{:.2}</td><td class=\"num\">{}</td></tr>",
            esc(&r.email),
            esc(&r.module),
            r.average,
            r.count
        );
    }
    let mut html = format!(
        "<div class=\"scroll\" tabindex=\"0\"><table><caption>Ratings per member</caption>\
         <thead><tr><th>member</th><th>module</th><th>average</th><th>ratings</th></tr></thead><tbody>{rows}</tbody></table></div>"
    );
    for low in &view.low_ratings {
        let partners: Vec<String> = low
            .partner_ticks
            .iter()
            .map(|t| {
                tick_link(
                    t.tick_id,
                    &format!("{} {}", t.email, t.started_at.format("%m-%d %H:%M")),
                )
            })
            .collect();
        let _ = write!(
            html,
            "<p class=\"low\">{} rated {} {}/5: {} — {}; partners: {}</p>",
            esc(&low.rating.email),
            esc(&low.rating.module),
            low.rating.rating,
            esc(low.rating.notes.as_deref().unwrap_or_default()),
            tick_link(low.rating.tick_id, "their tick"),
            if partners.is_empty() {
                "no tick nearby".into()
            } else {
                partners.join(", ")
            }
        );
    }
    html
}
