-- Shared spaces: households and teams whose members act on the same product data. A tick
-- and each of its calls record the space they worked in ('personal': the persona's own);
-- two members of a space never run in it at once, across replicas too. Keep it column for
-- column in step with migrations/sqlite/0008_spaces.sql.

CREATE TABLE persona_spaces (
    id             UUID PRIMARY KEY NOT NULL,
    tenant_id      UUID NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name           TEXT NOT NULL CHECK (name <> '' AND name <> 'personal'),
    kind           TEXT NOT NULL CHECK (kind IN ('family', 'household', 'team', 'practice', 'club')),
    -- [{email, role}] in declared order, exactly one owner.
    members        JSONB NOT NULL,
    share          DOUBLE PRECISION NOT NULL CHECK (share >= 0 AND share <= 1),
    cadence        TEXT,
    target         TEXT,
    -- When the daemon's next round of the space is due (spaces with a cadence).
    next_round_at  TIMESTAMPTZ,
    -- When provisioning last had every member join it in the product; NULL until then, and
    -- again once the members change: ticks by share only go to provisioned spaces.
    provisioned_at TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, name)
);

ALTER TABLE persona_ticks ADD COLUMN space TEXT NOT NULL DEFAULT 'personal';
ALTER TABLE persona_actions ADD COLUMN space TEXT NOT NULL DEFAULT 'personal';
CREATE UNIQUE INDEX persona_ticks_one_running_per_space ON persona_ticks (tenant_id, space)
    WHERE status = 'running' AND space <> 'personal';
CREATE INDEX persona_actions_space_time ON persona_actions (tenant_id, space, created_at)
    WHERE space <> 'personal';
