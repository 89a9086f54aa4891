//! The runner's benchmark: real processes, real store, real sample gateway, a scripted
//! OpenAI-compatible LLM. Each workload runs the release binary as a child and samples its
//! CPU time and resident memory from `/proc`, so the figures are the runner's alone (the
//! gateway and the scripted LLM run in other processes).
//!
//! ```sh
//! cargo bench --bench workload -- all          # every workload, medians of 3
//! cargo bench --bench workload -- scripted     # 200 personas × 20 calls, scripted LLM
//! cargo bench --bench workload -- offline      # 1,000 personas, offline driver
//! cargo bench --bench workload -- scale        # 100,000 personas in the daemon
//! cargo bench --bench workload -- report       # the QA report at 1,000,000 actions
//! cargo bench --bench workload -- pooling      # per-call latency, keep-alive on and off
//! ```
//! Options: `--runs N` (default 3), `--personas N`, `--postgres URL` (a superuser URL:
//! the store workloads run there too), `--busy N` (scale: personas ticking every two
//! minutes, default 400; 0 measures the idle daemon), `--binary PATH` (run another build
//! of the runner, or a wrapper that starts it under `perf record`). The README's Benchmark
//! section has the figures.

mod history;
mod llm;
mod measure;
mod workloads;

use std::path::PathBuf;

fn main() {
    persona_runner::http::install_crypto_provider();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let which = args.first().cloned().unwrap_or_else(|| "all".into());
    let option = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runs: usize = option("--runs").and_then(|v| v.parse().ok()).unwrap_or(3);
    let personas: Option<usize> = option("--personas").and_then(|v| v.parse().ok());
    let postgres = option("--postgres");
    let busy: Option<usize> = option("--busy").and_then(|v| v.parse().ok());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let binary = option("--binary")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_persona-runner")));
    let options = workloads::Options {
        binary,
        runs,
        personas,
        postgres,
        busy,
    };
    runtime.block_on(async move {
        match which.as_str() {
            "scripted" => workloads::scripted(&options).await,
            "offline" => workloads::offline(&options).await,
            "scale" => workloads::scale(&options).await,
            "report" => workloads::report(&options).await,
            "pooling" => workloads::pooling(&options).await,
            "all" => {
                workloads::scripted(&options).await;
                workloads::offline(&options).await;
                workloads::pooling(&options).await;
                workloads::report(&options).await;
                workloads::scale(&options).await;
            }
            other => eprintln!("unknown workload `{other}`: scripted, offline, scale, report, pooling or all"),
        }
    });
}
