-- Whether a call went (or may have gone) to the product, as a column of its own: it was
-- told by a "not sent:" prefix of the error text, which code had to parse back.
ALTER TABLE persona_actions ADD COLUMN sent BOOLEAN NOT NULL DEFAULT TRUE;
UPDATE persona_actions SET sent = FALSE
 WHERE result IN ('deduped', 'denied', 'not_sent') OR error_message LIKE 'not sent:%';
