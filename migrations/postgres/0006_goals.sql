-- Goals and verdicts: a persona carries its goals; the runner's own reads of the
-- product's state after a check tick are audited as `check` rows; a check run and the
-- verdict of each of its trials are kept. Keep it column for column in step with
-- migrations/sqlite/0006_goals.sql.

ALTER TABLE personas ADD COLUMN goals JSONB NOT NULL DEFAULT '[]';

ALTER TABLE persona_actions DROP CONSTRAINT persona_actions_kind_check;
ALTER TABLE persona_actions ADD CONSTRAINT persona_actions_kind_check
    CHECK (kind IN ('call', 'elicitation', 'sampling', 'check'));

CREATE TABLE persona_check_runs (
    id           UUID PRIMARY KEY NOT NULL,
    tenant_id    UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    trigger      TEXT NOT NULL CHECK (trigger IN ('cli', 'api', 'schedule')),
    status       TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
    trials       INTEGER NOT NULL CHECK (trials >= 1),
    min_pass     INTEGER NOT NULL CHECK (min_pass >= 1),
    -- The goals and personas asked for ([] = all).
    goals        JSONB NOT NULL DEFAULT '[]',
    personas     JSONB NOT NULL DEFAULT '[]',
    error        TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ
);
CREATE INDEX persona_check_runs_tenant_time ON persona_check_runs (tenant_id, created_at);

CREATE TABLE persona_verdicts (
    id           UUID PRIMARY KEY NOT NULL,
    tenant_id    UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    run_id       UUID NOT NULL REFERENCES persona_check_runs(id) ON DELETE CASCADE,
    goal         TEXT NOT NULL,
    persona_id   UUID NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
    tick_id      UUID NOT NULL REFERENCES persona_ticks(id) ON DELETE CASCADE,
    trial        INTEGER NOT NULL CHECK (trial >= 1),
    outcome      TEXT NOT NULL CHECK (outcome IN ('pass', 'fail', 'unjudged')),
    checks       JSONB NOT NULL DEFAULT '[]',
    criteria     JSONB NOT NULL DEFAULT '[]',
    simulator    TEXT NOT NULL,
    judge        TEXT,
    seconds      DOUBLE PRECISION NOT NULL CHECK (seconds >= 0),
    created_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX persona_verdicts_tenant_time ON persona_verdicts (tenant_id, created_at);
CREATE INDEX persona_verdicts_persona_goal ON persona_verdicts (persona_id, goal, created_at);
CREATE INDEX persona_verdicts_run ON persona_verdicts (run_id);
CREATE INDEX persona_verdicts_tick ON persona_verdicts (tick_id);
