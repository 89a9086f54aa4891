//! A stdio MCP server as a child process. It starts with a clean environment: only an
//! allowlist of the runner's variables (PATH, HOME, LANG, LC_*, TZ, TMPDIR) and
//! `mcp.inherit_env` pass, plus `mcp.env`, so the product under test never sees the
//! runner's secrets. Its stderr is kept (the last few KiB) to say why it failed, its
//! stdout is read for rmcp with `tools/list` answers inspected on the way, and its whole
//! process group is killed when the session ends.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use process_wrap::tokio::{CommandWrap, KillOnDrop, ProcessGroup};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, ReadBuf};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::oneshot;

use super::http::TaskTools;
use crate::config::McpConfig;

/// Variables every stdio server gets from the runner's environment, if set.
const ALLOWED: &[&str] = &["PATH", "HOME", "LANG", "TZ", "TMPDIR"];
/// Bytes of stderr kept.
const STDERR_TAIL: usize = 4096;
/// The longest stdout line inspected (longer ones pass through uninspected).
const MAX_LINE: usize = 16 * 1024 * 1024;
/// How long a server has to exit after its stdin closed, before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Whether the runner's variable `name` passes to a stdio server.
pub(super) fn inherited(name: &str, config: &McpConfig) -> bool {
    ALLOWED.contains(&name) || name.starts_with("LC_") || config.inherit_env.iter().any(|v| v == name)
}

/// What the runner knows about its child: its exit, its last words.
#[derive(Default)]
pub(super) struct Observed {
    exit: Mutex<Option<ExitStatus>>,
    stderr: Mutex<VecDeque<u8>>,
    /// The first line of stdout that was not JSON.
    noise: Mutex<Option<String>>,
}

impl Observed {
    /// Waits a little for the child's exit to be recorded (after its pipes closed).
    pub(super) async fn settle(&self) {
        for _ in 0..50 {
            if self.exit.lock().expect("exit lock").is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How the server ended and what it said, for an error message ("" if nothing).
    pub(super) fn account(&self) -> String {
        let mut parts = Vec::new();
        if let Some(status) = *self.exit.lock().expect("exit lock") {
            parts.push(format!("the server exited ({status})"));
        }
        if let Some(noise) = self.noise.lock().expect("noise lock").as_ref() {
            parts.push(format!("its output is not MCP JSON-RPC: `{noise}`"));
        }
        let stderr = self.stderr.lock().expect("stderr lock");
        if !stderr.is_empty() {
            let bytes: Vec<u8> = stderr.iter().copied().collect();
            let text = String::from_utf8_lossy(&bytes);
            let last: Vec<&str> = text.lines().rev().filter(|l| !l.trim().is_empty()).take(5).collect();
            if !last.is_empty() {
                let last: Vec<&str> = last.into_iter().rev().collect();
                parts.push(format!("its stderr ends: {}", last.join(" | ")));
            }
        }
        parts.join("; ")
    }
}

/// A running stdio server.
pub(super) struct Child {
    pub observed: Arc<Observed>,
    kill: Option<oneshot::Sender<()>>,
    exited: Option<tokio::task::JoinHandle<()>>,
}

impl Child {
    /// Waits a moment for the server to exit on its own (its stdin is closed), then
    /// kills its process group.
    pub(super) async fn stop(mut self) {
        if let Some(exited) = self.exited.take() {
            let mut exited = exited;
            if tokio::time::timeout(EXIT_GRACE, &mut exited).await.is_err() {
                if let Some(kill) = self.kill.take() {
                    let _ = kill.send(());
                }
                let _ = exited.await;
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }
}

/// The environment variable marking every process of one stdio session.
const SESSION_MARK: &str = "PERSONA_RUNNER_STDIO_SESSION";

/// Kills every process that carries the session's mark: what the server started and left
/// running, in its process group or in one of its own.
fn kill_marked(mark: &str) {
    let needle = format!("{SESSION_MARK}={mark}\0");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let marked = std::fs::read(entry.path().join("environ"))
            .is_ok_and(|environ| environ.windows(needle.len()).any(|w| w == needle.as_bytes()));
        if marked {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Starts `mcp.command`; the child and the two ends rmcp talks over.
pub(super) fn spawn(
    config: &McpConfig,
    tasks: Arc<TaskTools>,
) -> std::io::Result<(Child, Tap<ChildStdout>, ChildStdin)> {
    let (program, args) = config
        .command
        .split_first()
        .ok_or_else(|| std::io::Error::other("mcp.command is empty"))?;
    let mut command = tokio::process::Command::new(program);
    command.args(args).env_clear();
    let inherited: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(name, _)| name.to_str().is_some_and(|n| inherited(n, config)))
        .collect();
    command.envs(inherited).envs(&config.env);
    // Every process the server starts inherits this mark (unless it scrubs its
    // environment), so what escaped its process group still ends with the session.
    let mark = uuid::Uuid::new_v4().simple().to_string();
    command.env(SESSION_MARK, &mark);
    if let Some(dir) = &config.working_dir {
        command.current_dir(dir);
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut wrapped = CommandWrap::from(command);
    wrapped.wrap(ProcessGroup::leader()).wrap(KillOnDrop);
    let mut child = wrapped.spawn()?;
    let stdout = child
        .stdout()
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
    let stdin = child
        .stdin()
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin pipe"))?;
    let stderr = child.stderr().take();
    let observed = Arc::new(Observed::default());
    if let Some(stderr) = stderr {
        let observed = observed.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).split(b'\n');
            while let Ok(Some(mut line)) = lines.next_segment().await {
                line.push(b'\n');
                let mut tail = observed.stderr.lock().expect("stderr lock");
                tail.extend(line);
                while tail.len() > STDERR_TAIL {
                    tail.pop_front();
                }
            }
        });
    }
    let (kill, killed) = oneshot::channel::<()>();
    let exited = {
        let observed = observed.clone();
        tokio::spawn(async move {
            let mut killed = killed;
            let status = tokio::select! {
                status = child.wait() => status.ok(),
                _ = &mut killed => None,
            };
            let status = match status {
                Some(status) => {
                    // The leader is gone, its group may not be: what it started in the
                    // group (and left behind on its way out) ends with the session too.
                    let _ = child.start_kill();
                    Some(status)
                }
                None => {
                    let _ = child.start_kill();
                    child.wait().await.ok()
                }
            };
            let _ = tokio::task::spawn_blocking(move || kill_marked(&mark)).await;
            *observed.exit.lock().expect("exit lock") = status;
        })
    };
    let tap = Tap {
        inner: stdout,
        line: Vec::new(),
        skipping: false,
        tasks,
        observed: observed.clone(),
    };
    Ok((
        Child {
            observed,
            kill: Some(kill),
            exited: Some(exited),
        },
        tap,
        stdin,
    ))
}

/// The server's stdout on its way to rmcp, read line by line: `tools/list` answers are
/// inspected for task-required tools, and the first line that is not JSON is kept.
pub(super) struct Tap<R> {
    inner: R,
    line: Vec<u8>,
    /// The current line is over `MAX_LINE`: it passes uninspected.
    skipping: bool,
    tasks: Arc<TaskTools>,
    observed: Arc<Observed>,
}

impl<R> Tap<R> {
    fn scan(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let end = bytes.iter().position(|b| *b == b'\n');
            let (part, rest) = match end {
                Some(at) => (&bytes[..at], Some(&bytes[at + 1..])),
                None => (bytes, None),
            };
            if !self.skipping {
                if self.line.len() + part.len() > MAX_LINE {
                    self.skipping = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(part);
                }
            }
            match rest {
                Some(rest) => {
                    self.finish_line();
                    bytes = rest;
                }
                None => break,
            }
        }
    }

    fn finish_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        self.skipping = false;
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            return;
        }
        if !trimmed.starts_with(b"{") {
            let mut noise = self.observed.noise.lock().expect("noise lock");
            if noise.is_none() {
                let text = String::from_utf8_lossy(&trimmed[..trimmed.len().min(120)]).into_owned();
                *noise = Some(text);
            }
            return;
        }
        if memchr_contains(trimmed, b"taskSupport")
            && let Ok(value) = serde_json::from_slice::<serde_json::Value>(trimmed)
        {
            self.tasks.record(&value);
        }
    }
}

fn memchr_contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

impl<R: AsyncRead + Unpin> AsyncRead for Tap<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let read = buf.filled()[before..].to_vec();
            this.scan(&read);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_allowlist_and_named_variables_pass() {
        let config = McpConfig {
            inherit_env: vec!["PYTHONPATH".into()],
            ..McpConfig::default()
        };
        for name in ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH"] {
            assert!(inherited(name, &config), "{name}");
        }
        for name in [
            "PERSONA_SEED_SECRET",
            "PERSONA_RUNNER_ADMIN_TOKEN",
            "OPENAI_API_KEY",
            "PERSONA_RUNNER__DATABASE__URL",
            "NOTIFY_SOCKET",
            "USER",
        ] {
            assert!(!inherited(name, &config), "{name}");
        }
    }

    #[test]
    fn the_tap_sees_task_tools_across_reads_and_keeps_the_first_noise() {
        let tasks = Arc::new(TaskTools::default());
        let mut tap = Tap {
            inner: tokio::io::empty(),
            line: Vec::new(),
            skipping: false,
            tasks: tasks.clone(),
            observed: Arc::new(Observed::default()),
        };
        let answer = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"export","inputSchema":{},"execution":{"taskSupport":"required"}}]}}"#;
        tap.scan(b"garbage line\n");
        tap.scan(&answer[..30]);
        tap.scan(&answer[30..]);
        tap.scan(b"\nmore garbage\n");
        assert!(tasks.contains("export"));
        assert_eq!(tap.observed.noise.lock().unwrap().as_deref(), Some("garbage line"));
    }
}
