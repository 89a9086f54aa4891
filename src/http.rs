//! Outbound HTTP: one way to build clients and one retry policy for every call of ours
//! (login, session lookups, the LLM). Tool calls go through MCP and are never retried
//! here: a call that may have executed must not run twice.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::config::RetryConfig;

/// Installs the ring crypto provider for rustls once (the only TLS stack we build).
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether connections are kept alive and reused (`http.keep_alive`), set once at start.
static KEEP_ALIVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
/// Whether same-origin redirects are followed (`http.follow_redirects`).
static FOLLOW_REDIRECTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Applies the `[http]` settings to every client built from now on.
pub fn configure(config: &crate::config::HttpConfig) {
    KEEP_ALIVE.store(config.keep_alive, std::sync::atomic::Ordering::Relaxed);
    FOLLOW_REDIRECTS.store(config.follow_redirects, std::sync::atomic::Ordering::Relaxed);
}

/// A redirect we refused to follow: to another origin (what we send would go with it:
/// a login's password, a token, a key), or one too many.
#[derive(Debug)]
pub enum RedirectRefused {
    CrossOrigin { to: String },
    TooMany(usize),
    NotFollowed { to: String },
}

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CrossOrigin { to } => write!(
                f,
                "it redirected to another origin ({to}), which is not followed: credentials stay with their origin"
            ),
            Self::TooMany(n) => write!(f, "it redirected more than {n} times (a redirect loop?)"),
            Self::NotFollowed { to } => {
                write!(f, "it redirected to {to}, and http.follow_redirects is off")
            }
        }
    }
}

impl std::error::Error for RedirectRefused {}

/// Redirects within the first URL's origin, at most 10; none across origins.
fn redirect_policy() -> reqwest::redirect::Policy {
    const MAX: usize = 10;
    let follow = FOLLOW_REDIRECTS.load(std::sync::atomic::Ordering::Relaxed);
    reqwest::redirect::Policy::custom(move |attempt| {
        let to = display_url(attempt.url().as_str());
        let first = attempt.previous().first().map(|url| url.origin());
        if first.is_some_and(|origin| origin != attempt.url().origin()) {
            return attempt.error(RedirectRefused::CrossOrigin { to });
        }
        if !follow {
            return attempt.error(RedirectRefused::NotFollowed { to });
        }
        if attempt.previous().len() > MAX {
            return attempt.error(RedirectRefused::TooMany(MAX));
        }
        attempt.follow()
    })
}

/// A client for our outbound calls (login, lookups, the LLM, JWKS).
pub fn client(timeout: Duration) -> reqwest::Client {
    builder(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .build()
        .expect("a reqwest client with static settings builds")
}

/// The settings every client of ours shares (TLS provider, keep-alive, user agent), for a
/// client that sets its own timeouts.
///
/// Connections are reused, with `TCP_NODELAY`: a request is written at once, never held
/// back by Nagle's algorithm waiting for the server's (delayed) ACK, the 40 ms stall a
/// pooled connection showed without it. `http.keep_alive = false` opens one connection per
/// request instead (to diagnose a proxy that mishandles keep-alive).
pub fn builder(connect_timeout: Duration) -> reqwest::ClientBuilder {
    install_crypto_provider();
    let builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .redirect(redirect_policy())
        .tcp_nodelay(true)
        .user_agent(concat!("persona-runner/", env!("CARGO_PKG_VERSION")));
    if KEEP_ALIVE.load(std::sync::atomic::Ordering::Relaxed) {
        builder.pool_idle_timeout(Duration::from_secs(60))
    } else {
        builder.pool_max_idle_per_host(0)
    }
}

/// The most of a response body we read (login, lookups, JWKS): a server that sends more
/// gets an error, not our memory.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Reads a body of at most `limit` bytes.
pub async fn read_bytes(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(format!("the response is larger than {} KiB", limit / 1024));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|err| describe(&err))? {
        if body.len() + chunk.len() > limit {
            return Err(format!("the response is larger than {} KiB", limit / 1024));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads a JSON body of at most `limit` bytes.
pub async fn read_json<T: serde::de::DeserializeOwned>(response: reqwest::Response, limit: usize) -> Result<T, String> {
    let body = read_bytes(response, limit).await?;
    serde_json::from_slice(&body).map_err(|err| format!("the response is not the expected JSON: {err}"))
}

/// Reads a text body of at most `limit` bytes (invalid UTF-8 replaced).
pub async fn read_text(response: reqwest::Response, limit: usize) -> Result<String, String> {
    let body = read_bytes(response, limit).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Whether a response status is worth another attempt: rate limited or server-side.
pub fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Whether a transport error is worth another attempt: the request never completed.
pub fn retryable_error(err: &reqwest::Error) -> bool {
    err.is_connect() || err.is_timeout()
}

/// A reqwest error's message without its URL (which may carry query secrets), for errors
/// we show or store. (reqwest already strips the URL's password.)
pub fn describe(err: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<RedirectRefused>() {
            return refused.to_string();
        }
        source = cause.source();
    }
    if err.is_timeout() {
        return if err.is_body() || err.is_decode() {
            "the answer did not arrive in time (the timeout ran out while the body was still coming)".into()
        } else {
            "no answer in time (the timeout ran out)".into()
        };
    }
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    // The root cause in words ("Connection refused"), not reqwest's outer layer alone.
    let mut cause = err.source();
    let mut root = None;
    while let Some(next) = cause {
        root = Some(next.to_string());
        cause = next.source();
    }
    // "error sending request for url (<url>)" says nothing the caller's words do not.
    if err.is_connect() {
        return match root {
            Some(root) => format!("the connection failed: {}", crate::redact::plain_debug(&root)),
            None => "the connection failed".into(),
        };
    }
    match root {
        Some(root) if !text.contains(&root) => format!("{text}: {}", crate::redact::plain_debug(&root)),
        _ => text,
    }
}

/// A configured URL as errors and logs show it: without user info and query, where
/// credentials may sit (`https://user:key@host/path?token=…` → `https://host/path?…`).
pub fn display_url(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((url, _)) => (url, "?…"),
        None => (url, ""),
    };
    let shown = match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let host = rest[..authority_end]
                .rsplit_once('@')
                .map_or(&rest[..authority_end], |(_, host)| host);
            format!("{scheme}://{host}{}", &rest[authority_end..])
        }
        None => url.to_string(),
    };
    format!("{shown}{query}")
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds >= 0.0 && seconds.is_finite()).then(|| Duration::from_secs_f64(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().ok()
}

/// The retry policy: exponential backoff with jitter, capped, `Retry-After` honoured.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    config: RetryConfig,
}

/// One failed attempt, as the policy sees it.
#[derive(Debug)]
pub enum Attempt<T> {
    /// Worth retrying; `retry_after` overrides the backoff delay when the server said so.
    Retry { last: T, retry_after: Option<Duration> },
    /// Final.
    Fail(T),
}

impl RetryPolicy {
    pub fn new(config: &RetryConfig) -> Self {
        Self { config: config.clone() }
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.config.initial_delay.0)
            .with_max_delay(self.config.max_delay.0)
            .with_max_times(self.config.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts are used up
    /// (`Err` then carries the last failure).
    pub async fn run<T, E, F, Fut>(&self, what: &str, attempt: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt<E>>>,
    {
        let max_delay = self.config.max_delay.0;
        let result = attempt
            .retry(self.backoff())
            .sleep(tokio::time::sleep)
            .when(|failure: &Attempt<E>| matches!(failure, Attempt::Retry { .. }))
            // `delay` is None once the attempts are used up: keep it None, or we would
            // retry forever.
            .adjust(move |failure: &Attempt<E>, delay| match (failure, delay) {
                (
                    Attempt::Retry {
                        retry_after: Some(wait),
                        ..
                    },
                    Some(_),
                ) => Some((*wait).min(max_delay)),
                _ => delay,
            })
            .notify(|_, delay: Duration| tracing::debug!(what, ?delay, "retrying"))
            .await;
        result.map_err(|failure| match failure {
            Attempt::Retry { last, .. } | Attempt::Fail(last) => last,
        })
    }

    /// Sends the request `build` makes, retrying what is retryable. Gives back the final
    /// response (which may still be an error status) or the final transport error.
    pub async fn send(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let outcome = self
            .run(what, || async {
                let mut headers = reqwest::header::HeaderMap::new();
                crate::telemetry::inject(&mut headers);
                match build().headers(headers).send().await {
                    Ok(response) if retryable_status(response.status()) => {
                        let retry_after = retry_after(response.headers());
                        Err(Attempt::Retry {
                            last: Ok(response),
                            retry_after,
                        })
                    }
                    Ok(response) => Ok(response),
                    Err(err) if retryable_error(&err) => Err(Attempt::Retry {
                        last: Err(err),
                        retry_after: None,
                    }),
                    Err(err) => Err(Attempt::Fail(Err(err))),
                }
            })
            .await;
        match outcome {
            Ok(response) => Ok(response),
            // Out of attempts: the last response (an error status) or transport error.
            Err(last) => last,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_urls_are_shown_without_credentials() {
        assert_eq!(
            display_url("https://runner:k3y@auth.example/api/v1/auth/login?token=k3y&x=1"),
            "https://auth.example/api/v1/auth/login?…"
        );
        assert_eq!(display_url("http://127.0.0.1:3071/mcp"), "http://127.0.0.1:3071/mcp");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        headers.insert(RETRY_AFTER, later.parse().unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn only_rate_limits_and_server_errors_are_retryable() {
        assert!(retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(retryable_status(StatusCode::BAD_GATEWAY));
        assert!(!retryable_status(StatusCode::BAD_REQUEST));
        assert!(!retryable_status(StatusCode::UNAUTHORIZED));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_and_honours_retry_after() {
        let policy = RetryPolicy::new(&RetryConfig {
            max_attempts: 3,
            initial_delay: crate::time::HumanDuration(Duration::from_millis(10)),
            max_delay: crate::time::HumanDuration::from_secs(5),
        });
        let started = tokio::time::Instant::now();
        let mut attempts = 0;
        let result: Result<(), u32> = policy
            .run("test", || {
                attempts += 1;
                let n = attempts;
                async move {
                    Err(Attempt::Retry {
                        last: n,
                        retry_after: Some(Duration::from_secs(60)),
                    })
                }
            })
            .await;
        assert_eq!(result, Err(3));
        // Two waits, each the server's 60 s capped at max_delay (5 s).
        assert_eq!(started.elapsed(), Duration::from_secs(10));

        let mut attempts = 0;
        let result: Result<(), &str> = policy
            .run("test", || {
                attempts += 1;
                async { Err(Attempt::Fail("bad request")) }
            })
            .await;
        assert_eq!((result, attempts), (Err("bad request"), 1));
    }
}
