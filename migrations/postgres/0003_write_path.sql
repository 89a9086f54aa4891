-- The write path's third round: one index fewer on every audited call.
--
-- persona_actions_pending (tick_id) WHERE result = 'pending' duplicated the prefix of the
-- UNIQUE (tick_id, seq) index, which already finds a tick's calls (a few dozen rows) for
-- the two statements that read pending calls: a tick's finish and the lease sweep. The
-- partial index cost two page writes per call (an entry on the write-ahead row, its
-- removal on completion). The plans test keeps both statements on an index.
DROP INDEX persona_actions_pending;
