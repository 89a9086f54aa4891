//! The daemon's log as operators get it, through the real binary (`run` for a few
//! seconds, then SIGTERM): no escape codes when stderr is a file, colour on a terminal
//! (a pty from `script`) unless `NO_COLOR` is set, journald's priorities and no
//! timestamp under `JOURNAL_STREAM`, and JSON lines unchanged.

mod common;

use std::process::Command;

/// `run` with its own free ports and no sample product, stopped after `seconds`; its
/// stderr (through a pty when `terminal`), and the extra environment `env`.
fn run_daemon(terminal: bool, seconds: u32, env: &[(&str, &str)]) -> String {
    let dir = common::workdir_with_catalogs();
    let api = format!("127.0.0.1:{}", common::free_port());
    let bin = env!("CARGO_BIN_EXE_persona-runner");
    let daemon = format!("timeout -s TERM {seconds} {bin} run");
    let mut cmd = if terminal {
        let mut cmd = Command::new("script");
        // -e: script's own exit status is the command's; its output is the pty's.
        cmd.args(["-qefc", &daemon, "/dev/null"]);
        cmd
    } else {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &daemon]);
        cmd
    };
    cmd.current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PERSONA_RUNNER__API__LISTEN", &api)
        .env("PERSONA_RUNNER__SAMPLE_GATEWAY__ENABLED", "off");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().expect("run the daemon");
    let text = if terminal {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(
        text.contains("persona-runner daemon running") && text.contains("shutting down"),
        "the daemon started and drained: {text}"
    );
    text
}

#[test]
fn a_log_file_has_no_escape_codes_and_each_line_its_timestamp() {
    let log = run_daemon(false, 4, &[]);
    assert!(!log.contains('\u{1b}'), "escape codes in a file: {log:?}");
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        assert!(line.starts_with("20"), "no timestamp: {line}");
    }
}

#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    let coloured = run_daemon(true, 4, &[("TERM", "xterm")]);
    assert!(coloured.contains("\u{1b}["), "no colour on a terminal: {coloured:?}");
    let plain = run_daemon(true, 4, &[("TERM", "xterm"), ("NO_COLOR", "1")]);
    assert!(!plain.contains('\u{1b}'), "colour despite NO_COLOR: {plain:?}");
}

#[test]
fn under_journald_lines_carry_the_priority_and_no_timestamp() {
    let log = run_daemon(false, 4, &[("JOURNAL_STREAM", "8:123456")]);
    assert!(!log.contains('\u{1b}'));
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    for line in &lines {
        let priority = line.strip_prefix('<').and_then(|rest| rest.split_once('>'));
        let (level, rest) = priority.unwrap_or_else(|| panic!("no priority: {line}"));
        assert!(matches!(level, "3" | "4" | "6" | "7"), "{line}");
        assert!(!rest.starts_with("20"), "a timestamp journald already keeps: {line}");
    }
    assert!(
        lines.iter().any(|l| l.starts_with("<6>") && l.contains("INFO")),
        "{log}"
    );
}

#[test]
fn json_lines_keep_their_shape() {
    let log = run_daemon(
        false,
        4,
        &[("PERSONA_RUNNER__LOG__FORMAT", "json"), ("JOURNAL_STREAM", "8:1")],
    );
    let mut seen = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["timestamp", "level", "fields", "target"] {
            assert!(value.get(key).is_some(), "no {key}: {line}");
        }
        seen += 1;
    }
    assert!(seen >= 2, "{log}");
}
