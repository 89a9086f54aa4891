//! Watching a child process: CPU time and resident memory from `/proc`, sampled until it
//! exits (the last sample is at most one interval before the end).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// Peak resident set (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// Resident set at the last sample, MiB.
    pub rss_mib: f64,
    pub wall: Duration,
}

/// CPU seconds and memory of a running process, now.
pub fn sample(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after the closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    Some(Usage {
        cpu_seconds: (utime + stime) / TICKS_PER_SECOND,
        peak_rss_mib: kib("VmHWM:") / 1024.0,
        rss_mib: kib("VmRSS:") / 1024.0,
        wall: Duration::ZERO,
    })
}

/// Runs `command` to its end, sampling it; its usage and its stdout.
pub async fn run(mut command: Command) -> (Usage, std::process::ExitStatus, String) {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().expect("start the runner");
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let mut last = Usage::default();
    let status = loop {
        // A zombie still reports its CPU times but no memory lines: keep the peak seen.
        if let Some(usage) = sample(pid) {
            last = Usage {
                peak_rss_mib: usage.peak_rss_mib.max(last.peak_rss_mib),
                rss_mib: if usage.rss_mib > 0.0 {
                    usage.rss_mib
                } else {
                    last.rss_mib
                },
                ..usage
            };
        }
        if let Some(status) = child.try_wait().expect("wait for the runner") {
            break status;
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    };
    last.wall = started.elapsed();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        eprintln!("the runner failed ({status}):\n{stderr}");
    }
    (last, status, stdout)
}

/// A child that is killed when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `binary` with `args` in `dir`, its output discarded, killed on drop.
pub fn spawn(binary: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Guard {
    let child = Command::new(binary)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a helper process");
    Guard(child)
}

/// The median of three or more figures.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// Waits until `url` answers (any status).
pub async fn wait_for(url: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get(url).send().await.is_err() {
        assert!(Instant::now() < deadline, "{url} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
