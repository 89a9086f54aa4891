//! `persona-runner feedback --spaces` as text: per shared space, who did what with whose
//! entries, the conflicts and denials, and each member's ratings there.

use persona_runner::feedback::spaces::{SpaceView, Touch};

pub(super) fn print(views: &[SpaceView]) {
    if views.is_empty() {
        out!("no shared spaces (declare them in a catalog's `spaces` and run `catalog seed --provision`)");
        return;
    }
    for view in views {
        let calls: Vec<String> = view.calls.iter().map(|(who, n)| format!("{who} {n}")).collect();
        out!(
            "space {} ({}{}): {} ticks; calls: {}",
            view.name,
            view.kind,
            if view.provisioned { "" } else { ", not provisioned" },
            view.ticks.len(),
            if calls.is_empty() {
                "none".into()
            } else {
                calls.join(", ")
            }
        );
        for i in &view.interactions {
            let verb = match i.touch {
                Touch::Read => "read",
                Touch::Changed => "changed",
            };
            out!(
                "  {} {verb} {}'s {}{} with {} at {} (tick {}, made in tick {})",
                i.by,
                i.of,
                i.entry,
                i.text.as_deref().map(|t| format!(" \"{t}\"")).unwrap_or_default(),
                i.tool,
                i.at.format("%Y-%m-%d %H:%M"),
                i.tick_id,
                i.made_in
            );
        }
        for c in &view.conflicts {
            out!(
                "  CONFLICT {}: changed by {} between {} and {}",
                c.entry,
                c.members.join(" and "),
                c.first.format("%H:%M"),
                c.last.format("%H:%M")
            );
        }
        for d in &view.denials {
            out!(
                "  DENIED {} {} at {} (tick {})",
                d.email,
                d.tool,
                d.at.format("%Y-%m-%d %H:%M"),
                d.tick_id
            );
        }
        for r in &view.ratings {
            out!("  rating {} {}: {:.2} ({})", r.email, r.module, r.average, r.count);
        }
        for low in &view.low_ratings {
            let partners: Vec<String> = low
                .partner_ticks
                .iter()
                .map(|t| format!("{} {}", t.email, t.tick_id))
                .collect();
            out!(
                "  LOW {} {} {}/5 (tick {}): {}; partners' ticks: {}",
                low.rating.email,
                low.rating.module,
                low.rating.rating,
                low.rating.tick_id,
                low.rating.notes.as_deref().unwrap_or_default(),
                if partners.is_empty() {
                    "none".into()
                } else {
                    partners.join(", ")
                }
            );
        }
    }
}
