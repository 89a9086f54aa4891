-- Traces: a tick keeps the id of its OpenTelemetry trace (32 hex digits), when traces
-- were exported, so the dashboard can link to it. Keep it in step with
-- migrations/sqlite/0007_traces.sql.
ALTER TABLE persona_ticks ADD COLUMN trace_id TEXT CHECK (trace_id IS NULL OR length(trace_id) = 32);
