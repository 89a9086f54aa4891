-- Real models (and the trials of checks): a tick may end `idle` (the model answered
-- without using the app) and be started by a `check` run; a tick keeps how many rating
-- answers it took; a call says whether it was recovered from the model's text and, when
-- it was refused before sending, why. Keep it column for column in step with
-- migrations/sqlite/0005_real_models.sql.

ALTER TABLE persona_ticks DROP CONSTRAINT persona_ticks_status_check;
ALTER TABLE persona_ticks ADD CONSTRAINT persona_ticks_status_check
    CHECK (status IN ('running', 'ok', 'failed', 'timeout', 'abandoned', 'skipped', 'idle'));
ALTER TABLE persona_ticks DROP CONSTRAINT persona_ticks_trigger_check;
ALTER TABLE persona_ticks ADD CONSTRAINT persona_ticks_trigger_check
    CHECK (trigger IN ('schedule', 'signal', 'cli', 'api', 'check'));
-- Rating answers the model gave (0: none asked; 2: the first needed a repair).
ALTER TABLE persona_ticks ADD COLUMN rating_attempts INTEGER NOT NULL DEFAULT 0 CHECK (rating_attempts >= 0);
UPDATE persona_ticks SET rating_attempts = 1 WHERE rating_status IN ('valid', 'invalid');

-- A call the model wrote as text (JSON in its message) rather than as a tool call.
ALTER TABLE persona_actions ADD COLUMN recovered BOOLEAN NOT NULL DEFAULT FALSE;
-- Why a call was refused before sending, when it was.
ALTER TABLE persona_actions ADD COLUMN refusal TEXT CHECK (refusal IN
    ('budget', 'withheld', 'unknown_tool', 'not_json', 'not_object', 'schema', 'unbuildable'));
