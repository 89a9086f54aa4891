-- persona-runner schema, SQLite flavour. Keep column-for-column in step with
-- migrations/postgres/0001_init.sql: the same store test suite runs on both.
--
-- Conventions (see ARCHITECTURE.md): ids are UUIDs bound by sqlx as 16-byte
-- BLOBs; timestamps are bound from Rust as RFC 3339 UTC text (which sorts
-- chronologically), never defaulted in SQL; JSON columns hold TEXT.

CREATE TABLE tenants (
    id          BLOB PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

-- The default tenant every single-tenant install uses.
INSERT INTO tenants (id, name, created_at)
VALUES (X'00000000000000000000000000000001', 'default', '1970-01-01T00:00:00+00:00');

CREATE TABLE users (
    id          BLOB PRIMARY KEY NOT NULL,
    tenant_id   BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email       TEXT NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 320),
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL DEFAULT 'human' CHECK (kind IN ('human', 'persona', 'system')),
    created_at  TEXT NOT NULL,
    UNIQUE (tenant_id, email)
);
CREATE INDEX users_tenant_kind ON users (tenant_id, kind);

CREATE TABLE personas (
    id                     BLOB PRIMARY KEY NOT NULL,
    tenant_id              BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    -- The identity the runner logs in as. NULL for a profile-only role persona.
    user_id                BLOB UNIQUE REFERENCES users(id) ON DELETE CASCADE,
    -- Runner fields
    archetype              TEXT NOT NULL,
    system_prompt          TEXT NOT NULL,
    module_mix             TEXT NOT NULL,
    tick_cadence           TEXT NOT NULL,
    time_zone              TEXT NOT NULL,
    locale                 TEXT,
    paused                 INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    last_active_at         TEXT,
    -- Kept by the scheduler so a restart knows when the persona is due next.
    next_due_at            TEXT,
    -- Profile-store fields
    name                   TEXT NOT NULL,
    description            TEXT,
    flow                   TEXT CHECK (flow IN ('S&OP', 'Financial')),
    role_index             INTEGER CHECK (role_index >= 1),
    primary_authority      TEXT,
    decision_focus         TEXT,
    primary_dashboard      TEXT,
    key_metrics            TEXT NOT NULL DEFAULT '[]',
    detail_level           TEXT CHECK (detail_level IN ('executive', 'medium', 'high')),
    headline_type          TEXT CHECK (headline_type IN ('impact', 'variance', 'forecast', 'anomaly')),
    hero_chart_type        TEXT,
    context_factors        TEXT NOT NULL DEFAULT '[]',
    required_data_sources  TEXT NOT NULL DEFAULT '[]',
    actions                TEXT NOT NULL DEFAULT '[]',
    default_profile        TEXT,
    page_templates         TEXT NOT NULL DEFAULT '[]',
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX personas_tenant_flow ON personas (tenant_id, flow);
-- Due personas: the scheduler scans runnable personas by next due time.
CREATE INDEX personas_due ON personas (paused, next_due_at) WHERE user_id IS NOT NULL;

CREATE TABLE persona_ticks (
    id                BLOB PRIMARY KEY NOT NULL,
    tenant_id         BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    persona_id        BLOB NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    trigger           TEXT NOT NULL CHECK (trigger IN ('schedule', 'signal', 'cli', 'api')),
    scheduled_for     TEXT,
    attempt           INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    started_at        TEXT NOT NULL,
    finished_at       TEXT,
    status            TEXT NOT NULL DEFAULT 'running'
                      CHECK (status IN ('running', 'ok', 'failed', 'timeout', 'abandoned')),
    error             TEXT,
    runner_id         TEXT NOT NULL,
    lease_expires_at  TEXT NOT NULL,
    llm_model         TEXT,
    prompt_version    TEXT,
    tokens_in         INTEGER NOT NULL DEFAULT 0 CHECK (tokens_in >= 0),
    tokens_out        INTEGER NOT NULL DEFAULT 0 CHECK (tokens_out >= 0),
    turns             INTEGER NOT NULL DEFAULT 0 CHECK (turns >= 0),
    tool_calls        INTEGER NOT NULL DEFAULT 0 CHECK (tool_calls >= 0),
    calls_ok          INTEGER NOT NULL DEFAULT 0 CHECK (calls_ok >= 0),
    calls_error       INTEGER NOT NULL DEFAULT 0 CHECK (calls_error >= 0),
    calls_deduped     INTEGER NOT NULL DEFAULT 0 CHECK (calls_deduped >= 0),
    calls_denied      INTEGER NOT NULL DEFAULT 0 CHECK (calls_denied >= 0),
    rating_status     TEXT CHECK (rating_status IN ('valid', 'invalid', 'skipped')),
    rating_raw        TEXT,
    CHECK ((status = 'running') = (finished_at IS NULL))
);
-- At most one running tick per persona, whichever replica claimed it.
CREATE UNIQUE INDEX persona_ticks_one_running ON persona_ticks (persona_id) WHERE status = 'running';
-- A scheduled slot is claimed once per attempt, whichever replica gets there first.
CREATE UNIQUE INDEX persona_ticks_slot ON persona_ticks (persona_id, scheduled_for, attempt)
    WHERE scheduled_for IS NOT NULL;
CREATE INDEX persona_ticks_persona_time ON persona_ticks (persona_id, started_at);
CREATE INDEX persona_ticks_tenant_time ON persona_ticks (tenant_id, started_at);
-- Lease expiry sweep looks only at running ticks.
CREATE INDEX persona_ticks_lease ON persona_ticks (lease_expires_at) WHERE status = 'running';

CREATE TABLE persona_actions (
    id             BLOB PRIMARY KEY NOT NULL,
    tenant_id      BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    tick_id        BLOB NOT NULL REFERENCES persona_ticks(id) ON DELETE CASCADE,
    persona_id     BLOB NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    seq            INTEGER NOT NULL CHECK (seq >= 0),
    tool_name      TEXT NOT NULL,
    module         TEXT NOT NULL,
    input_hash     TEXT NOT NULL CHECK (length(input_hash) = 64),
    result         TEXT NOT NULL CHECK (result IN ('ok', 'error', 'deduped', 'denied')),
    error_message  TEXT,
    -- Truncated tool output, replayed to the model when a later call is deduped.
    output         TEXT,
    -- Calls the offline driver sent as deliberate edge cases.
    chaos          INTEGER NOT NULL DEFAULT 0 CHECK (chaos IN (0, 1)),
    latency_ms     INTEGER CHECK (latency_ms >= 0),
    created_at     TEXT NOT NULL,
    UNIQUE (tick_id, seq)
);
CREATE INDEX persona_actions_persona_time ON persona_actions (persona_id, created_at);
CREATE INDEX persona_actions_dedup ON persona_actions (persona_id, input_hash, created_at);
CREATE INDEX persona_actions_tenant_time ON persona_actions (tenant_id, created_at);
CREATE INDEX persona_actions_module_time ON persona_actions (module, created_at);

CREATE TABLE persona_feedback (
    id                BLOB PRIMARY KEY NOT NULL,
    tenant_id         BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    tick_id           BLOB NOT NULL REFERENCES persona_ticks(id) ON DELETE CASCADE,
    persona_id        BLOB NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    module            TEXT NOT NULL,
    rating            INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    notes             TEXT,
    -- The module's evidence in this tick, kept beside the rating to spot leniency.
    evidence_calls    INTEGER NOT NULL DEFAULT 0 CHECK (evidence_calls >= 0),
    evidence_errors   INTEGER NOT NULL DEFAULT 0 CHECK (evidence_errors >= 0),
    evidence_mean_latency_ms DOUBLE PRECISION,
    created_at        TEXT NOT NULL,
    UNIQUE (tick_id, module)
);
CREATE INDEX persona_feedback_module_time ON persona_feedback (tenant_id, module, created_at);
CREATE INDEX persona_feedback_persona_time ON persona_feedback (persona_id, created_at);
CREATE INDEX persona_feedback_tenant_time ON persona_feedback (tenant_id, created_at);

CREATE TABLE persona_user_profiles (
    id                        BLOB PRIMARY KEY NOT NULL,
    tenant_id                 BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id                   BLOB NOT NULL UNIQUE REFERENCES users(id) ON DELETE CASCADE,
    persona_id                BLOB REFERENCES personas(id) ON DELETE SET NULL,
    detail_preference         INTEGER NOT NULL DEFAULT 50 CHECK (detail_preference BETWEEN 0 AND 100),
    external_data_usage       INTEGER NOT NULL DEFAULT 50 CHECK (external_data_usage BETWEEN 0 AND 100),
    decision_speed            INTEGER NOT NULL DEFAULT 50 CHECK (decision_speed BETWEEN 0 AND 100),
    collaboration_frequency   INTEGER NOT NULL DEFAULT 50 CHECK (collaboration_frequency BETWEEN 0 AND 100),
    metric_preferences        TEXT NOT NULL DEFAULT '{}',
    action_preferences        TEXT NOT NULL DEFAULT '{}',
    data_source_preferences   TEXT NOT NULL DEFAULT '{}',
    context_preferences       TEXT NOT NULL DEFAULT '[]',
    total_interactions        INTEGER NOT NULL DEFAULT 0 CHECK (total_interactions >= 0),
    last_interaction_at       TEXT,
    interaction_summary       TEXT NOT NULL DEFAULT '{}',
    alignment_score           DOUBLE PRECISION CHECK (alignment_score BETWEEN 0 AND 100),
    reassessment_recommended  INTEGER NOT NULL DEFAULT 0 CHECK (reassessment_recommended IN (0, 1)),
    suggested_persona_id      BLOB REFERENCES personas(id) ON DELETE SET NULL,
    status                    TEXT NOT NULL DEFAULT 'active'
                              CHECK (status IN ('active', 'inactive', 'pending_reassessment')),
    created_at                TEXT NOT NULL,
    updated_at                TEXT NOT NULL
);
CREATE INDEX persona_user_profiles_user_status ON persona_user_profiles (user_id, status);
CREATE INDEX persona_user_profiles_tenant_persona ON persona_user_profiles (tenant_id, persona_id);

CREATE TABLE persona_interactions (
    id                  BLOB PRIMARY KEY NOT NULL,
    tenant_id           BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id             BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    persona_id          BLOB REFERENCES personas(id) ON DELETE SET NULL,
    -- Set when a tick's tool call produced this interaction.
    tick_id             BLOB REFERENCES persona_ticks(id) ON DELETE CASCADE,
    interaction_type    TEXT NOT NULL CHECK (interaction_type IN (
                            'headline_viewed', 'chart_interacted', 'metric_focused',
                            'external_data_used', 'action_taken', 'detail_expanded',
                            'collaborated', 'shared', 'feedback_given')),
    page_type           TEXT,
    page_id             TEXT,
    element_id          TEXT,
    element_type        TEXT,
    metadata            TEXT NOT NULL DEFAULT '{}',
    duration_seconds    INTEGER CHECK (duration_seconds >= 0),
    feedback_sentiment  TEXT CHECK (feedback_sentiment IN ('positive', 'neutral', 'negative')),
    feedback_comment    TEXT,
    created_at          TEXT NOT NULL
);
CREATE INDEX persona_interactions_user_time ON persona_interactions (user_id, created_at);
CREATE INDEX persona_interactions_persona_time ON persona_interactions (persona_id, created_at);
CREATE INDEX persona_interactions_tenant_time ON persona_interactions (tenant_id, created_at);
