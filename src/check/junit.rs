//! A check run as JUnit XML, the format GitLab, GitHub and Jenkins test reporters read: a
//! `testsuite` per persona, a `testcase` per goal, and a `failure` for a goal that did not
//! hold, naming its unmet checks and criteria and linking each trial's tick page.

use std::fmt::Write as _;

use crate::model::goal::{GoalSummary, Verdict};

/// One persona's goals, as a test suite.
pub struct Suite<'a> {
    /// The persona as reports name it (its email).
    pub persona: &'a str,
    pub goals: Vec<&'a GoalSummary>,
}

/// The JUnit document of a run. `verdicts` give each goal's time; `tick_url` turns a tick
/// id into its page's address.
pub fn document(
    suites: &[Suite<'_>],
    verdicts: &[Verdict],
    needed: u32,
    timestamp: chrono::DateTime<chrono::Utc>,
    tick_url: &dyn Fn(uuid::Uuid) -> String,
) -> String {
    // A goal takes as long as its trials' ticks together.
    let seconds = |summary: &GoalSummary| -> f64 {
        verdicts
            .iter()
            .filter(|v| v.persona_id == summary.persona_id && v.goal == summary.goal)
            .map(|v| v.seconds)
            .sum()
    };
    let total: usize = suites.iter().map(|s| s.goals.len()).sum();
    let failed: usize = suites.iter().map(|s| s.goals.iter().filter(|g| !g.holds).count()).sum();
    let stamp = timestamp.format("%Y-%m-%dT%H:%M:%S");
    let host = escape(&hostname());
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let all_time: f64 = suites.iter().flat_map(|s| s.goals.iter().map(|g| seconds(g))).sum();
    let _ = writeln!(
        xml,
        "<testsuites name=\"persona-runner check\" tests=\"{total}\" failures=\"{failed}\" errors=\"0\" time=\"{all_time:.3}\">"
    );
    for (id, suite) in suites.iter().enumerate() {
        let failures = suite.goals.iter().filter(|g| !g.holds).count();
        let time: f64 = suite.goals.iter().map(|g| seconds(g)).sum();
        let name = escape(suite.persona);
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" \
             time=\"{time:.3}\" timestamp=\"{stamp}\" hostname=\"{host}\" id=\"{id}\" package=\"persona-runner\">",
            suite.goals.len()
        );
        let trials = suite.goals.first().map_or(0, |g| g.trials);
        let _ = writeln!(
            xml,
            "    <properties><property name=\"trials\" value=\"{trials}\"/><property name=\"min_pass\" value=\"{needed}\"/></properties>"
        );
        for goal in &suite.goals {
            let case = format!(
                "name=\"{}\" classname=\"{name}\" time=\"{:.3}\"",
                escape(&goal.goal),
                seconds(goal)
            );
            if goal.holds {
                let _ = writeln!(xml, "    <testcase {case}/>");
                continue;
            }
            let message = format!(
                "{} of {} trials passed, {needed} needed{}",
                goal.passed,
                goal.trials,
                goal.shortfalls
                    .first()
                    .and_then(|s| s.unmet.first())
                    .map(|u| format!(": {u}"))
                    .unwrap_or_default()
            );
            let mut body = String::new();
            for shortfall in &goal.shortfalls {
                let _ = writeln!(
                    body,
                    "trial {} ({}): {}",
                    shortfall.trial,
                    shortfall.outcome,
                    tick_url(shortfall.tick_id)
                );
                for unmet in &shortfall.unmet {
                    let _ = writeln!(body, "  - {unmet}");
                }
            }
            let _ = writeln!(
                xml,
                "    <testcase {case}>\n      <failure message=\"{}\" type=\"goal not held\">{}</failure>\n    </testcase>",
                escape(&message),
                escape(&body)
            );
        }
        xml.push_str("    <system-out></system-out>\n    <system-err></system-err>\n  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Text for an XML attribute or element: the five special characters escaped, and the
/// characters XML 1.0 cannot carry at all (most controls) replaced.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_the_document_well_formed() {
        assert_eq!(escape("a<b & \"c\"\u{1b}"), "a&lt;b &amp; &quot;c&quot;\u{fffd}");
    }
}
