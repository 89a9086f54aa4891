-- no-transaction
-- The second round of the schema (DESIGN.md §9), SQLite flavour. Keep it column for
-- column in step with migrations/postgres/0002_second_round.sql.
--
-- SQLite cannot change a CHECK constraint in place, so persona_ticks and
-- persona_actions are rebuilt with the documented 12-step procedure: foreign keys off
-- (only possible outside a transaction, hence `no-transaction` above), copy, drop,
-- rename, recreate the indexes, verify the keys, foreign keys on again.

PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE persona_ticks_v2 (
    id                BLOB PRIMARY KEY NOT NULL,
    tenant_id         BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    persona_id        BLOB NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    trigger           TEXT NOT NULL CHECK (trigger IN ('schedule', 'signal', 'cli', 'api')),
    scheduled_for     TEXT,
    attempt           INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    started_at        TEXT NOT NULL,
    finished_at       TEXT,
    -- `skipped`: the spend cap was reached before the tick started (no LLM request made).
    status            TEXT NOT NULL DEFAULT 'running'
                      CHECK (status IN ('running', 'ok', 'failed', 'timeout', 'abandoned', 'skipped')),
    error             TEXT,
    runner_id         TEXT NOT NULL,
    lease_expires_at  TEXT NOT NULL,
    llm_model         TEXT,
    prompt_version    TEXT,
    -- driver + model + prompt template hash + temperature: what produced the ratings.
    simulator         TEXT,
    -- The MCP protocol version the gateway agreed to.
    protocol_version  TEXT,
    -- The named target (product) the tick ran against; NULL is the default target.
    target            TEXT,
    tokens_in         INTEGER NOT NULL DEFAULT 0 CHECK (tokens_in >= 0),
    tokens_out        INTEGER NOT NULL DEFAULT 0 CHECK (tokens_out >= 0),
    turns             INTEGER NOT NULL DEFAULT 0 CHECK (turns >= 0),
    tool_calls        INTEGER NOT NULL DEFAULT 0 CHECK (tool_calls >= 0),
    calls_ok          INTEGER NOT NULL DEFAULT 0 CHECK (calls_ok >= 0),
    calls_error       INTEGER NOT NULL DEFAULT 0 CHECK (calls_error >= 0),
    calls_deduped     INTEGER NOT NULL DEFAULT 0 CHECK (calls_deduped >= 0),
    calls_denied      INTEGER NOT NULL DEFAULT 0 CHECK (calls_denied >= 0),
    -- Calls that may have run: sent, but the tick died before the answer was recorded.
    calls_unknown     INTEGER NOT NULL DEFAULT 0 CHECK (calls_unknown >= 0),
    -- Calls the runner could not build (never sent, never held against the product).
    calls_not_sent    INTEGER NOT NULL DEFAULT 0 CHECK (calls_not_sent >= 0),
    rating_status     TEXT CHECK (rating_status IN ('valid', 'invalid', 'skipped')),
    rating_raw        TEXT,
    CHECK ((status = 'running') = (finished_at IS NULL))
);
INSERT INTO persona_ticks_v2 (id, tenant_id, persona_id, trigger, scheduled_for, attempt, started_at,
    finished_at, status, error, runner_id, lease_expires_at, llm_model, prompt_version, simulator,
    tokens_in, tokens_out, turns, tool_calls, calls_ok, calls_error, calls_deduped, calls_denied,
    rating_status, rating_raw)
SELECT id, tenant_id, persona_id, trigger, scheduled_for, attempt, started_at,
    finished_at, status, error, runner_id, lease_expires_at, llm_model, prompt_version,
    CASE WHEN llm_model IS NULL THEN NULL
         WHEN llm_model = 'offline' THEN 'offline'
         ELSE 'llm ' || llm_model || ' · prompt ' || COALESCE(prompt_version, '?') END,
    tokens_in, tokens_out, turns, tool_calls, calls_ok, calls_error, calls_deduped, calls_denied,
    rating_status, rating_raw
FROM persona_ticks;
DROP TABLE persona_ticks;
ALTER TABLE persona_ticks_v2 RENAME TO persona_ticks;
CREATE UNIQUE INDEX persona_ticks_one_running ON persona_ticks (persona_id) WHERE status = 'running';
CREATE UNIQUE INDEX persona_ticks_slot ON persona_ticks (persona_id, scheduled_for, attempt)
    WHERE scheduled_for IS NOT NULL;
CREATE INDEX persona_ticks_persona_time ON persona_ticks (persona_id, started_at);
CREATE INDEX persona_ticks_tenant_time ON persona_ticks (tenant_id, started_at);
CREATE INDEX persona_ticks_lease ON persona_ticks (lease_expires_at) WHERE status = 'running';

CREATE TABLE persona_actions_v2 (
    id             BLOB PRIMARY KEY NOT NULL,
    tenant_id      BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    tick_id        BLOB NOT NULL REFERENCES persona_ticks(id) ON DELETE CASCADE,
    persona_id     BLOB NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    seq            INTEGER NOT NULL CHECK (seq >= 0),
    -- `call`: a tool call; `elicitation`/`sampling`: a request of the server, answered.
    kind           TEXT NOT NULL DEFAULT 'call' CHECK (kind IN ('call', 'elicitation', 'sampling')),
    tool_name      TEXT NOT NULL,
    module         TEXT NOT NULL,
    input_hash     TEXT NOT NULL CHECK (length(input_hash) = 64),
    -- `pending` is written before a call is sent; `unknown` is a pending call whose tick
    -- died (it may have run); `not_sent` is a call the runner could not build.
    result         TEXT NOT NULL CHECK (result IN
                       ('pending', 'ok', 'error', 'deduped', 'denied', 'unknown', 'not_sent')),
    error_message  TEXT,
    -- The canonical JSON arguments (redacted, capped): what replay sends again.
    arguments      TEXT,
    -- Truncated tool output, replayed to the model when a later call is deduped.
    output         TEXT,
    -- Calls the offline driver sent as deliberate edge cases.
    chaos          INTEGER NOT NULL DEFAULT 0 CHECK (chaos IN (0, 1)),
    latency_ms     INTEGER CHECK (latency_ms >= 0),
    created_at     TEXT NOT NULL,
    completed_at   TEXT,
    UNIQUE (tick_id, seq)
);
INSERT INTO persona_actions_v2 (id, tenant_id, tick_id, persona_id, seq, tool_name, module, input_hash,
    result, error_message, output, chaos, latency_ms, created_at, completed_at)
SELECT id, tenant_id, tick_id, persona_id, seq, tool_name, module, input_hash,
    result, error_message, output, chaos, latency_ms, created_at, created_at
FROM persona_actions;
DROP TABLE persona_actions;
ALTER TABLE persona_actions_v2 RENAME TO persona_actions;
CREATE INDEX persona_actions_persona_time ON persona_actions (persona_id, created_at);
CREATE INDEX persona_actions_dedup ON persona_actions (persona_id, input_hash, created_at);
CREATE INDEX persona_actions_tenant_time ON persona_actions (tenant_id, created_at);
-- The tick's pending calls, turned `unknown` when it dies.
CREATE INDEX persona_actions_pending ON persona_actions (tick_id) WHERE result = 'pending';

-- Ratings carry the simulator that gave them and the rating the evidence alone would give
-- (their difference is the simulator's leniency).
ALTER TABLE persona_feedback ADD COLUMN simulator TEXT;
ALTER TABLE persona_feedback ADD COLUMN evidence_rating INTEGER CHECK (evidence_rating BETWEEN 1 AND 5);
UPDATE persona_feedback SET simulator = (SELECT t.simulator FROM persona_ticks t WHERE t.id = persona_feedback.tick_id);

-- Personas name their target (product); `changed_at` moves with every change the
-- scheduler cares about (definition, pause, last activity, next slot), so it reloads
-- only what changed.
ALTER TABLE personas ADD COLUMN target TEXT;
ALTER TABLE personas ADD COLUMN changed_at TEXT NOT NULL DEFAULT '1970-01-01T00:00:00+00:00';
UPDATE personas SET changed_at = updated_at;
DROP INDEX personas_due;
CREATE INDEX personas_changed ON personas (changed_at, id);

-- The profile API reads a user's history by tenant and user.
DROP INDEX persona_interactions_user_time;
CREATE INDEX persona_interactions_user_time ON persona_interactions (user_id, tenant_id, created_at);
-- Every foreign key's child column is indexed: deleting a tick (retention) or a persona
-- must not scan a whole table for the rows it cascades to.
CREATE INDEX persona_interactions_tick ON persona_interactions (tick_id);
CREATE INDEX persona_user_profiles_persona ON persona_user_profiles (persona_id);
CREATE INDEX persona_user_profiles_suggested ON persona_user_profiles (suggested_persona_id);

-- What the alignment score reads, kept per user and UTC day as interactions arrive, so a
-- rescore reads at most 30 small rows however long the history is.
CREATE TABLE persona_user_daily (
    user_id         BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    day             TEXT NOT NULL,
    tenant_id       BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    interactions    INTEGER NOT NULL DEFAULT 0 CHECK (interactions >= 0),
    detail_signals  INTEGER NOT NULL DEFAULT 0 CHECK (detail_signals >= 0),
    modules         TEXT NOT NULL DEFAULT '{}',
    metrics         TEXT NOT NULL DEFAULT '{}',
    actions         TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (user_id, day)
);

-- Daily rating roll-ups: the QA report's history outlives the raw rows' retention.
CREATE TABLE persona_rating_daily (
    tenant_id         BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    day               TEXT NOT NULL,
    module            TEXT NOT NULL,
    persona_id        BLOB NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    simulator         TEXT NOT NULL DEFAULT '',
    ratings           INTEGER NOT NULL DEFAULT 0,
    rating_sum        INTEGER NOT NULL DEFAULT 0,
    r1                INTEGER NOT NULL DEFAULT 0,
    r2                INTEGER NOT NULL DEFAULT 0,
    r3                INTEGER NOT NULL DEFAULT 0,
    r4                INTEGER NOT NULL DEFAULT 0,
    r5                INTEGER NOT NULL DEFAULT 0,
    evidence_calls    INTEGER NOT NULL DEFAULT 0,
    evidence_errors   INTEGER NOT NULL DEFAULT 0,
    latency_sum       DOUBLE PRECISION NOT NULL DEFAULT 0,
    latency_calls     INTEGER NOT NULL DEFAULT 0,
    -- Σ of evidence-derived ratings, how many ratings had one, and Σ of those ratings'
    -- own values (their difference is the simulator's leniency).
    evidence_rating_sum INTEGER NOT NULL DEFAULT 0,
    evidence_rated    INTEGER NOT NULL DEFAULT 0,
    evidenced_rating_sum INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, module, persona_id, simulator)
);
CREATE INDEX persona_rating_daily_persona ON persona_rating_daily (persona_id);
INSERT INTO persona_rating_daily (tenant_id, day, module, persona_id, simulator, ratings, rating_sum,
    r1, r2, r3, r4, r5, evidence_calls, evidence_errors, latency_sum, latency_calls)
SELECT tenant_id, substr(created_at, 1, 10), module, persona_id, COALESCE(simulator, ''), COUNT(*), SUM(rating),
    SUM(rating = 1), SUM(rating = 2), SUM(rating = 3), SUM(rating = 4), SUM(rating = 5),
    SUM(evidence_calls), SUM(evidence_errors),
    COALESCE(SUM(evidence_mean_latency_ms * evidence_calls), 0),
    SUM(CASE WHEN evidence_mean_latency_ms IS NULL THEN 0 ELSE evidence_calls END)
FROM persona_feedback
GROUP BY tenant_id, substr(created_at, 1, 10), module, persona_id, COALESCE(simulator, '');

-- A tick's conversation as the model saw it (redacted, capped), kept as long as its tick.
CREATE TABLE persona_transcripts (
    tick_id      BLOB PRIMARY KEY NOT NULL REFERENCES persona_ticks(id) ON DELETE CASCADE,
    tenant_id    BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    entries      TEXT NOT NULL DEFAULT '[]',
    chars        INTEGER NOT NULL DEFAULT 0,
    truncated    INTEGER NOT NULL DEFAULT 0 CHECK (truncated IN (0, 1)),
    created_at   TEXT NOT NULL
);

-- LLM tokens spent per UTC day, per persona and in all, for the spend cap.
CREATE TABLE persona_spend_daily (
    persona_id   BLOB NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    day          TEXT NOT NULL,
    tokens_in    INTEGER NOT NULL DEFAULT 0,
    tokens_out   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (persona_id, day)
);
CREATE TABLE spend_daily (
    day          TEXT PRIMARY KEY NOT NULL,
    tokens_in    INTEGER NOT NULL DEFAULT 0,
    tokens_out   INTEGER NOT NULL DEFAULT 0
);

-- Dashboard sessions, server side: the cookie holds a random id; the row holds its hash,
-- the fingerprint of the admin token it was opened with (rotation ends it) and expiry.
CREATE TABLE dashboard_sessions (
    id_hash            TEXT PRIMARY KEY NOT NULL,
    token_fingerprint  TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    expires_at         TEXT NOT NULL
);

-- Each runner's latest successful write: the store's health probe, and who is alive.
CREATE TABLE runner_heartbeats (
    runner_id    TEXT PRIMARY KEY NOT NULL,
    started_at   TEXT NOT NULL,
    seen_at      TEXT NOT NULL
);

COMMIT;
PRAGMA foreign_keys = ON;
