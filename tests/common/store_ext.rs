//! Test-only shortcuts over the library's public API: what tests used to call on the
//! store and the MCP session directly, written here so the library carries none of it.

use chrono::{DateTime, Utc};
use persona_runner::config::McpConfig;
use persona_runner::mcp::{Capabilities, Connect, McpError, McpSession, ToolPolicy};
use persona_runner::model::call::{Call, Completion};
use persona_runner::model::persona::UserKind;
use persona_runner::model::rating::NewRating;
use persona_runner::model::tick::{Tick, TickFinish};
use persona_runner::store::{Store, StoreError, TickFilter};
use uuid::Uuid;

#[allow(async_fn_in_trait)]
pub trait StoreExt {
    /// Ends a running tick with no profile part.
    async fn finish_tick(&self, tick_id: Uuid, finish: &TickFinish) -> Result<Tick, StoreError>;
    /// Stores one rating.
    async fn record_feedback(&self, rating: &NewRating) -> Result<(), StoreError>;
    /// Writes one call.
    async fn record_action(&self, call: &Call) -> Result<(), StoreError>;
    /// Completes a pending call.
    async fn complete_action(&self, done: &Completion) -> Result<bool, StoreError>;
    /// A tick's calls, in order.
    async fn tick_actions(&self, tick_id: Uuid) -> Result<Vec<Call>, StoreError>;
    /// Creates a human user with a new id.
    async fn create_user(&self, tenant: Uuid, email: &str, name: &str, kind: UserKind) -> Result<Uuid, StoreError>;
    /// Keeps one persona's next slot.
    async fn set_next_due(&self, persona_id: Uuid, at: Option<DateTime<Utc>>) -> Result<(), StoreError>;
    /// Scheduled ticks whose slot lies in `[from, to]` (of the default tenant), by slot.
    async fn schedule_ticks(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<persona_runner::model::tick::TickRecord>, StoreError>;
}

impl StoreExt for Store {
    async fn finish_tick(&self, tick_id: Uuid, finish: &TickFinish) -> Result<Tick, StoreError> {
        Ok(self.end_tick(tick_id, finish, None).await?.tick)
    }

    async fn record_feedback(&self, rating: &NewRating) -> Result<(), StoreError> {
        self.record_ratings(vec![rating.clone()]).await
    }

    async fn record_action(&self, call: &Call) -> Result<(), StoreError> {
        self.record_call(call.clone()).await
    }

    async fn complete_action(&self, done: &Completion) -> Result<bool, StoreError> {
        self.complete_call(done.clone()).await
    }

    async fn tick_actions(&self, tick_id: Uuid) -> Result<Vec<Call>, StoreError> {
        self.tick_calls(tick_id).await
    }

    async fn create_user(&self, tenant: Uuid, email: &str, name: &str, kind: UserKind) -> Result<Uuid, StoreError> {
        assert_eq!(kind, UserKind::Human, "tests create human users only");
        let id = Uuid::new_v4();
        self.ensure_user(tenant, id, email, name).await?;
        Ok(id)
    }

    async fn set_next_due(&self, persona_id: Uuid, at: Option<DateTime<Utc>>) -> Result<(), StoreError> {
        self.set_next_due_many(&[(persona_id, at)]).await
    }

    async fn schedule_ticks(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<persona_runner::model::tick::TickRecord>, StoreError> {
        let filter = TickFilter {
            trigger: Some(persona_runner::model::tick::Trigger::Schedule),
            ..TickFilter::default()
        };
        let mut ticks: Vec<_> = self
            .list_ticks(persona_runner::model::persona::DEFAULT_TENANT, &filter, 1_000_000)
            .await?
            .into_iter()
            .filter(|t| t.scheduled_for.is_some_and(|slot| slot >= from && slot <= to))
            .collect();
        ticks.sort_by_key(|t| (t.scheduled_for, t.persona_id, t.attempt));
        Ok(ticks)
    }
}

/// Opens an MCP session with nobody to answer the server's own requests.
pub async fn open_session(
    config: &McpConfig,
    credentials: &persona_runner::auth::Credentials,
) -> Result<McpSession, McpError> {
    let policy = ToolPolicy::new(config);
    McpSession::connect(Connect {
        config,
        policy: &policy,
        credentials,
        persona: "",
        oauth: None,
        agent: None,
        capabilities: Capabilities {
            roots: config.roots.clone(),
            ..Capabilities::default()
        },
    })
    .await
}
