-- bench/pg-dispatch, variant "wide": the layout before migration 0008, one
-- ~1 KB messages row holding both what was asked and the delivery state, with
-- the indexes of migrations 0002 and 0007, so a state change copies the whole
-- row and adds an entry to each index. Runs after the messages are loaded:
-- their content and state are joined back into one table and the two tables of
-- 0008 dropped. The baseline the narrow layout was measured against.
CREATE TABLE messages_wide AS SELECT * FROM messages;
DROP VIEW messages;
DROP TABLE deliveries;
DROP TABLE message_content CASCADE;
ALTER TABLE messages_wide RENAME TO messages;
ALTER TABLE messages ADD PRIMARY KEY (id);
CREATE INDEX messages_tenant_idx ON messages (tenant_id, id);
CREATE INDEX messages_tenant_status_idx ON messages (tenant_id, status, id);
CREATE INDEX messages_batch_idx ON messages (batch_id, status) WHERE batch_id IS NOT NULL;
CREATE INDEX messages_tags_idx ON messages USING gin (tags);
CREATE INDEX messages_pending_idx ON messages (status, next_attempt_at)
    WHERE status IN ('accepted', 'queued', 'scheduled', 'sending', 'deferred');
CREATE INDEX messages_esp_id_idx ON messages (esp_message_id) WHERE esp_message_id IS NOT NULL;
CREATE INDEX messages_waiting_idx ON messages (id) WHERE status IN ('queued', 'scheduled', 'deferred');
VACUUM ANALYZE messages;
CHECKPOINT;
