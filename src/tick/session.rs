//! Logging in and opening the MCP session of a tick, with the tool policy applied (the
//! tools offered, schemas compiled once per process; the ones withheld and why; the
//! persona that answers the server's own requests), then handing the tick to its driver.

use std::sync::Arc;

use serde_json::{Value, json};

use super::agent::PersonaAgent;
use super::state::TickState;
use super::{CallContext, Driver, TickError, TickRunner, prompt};
use crate::mcp::{Capabilities, Connect, McpError, McpSession};
use crate::telemetry::{Kind, Span, semconv};

impl TickRunner {
    pub(super) async fn connect(&self, ctx: &CallContext<'_>, state: &mut TickState) -> Result<(), TickError> {
        let email = ctx.persona.email.as_deref().unwrap_or_default();
        let product = self.products.of(ctx.persona);
        let login = Span::child(semconv::LOGIN, Kind::Client, Vec::new());
        let credentials = login
            .run(product.auth.credentials(email))
            .await
            .inspect_err(|err| login.fail(err.kind(), "the login failed"))?;
        drop(login);
        // Before the session opens: an error opening it may already echo the token.
        state.remember(&credentials);
        let shared = self.space_settings(ctx.space, ctx.label, product, &credentials).await?;
        let mcp = match &shared {
            Some((id, mcp)) => {
                state.space_id = Some(id.clone());
                mcp
            }
            None => &product.mcp,
        };
        if let Some(name) = ctx.space {
            state
                .transcript
                .push("space", json!({"name": name, "id": state.space_id}));
        }
        if state.server_requests.is_none() {
            state.server_requests = Some(Arc::new(super::agent::ServerRequests::new(
                product.mcp.max_server_requests_per_call,
                product.mcp.max_server_requests_per_tick,
            )));
        }
        let agent = self.agent(ctx, state);
        state.agent = Some(agent.clone());
        let connect = Span::child(semconv::CONNECT, Kind::Internal, Vec::new());
        let opened = connect
            .run(self.open_session(product, mcp, email, &credentials, &agent))
            .await;
        let session = match opened {
            Err(McpError::Unauthorized {
                credentials_sent: true, ..
            }) if !state.reauthenticated && credentials.token.is_some() => {
                state.reauthenticated = true;
                tracing::info!(email, "gateway refused the cached token; logging in again");
                product.auth.invalidate(email);
                let fresh = product.auth.credentials(email).await?;
                state.remember(&fresh);
                connect
                    .run(self.open_session(product, mcp, email, &fresh, &agent))
                    .await
            }
            other => other,
        };
        let session = session.inspect_err(|err| connect.fail(err.kind(), "the MCP session did not open"))?;
        drop(connect);
        for secret in session.secrets() {
            crate::redact::register(&secret);
            if !state.redact.contains(&secret) {
                state.redact.push(secret);
            }
        }
        state.offered.clear();
        state.withheld.clear();
        state.validators.clear();
        for tool in session.tools() {
            match product.policy.check(tool) {
                Ok(()) => {
                    match self.validator(&tool.input_schema) {
                        Ok(validator) => {
                            state.validators.insert(tool.name.clone(), validator);
                        }
                        Err(err) => {
                            tracing::warn!(tool = %tool.name, %err, "tool schema is not a valid JSON Schema; arguments go unchecked")
                        }
                    }
                    state.offered.push(tool.clone());
                }
                Err(reason) => {
                    state.withheld.insert(tool.name.clone(), reason.to_string());
                }
            }
        }
        state.protocol_version = session.protocol_version();
        // The tool list as the persona got it: what was withheld, and why.
        let mut withheld: Vec<(&String, &String)> = state.withheld.iter().collect();
        withheld.sort();
        state.transcript.push(
            "tools",
            json!({
                "protocol_version": state.protocol_version,
                "offered": state.offered.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
                "withheld": withheld.into_iter().map(|(tool, reason)| json!({"tool": tool, "reason": reason})).collect::<Vec<_>>(),
            }),
        );
        state.session = Some(session);
        Ok(())
    }

    async fn open_session(
        &self,
        product: &super::product::Product,
        mcp: &crate::config::McpConfig,
        email: &str,
        credentials: &crate::auth::Credentials,
        agent: &Arc<PersonaAgent>,
    ) -> Result<McpSession, McpError> {
        McpSession::connect(Connect {
            config: mcp,
            policy: &product.policy,
            credentials,
            persona: email,
            oauth: product.oauth.clone(),
            agent: Some(agent.clone() as Arc<dyn crate::mcp::Agent>),
            capabilities: Capabilities {
                elicitation: mcp.elicitation,
                sampling: mcp.sampling && matches!(self.driver, Driver::Llm(_)),
                roots: mcp.roots.clone(),
            },
        })
        .await
    }

    /// The persona as it answers the server's own requests during this tick.
    fn agent(&self, ctx: &CallContext<'_>, state: &TickState) -> Arc<PersonaAgent> {
        let (llm, seed) = match &self.driver {
            Driver::Llm(llm) => (Some(llm.clone()), 0),
            Driver::Offline { seed, .. } => (None, *seed),
        };
        Arc::new(PersonaAgent {
            store: self.store.clone(),
            llm,
            tenant_id: ctx.persona.tenant_id,
            tick_id: ctx.tick_id,
            persona_id: ctx.persona.id,
            space: ctx.space.map(str::to_string),
            system_prompt: prompt::system_prompt(ctx.persona, crate::time::now(), ""),
            seq: state.seq.clone(),
            spend: state.spend.clone(),
            budget: self.config.tick.max_tokens_per_tick,
            redact: state.redact.clone(),
            seed,
            module: Default::default(),
            notes: Default::default(),
            failure: Default::default(),
            requests: state
                .server_requests
                .clone()
                .unwrap_or_else(|| Arc::new(super::agent::ServerRequests::new(0, 0))),
        })
    }

    /// The compiled validator of a tool schema, from the cache when seen before.
    fn validator(&self, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        if let Some(found) = self.validators.lock().expect("validator cache").get(schema) {
            return Ok(found.clone());
        }
        // Formats stay annotations (JSON Schema's default): the product judges them, as
        // products differ in how strictly they read a `date`.
        let compiled = Arc::new(jsonschema::validator_for(schema).map_err(|e| e.to_string())?);
        self.validators
            .lock()
            .expect("validator cache")
            .insert(schema, compiled.clone());
        Ok(compiled)
    }

    pub(super) async fn play(&self, ctx: &CallContext<'_>, state: &mut TickState) -> Result<(), TickError> {
        // Fault injection for the reliability suite (debug builds only): a tick that panics.
        #[cfg(debug_assertions)]
        if std::env::var("PERSONA_RUNNER_FAULT_PANIC")
            .is_ok_and(|who| Some(who.as_str()) == ctx.persona.email.as_deref())
        {
            panic!("injected fault: a panic in the tick of {}", ctx.label);
        }
        self.connect(ctx, state).await?;
        match &self.driver {
            Driver::Llm(llm) => self.play_llm(llm, ctx, state).await?,
            Driver::Offline { seed, chaos } => self.play_offline(*seed, *chaos, ctx, state).await?,
        }
        // A check tick: the runner reads the product's state for the goal's state checks.
        self.read_state(ctx, state).await
    }
}
