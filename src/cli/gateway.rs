//! `persona-runner sample-gateway`: the bundled sample product (login + MCP gateway).

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Args;
use persona_runner::auth::SeedSecret;
use persona_runner::gateway::{Gateway, GatewayOptions};
use persona_runner::time::HumanDuration;

use super::{App, Outcome};

#[derive(Args)]
pub struct GatewayArgs {
    /// Address to serve HTTP on (login at /api/v1/auth/login, MCP at /mcp).
    #[arg(long, default_value = "127.0.0.1:3071")]
    listen: SocketAddr,
    /// Serve MCP on stdin/stdout instead of HTTP (one user, no login).
    #[arg(long)]
    stdio: bool,
    /// The user of a stdio session.
    #[arg(long, default_value = "stdio@sample.test")]
    user: String,
    /// Lifetime of issued tokens.
    #[arg(long, default_value = "15m")]
    token_ttl: HumanDuration,
    /// Tools per tools/list page.
    #[arg(long, default_value_t = 8)]
    page_size: usize,
    /// Refuse MCP requests without the X-Mana-Space header of the user's personal space.
    #[arg(long)]
    require_space_header: bool,
    /// Also offer the lab tools (lab.*) that exercise an MCP client: forms, sampling,
    /// roots, pictures, a task-only tool, nested models, a crash and a hang.
    #[arg(long)]
    lab: bool,
    /// Only accounts created at /api/v1/auth/signup log in (as a real product would);
    /// `catalog seed --provision` creates them.
    #[arg(long)]
    accounts: bool,
}

pub async fn run(args: GatewayArgs, app: &App) -> Result<Outcome> {
    // The gateway checks passwords derived from the same seed secret the runner uses.
    let seed = SeedSecret::resolve(app.config(), &app.env)?;
    let gateway = Gateway::new(GatewayOptions {
        seed: seed.secret,
        token_ttl: args.token_ttl.0,
        page_size: args.page_size,
        require_space_header: args.require_space_header,
        call_delay: std::time::Duration::ZERO,
        lab: args.lab,
        accounts: args.accounts,
    });
    if args.stdio {
        gateway.serve_stdio(&args.user).await.context("serving MCP on stdio")?;
        return Ok(Outcome::Success);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, "sample gateway serving login at /api/v1/auth/login and MCP at /mcp");
    gateway
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving the sample gateway")?;
    Ok(Outcome::Success)
}
