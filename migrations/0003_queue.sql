-- 0003_queue: what the hardened queue keeps in the system of record (issue 5).
--
-- Never edit this file once shipped (see 0001).

-- Paused scopes: a tenant id, or '*' for every tenant (the admin pause). While a
-- scope is paused its messages stay "queued" in PostgreSQL and no dispatcher
-- claims them; resume puts them back on the Redis queue.
CREATE TABLE queue_pauses (
    scope      text PRIMARY KEY
               CHECK (scope = '*' OR scope ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'),
    paused_at  timestamptz NOT NULL DEFAULT now()
);

-- The dead-letter queue: messages that failed for good (a permanent failure, or
-- retries exhausted by max_attempts or max_message_age), with why. The message
-- row keeps status 'failed' and its events; this row is its place in the dead
-- list, removed by retry-failed (the message goes back to 'queued') or by the
-- cleanup once older than queue_dead_retention. A Redis stream
-- (mailerd:q:dead) carries the same entries for operators' tools; this table
-- is what the API reads, so a Redis restart loses none of them.
CREATE TABLE dead_letters (
    message_id uuid PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    tenant_id  uuid NOT NULL,
    batch_id   uuid,
    code       text NOT NULL,
    reason     text NOT NULL,
    attempts   integer NOT NULL,
    esp        text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_tenant_idx ON dead_letters (tenant_id, created_at, message_id);
CREATE INDEX dead_letters_batch_idx ON dead_letters (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX dead_letters_created_idx ON dead_letters (created_at);
