-- no-transaction
-- Goals and verdicts: a persona carries its goals; the runner's own reads of the
-- product's state after a check tick are audited as `check` rows; a check run and the
-- verdict of each of its trials are kept. Keep it column for column in step with
-- migrations/postgres/0006_goals.sql.
--
-- SQLite cannot change a CHECK constraint in place: persona_actions is rebuilt with the
-- 12-step procedure (foreign keys off, outside a transaction, hence `no-transaction`).

PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

ALTER TABLE personas ADD COLUMN goals TEXT NOT NULL DEFAULT '[]';

CREATE TABLE persona_actions_v3 (
    id             BLOB PRIMARY KEY NOT NULL,
    tenant_id      BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    tick_id        BLOB NOT NULL REFERENCES persona_ticks(id) ON DELETE CASCADE,
    persona_id     BLOB NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    seq            INTEGER NOT NULL CHECK (seq >= 0),
    -- `call`: a tool call of the persona; `elicitation`/`sampling`: a request of the
    -- server, answered; `check`: the runner's own read of the product's state.
    kind           TEXT NOT NULL DEFAULT 'call' CHECK (kind IN ('call', 'elicitation', 'sampling', 'check')),
    tool_name      TEXT NOT NULL,
    module         TEXT NOT NULL,
    input_hash     TEXT NOT NULL CHECK (length(input_hash) = 64),
    result         TEXT NOT NULL CHECK (result IN
                       ('pending', 'ok', 'error', 'deduped', 'denied', 'unknown', 'not_sent')),
    error_message  TEXT,
    arguments      TEXT,
    output         TEXT,
    chaos          INTEGER NOT NULL DEFAULT 0 CHECK (chaos IN (0, 1)),
    latency_ms     INTEGER CHECK (latency_ms >= 0),
    created_at     TEXT NOT NULL,
    completed_at   TEXT,
    sent           INTEGER NOT NULL DEFAULT 1 CHECK (sent IN (0, 1)),
    recovered      INTEGER NOT NULL DEFAULT 0 CHECK (recovered IN (0, 1)),
    refusal        TEXT CHECK (refusal IN
                       ('budget', 'withheld', 'unknown_tool', 'not_json', 'not_object', 'schema', 'unbuildable')),
    UNIQUE (tick_id, seq)
);
INSERT INTO persona_actions_v3 (id, tenant_id, tick_id, persona_id, seq, kind, tool_name, module, input_hash,
    result, error_message, arguments, output, chaos, latency_ms, created_at, completed_at, sent, recovered, refusal)
SELECT id, tenant_id, tick_id, persona_id, seq, kind, tool_name, module, input_hash,
    result, error_message, arguments, output, chaos, latency_ms, created_at, completed_at, sent, recovered, refusal
FROM persona_actions;
DROP TABLE persona_actions;
ALTER TABLE persona_actions_v3 RENAME TO persona_actions;
CREATE INDEX persona_actions_persona_time ON persona_actions (persona_id, created_at);
CREATE INDEX persona_actions_dedup ON persona_actions (persona_id, input_hash, created_at);
CREATE INDEX persona_actions_tenant_time ON persona_actions (tenant_id, created_at);

CREATE TABLE persona_check_runs (
    id           BLOB PRIMARY KEY NOT NULL,
    tenant_id    BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    trigger      TEXT NOT NULL CHECK (trigger IN ('cli', 'api', 'schedule')),
    status       TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
    trials       INTEGER NOT NULL CHECK (trials >= 1),
    min_pass     INTEGER NOT NULL CHECK (min_pass >= 1),
    -- The goals and personas asked for ([] = all).
    goals        TEXT NOT NULL DEFAULT '[]',
    personas     TEXT NOT NULL DEFAULT '[]',
    error        TEXT,
    created_at   TEXT NOT NULL,
    finished_at  TEXT
);
CREATE INDEX persona_check_runs_tenant_time ON persona_check_runs (tenant_id, created_at);

CREATE TABLE persona_verdicts (
    id           BLOB PRIMARY KEY NOT NULL,
    tenant_id    BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    run_id       BLOB NOT NULL REFERENCES persona_check_runs(id) ON DELETE CASCADE,
    goal         TEXT NOT NULL,
    persona_id   BLOB NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    tick_id      BLOB NOT NULL REFERENCES persona_ticks(id) ON DELETE CASCADE,
    trial        INTEGER NOT NULL CHECK (trial >= 1),
    outcome      TEXT NOT NULL CHECK (outcome IN ('pass', 'fail', 'unjudged')),
    checks       TEXT NOT NULL DEFAULT '[]',
    criteria     TEXT NOT NULL DEFAULT '[]',
    simulator    TEXT NOT NULL,
    judge        TEXT,
    seconds      REAL NOT NULL CHECK (seconds >= 0),
    created_at   TEXT NOT NULL
);
CREATE INDEX persona_verdicts_tenant_time ON persona_verdicts (tenant_id, created_at);
CREATE INDEX persona_verdicts_persona_goal ON persona_verdicts (persona_id, goal, created_at);
CREATE INDEX persona_verdicts_run ON persona_verdicts (run_id);
CREATE INDEX persona_verdicts_tick ON persona_verdicts (tick_id);

COMMIT;
PRAGMA foreign_keys = ON;
