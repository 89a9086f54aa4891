-- The second round of the schema (DESIGN.md §9), PostgreSQL flavour. Keep it column for
-- column in step with migrations/sqlite/0002_second_round.sql.

ALTER TABLE persona_ticks DROP CONSTRAINT persona_ticks_status_check;
ALTER TABLE persona_ticks ADD CONSTRAINT persona_ticks_status_check
    CHECK (status IN ('running', 'ok', 'failed', 'timeout', 'abandoned', 'skipped'));
ALTER TABLE persona_ticks
    ADD COLUMN simulator TEXT,
    ADD COLUMN protocol_version TEXT,
    ADD COLUMN target TEXT,
    ADD COLUMN calls_unknown INTEGER NOT NULL DEFAULT 0 CHECK (calls_unknown >= 0),
    ADD COLUMN calls_not_sent INTEGER NOT NULL DEFAULT 0 CHECK (calls_not_sent >= 0);
UPDATE persona_ticks SET simulator = CASE
    WHEN llm_model IS NULL THEN NULL
    WHEN llm_model = 'offline' THEN 'offline'
    ELSE 'llm ' || llm_model || ' · prompt ' || COALESCE(prompt_version, '?') END;

ALTER TABLE persona_actions DROP CONSTRAINT persona_actions_result_check;
ALTER TABLE persona_actions ADD CONSTRAINT persona_actions_result_check
    CHECK (result IN ('pending', 'ok', 'error', 'deduped', 'denied', 'unknown', 'not_sent'));
ALTER TABLE persona_actions
    ADD COLUMN kind TEXT NOT NULL DEFAULT 'call' CHECK (kind IN ('call', 'elicitation', 'sampling')),
    ADD COLUMN arguments TEXT,
    ADD COLUMN completed_at TIMESTAMPTZ;
UPDATE persona_actions SET completed_at = created_at;
DROP INDEX persona_actions_module_time;
CREATE INDEX persona_actions_pending ON persona_actions (tick_id) WHERE result = 'pending';

ALTER TABLE persona_feedback
    ADD COLUMN simulator TEXT,
    ADD COLUMN evidence_rating INTEGER CHECK (evidence_rating BETWEEN 1 AND 5);
UPDATE persona_feedback f SET simulator = t.simulator FROM persona_ticks t WHERE t.id = f.tick_id;

ALTER TABLE personas
    ADD COLUMN target TEXT,
    ADD COLUMN changed_at TIMESTAMPTZ NOT NULL DEFAULT '1970-01-01T00:00:00+00:00';
UPDATE personas SET changed_at = updated_at;
DROP INDEX personas_due;
CREATE INDEX personas_changed ON personas (changed_at, id);

DROP INDEX persona_interactions_user_time;
CREATE INDEX persona_interactions_user_time ON persona_interactions (user_id, tenant_id, created_at);
-- Every foreign key's child column is indexed: deleting a tick (retention) or a persona
-- must not scan a whole table for the rows it cascades to.
CREATE INDEX persona_interactions_tick ON persona_interactions (tick_id);
CREATE INDEX persona_user_profiles_persona ON persona_user_profiles (persona_id);
CREATE INDEX persona_user_profiles_suggested ON persona_user_profiles (suggested_persona_id);

CREATE TABLE persona_user_daily (
    user_id         UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    day             TEXT NOT NULL,
    tenant_id       UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    interactions    INTEGER NOT NULL DEFAULT 0 CHECK (interactions >= 0),
    detail_signals  INTEGER NOT NULL DEFAULT 0 CHECK (detail_signals >= 0),
    modules         JSONB NOT NULL DEFAULT '{}',
    metrics         JSONB NOT NULL DEFAULT '{}',
    actions         JSONB NOT NULL DEFAULT '{}',
    PRIMARY KEY (user_id, day)
);

CREATE TABLE persona_rating_daily (
    tenant_id         UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    day               TEXT NOT NULL,
    module            TEXT NOT NULL,
    persona_id        UUID NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    simulator         TEXT NOT NULL DEFAULT '',
    ratings           BIGINT NOT NULL DEFAULT 0,
    rating_sum        BIGINT NOT NULL DEFAULT 0,
    r1                BIGINT NOT NULL DEFAULT 0,
    r2                BIGINT NOT NULL DEFAULT 0,
    r3                BIGINT NOT NULL DEFAULT 0,
    r4                BIGINT NOT NULL DEFAULT 0,
    r5                BIGINT NOT NULL DEFAULT 0,
    evidence_calls    BIGINT NOT NULL DEFAULT 0,
    evidence_errors   BIGINT NOT NULL DEFAULT 0,
    latency_sum       DOUBLE PRECISION NOT NULL DEFAULT 0,
    latency_calls     BIGINT NOT NULL DEFAULT 0,
    evidence_rating_sum BIGINT NOT NULL DEFAULT 0,
    evidence_rated    BIGINT NOT NULL DEFAULT 0,
    evidenced_rating_sum BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, module, persona_id, simulator)
);
CREATE INDEX persona_rating_daily_persona ON persona_rating_daily (persona_id);
INSERT INTO persona_rating_daily (tenant_id, day, module, persona_id, simulator, ratings, rating_sum,
    r1, r2, r3, r4, r5, evidence_calls, evidence_errors, latency_sum, latency_calls)
SELECT tenant_id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), module, persona_id,
    COALESCE(simulator, ''), COUNT(*), SUM(rating),
    SUM(CASE WHEN rating = 1 THEN 1 ELSE 0 END), SUM(CASE WHEN rating = 2 THEN 1 ELSE 0 END),
    SUM(CASE WHEN rating = 3 THEN 1 ELSE 0 END), SUM(CASE WHEN rating = 4 THEN 1 ELSE 0 END),
    SUM(CASE WHEN rating = 5 THEN 1 ELSE 0 END),
    SUM(evidence_calls), SUM(evidence_errors),
    COALESCE(SUM(evidence_mean_latency_ms * evidence_calls), 0),
    SUM(CASE WHEN evidence_mean_latency_ms IS NULL THEN 0 ELSE evidence_calls END)
FROM persona_feedback
GROUP BY 1, 2, 3, 4, 5;

CREATE TABLE persona_transcripts (
    tick_id      UUID PRIMARY KEY NOT NULL REFERENCES persona_ticks(id) ON DELETE CASCADE,
    tenant_id    UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    entries      JSONB NOT NULL DEFAULT '[]',
    chars        INTEGER NOT NULL DEFAULT 0,
    truncated    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE persona_spend_daily (
    persona_id   UUID NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    day          TEXT NOT NULL,
    tokens_in    BIGINT NOT NULL DEFAULT 0,
    tokens_out   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (persona_id, day)
);
CREATE TABLE spend_daily (
    day          TEXT PRIMARY KEY NOT NULL,
    tokens_in    BIGINT NOT NULL DEFAULT 0,
    tokens_out   BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE dashboard_sessions (
    id_hash            TEXT PRIMARY KEY NOT NULL,
    token_fingerprint  TEXT NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    expires_at         TIMESTAMPTZ NOT NULL
);

CREATE TABLE runner_heartbeats (
    runner_id    TEXT PRIMARY KEY NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    seen_at      TIMESTAMPTZ NOT NULL
);
