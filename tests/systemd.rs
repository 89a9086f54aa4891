//! The shipped unit passes `systemd-analyze security --offline=yes` with an exposure of at
//! most 1.5 (it is 1.1), and `systemd-analyze verify`. `.ci/run` installs systemd where it is missing.

use std::process::Command;

fn analyze_available() -> bool {
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/persona-runner.service");

#[test]
fn the_unit_is_hardened_to_an_exposure_of_at_most_1_5() {
    assert!(
        analyze_available(),
        "systemd-analyze is missing (apt-get install systemd)"
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", UNIT])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}{}", String::from_utf8_lossy(&out.stderr)));
    let exposure: f64 = line
        .split(':')
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(exposure <= 1.5, "{line}");
}

#[test]
fn the_unit_verifies_cleanly() {
    assert!(
        analyze_available(),
        "systemd-analyze is missing (apt-get install systemd)"
    );
    // verify checks that ExecStart exists: point it at the binary just built.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(UNIT)
        .unwrap()
        .replace("/usr/bin/persona-runner", env!("CARGO_BIN_EXE_persona-runner"));
    let path = dir.path().join("persona-runner.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}
