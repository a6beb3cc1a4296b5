-- bench/pg-dispatch, variant "narrow": the delivery state of each message in a
-- narrow table of its own, so the dispatcher's claim and record update a
-- ~150-byte row with its own five indexes instead of copying the ~1 KB message
-- row and adding entries to every index of messages. Runs after the messages
-- are loaded; an experiment, not a migration.
CREATE TABLE deliveries (
    message_id      uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    status          text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    esp             text,
    esp_message_id  text,
    last_error      text,
    next_attempt_at timestamptz,
    lease_until     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    delivered_at    timestamptz
) WITH (fillfactor = 50);
INSERT INTO deliveries (message_id, tenant_id, status) SELECT id, tenant_id, status FROM messages;
CREATE INDEX deliveries_tenant_status_idx ON deliveries (tenant_id, status, message_id);
CREATE INDEX deliveries_waiting_idx ON deliveries (message_id) WHERE status IN ('queued', 'scheduled', 'deferred');
CREATE INDEX deliveries_lease_idx ON deliveries (lease_until) WHERE status = 'sending';
CREATE INDEX deliveries_esp_id_idx ON deliveries (esp_message_id) WHERE esp_message_id IS NOT NULL;
VACUUM ANALYZE deliveries;
CHECKPOINT;
