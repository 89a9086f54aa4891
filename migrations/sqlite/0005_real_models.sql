-- no-transaction
-- Real models (and the trials of checks): a tick may end `idle` (the model answered
-- without using the app) and be started by a `check` run; a tick keeps how many rating
-- answers it took; a call says whether it was recovered from the model's text and, when
-- it was refused before sending, why. Keep it column for column in step with
-- migrations/postgres/0005_real_models.sql.
--
-- SQLite cannot change a CHECK constraint in place: persona_ticks is rebuilt with the
-- 12-step procedure (foreign keys off, outside a transaction, hence `no-transaction`).

PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE persona_ticks_v3 (
    id                BLOB PRIMARY KEY NOT NULL,
    tenant_id         BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    persona_id        BLOB NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    trigger           TEXT NOT NULL CHECK (trigger IN ('schedule', 'signal', 'cli', 'api', 'check')),
    scheduled_for     TEXT,
    attempt           INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    started_at        TEXT NOT NULL,
    finished_at       TEXT,
    -- `skipped`: the spend cap was reached before the tick started (no LLM request made);
    -- `idle`: the model answered without using the app (not product evidence).
    status            TEXT NOT NULL DEFAULT 'running'
                      CHECK (status IN ('running', 'ok', 'failed', 'timeout', 'abandoned', 'skipped', 'idle')),
    error             TEXT,
    runner_id         TEXT NOT NULL,
    lease_expires_at  TEXT NOT NULL,
    llm_model         TEXT,
    prompt_version    TEXT,
    simulator         TEXT,
    protocol_version  TEXT,
    target            TEXT,
    tokens_in         INTEGER NOT NULL DEFAULT 0 CHECK (tokens_in >= 0),
    tokens_out        INTEGER NOT NULL DEFAULT 0 CHECK (tokens_out >= 0),
    turns             INTEGER NOT NULL DEFAULT 0 CHECK (turns >= 0),
    tool_calls        INTEGER NOT NULL DEFAULT 0 CHECK (tool_calls >= 0),
    calls_ok          INTEGER NOT NULL DEFAULT 0 CHECK (calls_ok >= 0),
    calls_error       INTEGER NOT NULL DEFAULT 0 CHECK (calls_error >= 0),
    calls_deduped     INTEGER NOT NULL DEFAULT 0 CHECK (calls_deduped >= 0),
    calls_denied      INTEGER NOT NULL DEFAULT 0 CHECK (calls_denied >= 0),
    calls_unknown     INTEGER NOT NULL DEFAULT 0 CHECK (calls_unknown >= 0),
    calls_not_sent    INTEGER NOT NULL DEFAULT 0 CHECK (calls_not_sent >= 0),
    rating_status     TEXT CHECK (rating_status IN ('valid', 'invalid', 'skipped')),
    rating_raw        TEXT,
    -- Rating answers the model gave (0: none asked; 2: the first needed a repair).
    rating_attempts   INTEGER NOT NULL DEFAULT 0 CHECK (rating_attempts >= 0),
    CHECK ((status = 'running') = (finished_at IS NULL))
);
INSERT INTO persona_ticks_v3 (id, tenant_id, persona_id, trigger, scheduled_for, attempt, started_at,
    finished_at, status, error, runner_id, lease_expires_at, llm_model, prompt_version, simulator,
    protocol_version, target, tokens_in, tokens_out, turns, tool_calls, calls_ok, calls_error,
    calls_deduped, calls_denied, calls_unknown, calls_not_sent, rating_status, rating_raw, rating_attempts)
SELECT id, tenant_id, persona_id, trigger, scheduled_for, attempt, started_at,
    finished_at, status, error, runner_id, lease_expires_at, llm_model, prompt_version, simulator,
    protocol_version, target, tokens_in, tokens_out, turns, tool_calls, calls_ok, calls_error,
    calls_deduped, calls_denied, calls_unknown, calls_not_sent, rating_status, rating_raw,
    CASE WHEN rating_status IN ('valid', 'invalid') THEN 1 ELSE 0 END
FROM persona_ticks;
DROP TABLE persona_ticks;
ALTER TABLE persona_ticks_v3 RENAME TO persona_ticks;
CREATE UNIQUE INDEX persona_ticks_one_running ON persona_ticks (persona_id) WHERE status = 'running';
CREATE UNIQUE INDEX persona_ticks_slot ON persona_ticks (persona_id, scheduled_for, attempt)
    WHERE scheduled_for IS NOT NULL;
CREATE INDEX persona_ticks_persona_time ON persona_ticks (persona_id, started_at);
CREATE INDEX persona_ticks_tenant_time ON persona_ticks (tenant_id, started_at);
CREATE INDEX persona_ticks_lease ON persona_ticks (lease_expires_at) WHERE status = 'running';

-- A call the model wrote as text (JSON in its message) rather than as a tool call.
ALTER TABLE persona_actions ADD COLUMN recovered INTEGER NOT NULL DEFAULT 0 CHECK (recovered IN (0, 1));
-- Why a call was refused before sending, when it was.
ALTER TABLE persona_actions ADD COLUMN refusal TEXT CHECK (refusal IN
    ('budget', 'withheld', 'unknown_tool', 'not_json', 'not_object', 'schema', 'unbuildable'));

COMMIT;
PRAGMA foreign_keys = ON;
