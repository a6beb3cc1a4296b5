-- bench/pg-dispatch, variant "slim": the content of each message (names,
-- subject, bodies, headers, variables) in a table of its own, so the
-- dispatcher's two updates copy a row of ~300 bytes instead of ~1 KB; messages
-- keeps every index. Runs after the messages are loaded; an experiment, not a
-- migration.
CREATE TABLE message_contents (message_id uuid PRIMARY KEY, from_name text, to_name text, cc jsonb, bcc jsonb, reply_to text, subject text, text_body text, html_body text, headers jsonb, variables jsonb, template_id uuid);
INSERT INTO message_contents SELECT id, from_name, to_name, cc, bcc, reply_to, subject, text_body, html_body, headers, variables, template_id FROM messages;
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_check, DROP COLUMN from_name, DROP COLUMN to_name, DROP COLUMN cc, DROP COLUMN bcc, DROP COLUMN reply_to, DROP COLUMN subject, DROP COLUMN text_body, DROP COLUMN html_body, DROP COLUMN headers, DROP COLUMN variables, DROP COLUMN template_id;
VACUUM FULL messages;
VACUUM ANALYZE message_contents;
CHECKPOINT;
