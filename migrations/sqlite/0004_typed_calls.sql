-- Whether a call went (or may have gone) to the product, as a column of its own: it was
-- told by a "not sent:" prefix of the error text, which code had to parse back.
ALTER TABLE persona_actions ADD COLUMN sent INTEGER NOT NULL DEFAULT 1 CHECK (sent IN (0, 1));
UPDATE persona_actions SET sent = 0
 WHERE result IN ('deduped', 'denied', 'not_sent') OR error_message LIKE 'not sent:%';
