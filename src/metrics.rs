//! Prometheus metrics of the process, served as text at `/metrics`. One registry per
//! process: the LLM client, the tick runner's events and the scheduler report here.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    ticks: Family<Labels, Counter>,
    tool_calls: Family<Labels, Counter>,
    tick_duration: Histogram,
    tool_latency: Histogram,
    llm_requests: Family<Labels, Counter>,
    llm_retries: Counter,
    llm_tokens: Family<Labels, Counter>,
    scheduler_lag: Histogram,
    personas_due: Gauge,
    personas_running: Gauge,
    personas_scheduled: Gauge,
    store_writable: Gauge,
    store_batch: Histogram,
    scheduler_reload: Histogram,
    llm_tokens_today: Family<Labels, Gauge>,
    llm_budget: Gauge,
    llm_cost_today: Gauge<f64, std::sync::atomic::AtomicU64>,
    trace_spans: Family<Labels, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("persona_runner");
        let ticks = Family::<Labels, Counter>::default();
        registry.register("ticks", "Ticks finished, by status and trigger", ticks.clone());
        let tool_calls = Family::<Labels, Counter>::default();
        registry.register(
            "tool_calls",
            "Tool calls audited, by result and module",
            tool_calls.clone(),
        );
        let tick_duration = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        registry.register("tick_duration_seconds", "Wall time of a tick", tick_duration.clone());
        let tool_latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "tool_latency_seconds",
            "Latency of tool calls that reached the gateway",
            tool_latency.clone(),
        );
        let llm_requests = Family::<Labels, Counter>::default();
        registry.register(
            "llm_requests",
            "Chat-completion attempts, by HTTP status class",
            llm_requests.clone(),
        );
        let llm_retries = Counter::default();
        registry.register(
            "llm_retries",
            "Chat-completion attempts that were retried",
            llm_retries.clone(),
        );
        let llm_tokens = Family::<Labels, Counter>::default();
        registry.register("llm_tokens", "LLM tokens, by direction (in, out)", llm_tokens.clone());
        let scheduler_lag = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register(
            "scheduler_lag_seconds",
            "How late a scheduled tick started (now minus due)",
            scheduler_lag.clone(),
        );
        let personas_due = Gauge::default();
        registry.register(
            "personas_due",
            "Personas due and waiting for a free worker",
            personas_due.clone(),
        );
        let personas_running = Gauge::default();
        registry.register(
            "personas_running",
            "Ticks running in this process",
            personas_running.clone(),
        );
        let personas_scheduled = Gauge::default();
        registry.register(
            "personas_scheduled",
            "Personas the scheduler keeps a plan for",
            personas_scheduled.clone(),
        );
        let store_writable = Gauge::default();
        store_writable.set(1);
        registry.register(
            "store_writable",
            "1 while the store takes writes, 0 during an outage (no tick is claimed then)",
            store_writable.clone(),
        );
        let store_batch = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "store_batch_writes",
            "Audit writes committed together by the store's writer",
            store_batch.clone(),
        );
        let scheduler_reload = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "scheduler_reload_seconds",
            "Time to load what changed in the personas since the last reload",
            scheduler_reload.clone(),
        );
        let llm_tokens_today = Family::<Labels, Gauge>::default();
        registry.register(
            "llm_tokens_today",
            "LLM tokens spent since 00:00 UTC by every runner of the store, by direction (in, out)",
            llm_tokens_today.clone(),
        );
        let llm_budget = Gauge::default();
        registry.register(
            "llm_budget_tokens_per_day",
            "The daily spend cap in tokens (budget.tokens_per_day; 0 = none)",
            llm_budget.clone(),
        );
        let llm_cost_today = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "llm_cost_today",
            "Today's LLM spend in budget.currency at the configured prices (0 without prices)",
            llm_cost_today.clone(),
        );
        let trace_spans = Family::<Labels, Counter>::default();
        registry.register(
            "trace_spans",
            "Trace spans by fate: exported, or dropped because the queue was full or the export failed",
            trace_spans.clone(),
        );
        Self {
            registry,
            trace_spans,
            llm_tokens_today,
            llm_budget,
            llm_cost_today,
            ticks,
            tool_calls,
            tick_duration,
            tool_latency,
            llm_requests,
            llm_retries,
            llm_tokens,
            scheduler_lag,
            personas_due,
            personas_running,
            personas_scheduled,
            store_writable,
            store_batch,
            scheduler_reload,
        }
    }

    /// Today's spend against the cap, read from the store when the metrics are scraped.
    pub fn spend_today(&self, tokens_in: i64, tokens_out: i64, cap: u64, cost: Option<f64>) {
        for (direction, tokens) in [("in", tokens_in), ("out", tokens_out)] {
            self.llm_tokens_today
                .get_or_create(&vec![("direction", direction.to_string())])
                .set(tokens);
        }
        self.llm_budget.set(i64::try_from(cap).unwrap_or(i64::MAX));
        self.llm_cost_today.set(cost.unwrap_or(0.0));
    }

    pub fn tick_finished(&self, status: &str, trigger: &str, duration: Duration, tokens_in: i64, tokens_out: i64) {
        self.ticks
            .get_or_create(&vec![("status", status.to_string()), ("trigger", trigger.to_string())])
            .inc();
        self.tick_duration.observe(duration.as_secs_f64());
        if tokens_in > 0 {
            self.llm_tokens
                .get_or_create(&vec![("direction", "in".into())])
                .inc_by(tokens_in as u64);
        }
        if tokens_out > 0 {
            self.llm_tokens
                .get_or_create(&vec![("direction", "out".into())])
                .inc_by(tokens_out as u64);
        }
    }

    pub fn tool_call(&self, result: &str, module: &str, latency: Option<Duration>) {
        self.tool_calls
            .get_or_create(&vec![("result", result.to_string()), ("module", module.to_string())])
            .inc();
        if let Some(latency) = latency {
            self.tool_latency.observe(latency.as_secs_f64());
        }
    }

    pub fn llm_attempt(&self, status: Option<u16>) {
        let class = match status {
            Some(code) => format!("{}xx", code / 100),
            None => "transport_error".into(),
        };
        self.llm_requests.get_or_create(&vec![("status", class)]).inc();
    }

    pub fn llm_retry(&self) {
        self.llm_retries.inc();
    }

    pub fn scheduler_lag(&self, lag: Duration) {
        self.scheduler_lag.observe(lag.as_secs_f64());
    }

    pub fn load(&self, due: usize, running: usize) {
        self.personas_due.set(due as i64);
        self.personas_running.set(running as i64);
    }

    pub fn scheduled(&self, personas: usize) {
        self.personas_scheduled.set(personas as i64);
    }

    pub fn store_writable(&self, writable: bool) {
        self.store_writable.set(i64::from(writable));
    }

    pub fn store_batch(&self, writes: usize) {
        self.store_batch.observe(writes as f64);
    }

    pub fn scheduler_reload(&self, took: Duration) {
        self.scheduler_reload.observe(took.as_secs_f64());
    }

    /// Spans that reached the collector (`exported`), or were dropped (`queue_full`,
    /// `export_failed`).
    pub fn trace_spans(&self, fate: &'static str, spans: usize) {
        self.trace_spans
            .get_or_create(&vec![("fate", fate.to_string())])
            .inc_by(spans as u64);
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}
