-- 0008_deliveries: each message's delivery state in a narrow row of its own.
--
-- Never edit this file once shipped (see 0001).
--
-- A message is written once (what was asked: addresses, content, tags) and then
-- changes state several times (queued, sending, sent, delivered, ...). Both
-- lived in one ~1 KB row, and a state change can never be a HOT update (status
-- is indexed), so every change copied the whole row and added an entry to every
-- index of messages: a drained message cost PostgreSQL 21 index entries and
-- ~4.9 KB of WAL, 39% of its time inserting index entries, and PostgreSQL was
-- ~70% of the machine's time in bench/drain. Here the state moves to
-- `deliveries` (~150 bytes, the indexes that find messages by state), and what
-- was asked stays in `message_content`, written once and read by id.
-- bench/pg-dispatch measured the dispatcher's statements on the two layouts:
-- 1.31-1.54x rows/s, 77 -> 50-64 us of CPU and 4,910 -> 2,780 B of WAL per row.
--
-- `messages` becomes a view joining the two with the old columns in the old
-- order, so reads (operators, the API's lookups, tests) see what they saw.
-- Writes through the view work (INSTEAD OF triggers) for hand-made changes;
-- mailerd's own writes go to the tables, with their conditions in the WHERE
-- of the statement that changes the row (a trigger would test them without the
-- row lock). The tables carry tenant_id both (deliveries' indexes lead with it;
-- it never changes). priority lives in deliveries only (the queue's readers want
-- it with the state).
--
-- A migration runs in one transaction: on a large table this copies every
-- message's state while holding locks that block writes to messages, and the
-- dropped columns keep their space in message_content until it is rewritten
-- (VACUUM FULL or pg_repack, when convenient).

ALTER TABLE messages RENAME TO message_content;
ALTER INDEX messages_pkey RENAME TO message_content_pkey;
ALTER INDEX messages_tenant_idx RENAME TO message_content_tenant_idx;
ALTER INDEX messages_tags_idx RENAME TO message_content_tags_idx;

-- fillfactor 50: a state change writes the new row version beside the old one,
-- on a page already dirty, rather than on a new page.
CREATE TABLE deliveries (
    message_id      uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    status          text NOT NULL CHECK (status IN ('accepted', 'queued', 'scheduled', 'sending',
                        'sent', 'delivered', 'deferred', 'bounced', 'complained', 'failed',
                        'suppressed', 'canceled')),
    priority        text NOT NULL DEFAULT 'transactional'
                        CHECK (priority IN ('transactional', 'bulk')),
    attempts        integer NOT NULL DEFAULT 0,
    esp             text,           -- the account that took the last attempt
    esp_message_id  text,
    last_error      text,
    next_attempt_at timestamptz,
    lease_until     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    delivered_at    timestamptz
) WITH (fillfactor = 50);

INSERT INTO deliveries (message_id, tenant_id, status, priority, attempts, esp, esp_message_id,
                        last_error, next_attempt_at, lease_until, updated_at, sent_at, delivered_at)
SELECT id, tenant_id, status, priority, attempts, esp, esp_message_id, last_error,
       next_attempt_at, lease_until, updated_at, sent_at, delivered_at
FROM message_content;

-- Drops the indexes built on these columns too (tenant_status, batch, pending,
-- esp_id, waiting); their successors are on deliveries below.
ALTER TABLE message_content
    DROP COLUMN status, DROP COLUMN priority, DROP COLUMN esp, DROP COLUMN esp_message_id,
    DROP COLUMN attempts, DROP COLUMN last_error, DROP COLUMN next_attempt_at,
    DROP COLUMN lease_until, DROP COLUMN updated_at, DROP COLUMN sent_at,
    DROP COLUMN delivered_at;
CREATE INDEX message_content_batch_idx ON message_content (batch_id) WHERE batch_id IS NOT NULL;

-- A tenant's messages by state, newest first (GET /v1/messages?status=). Not
-- the 'sending' rows: every message passes through that state for a moment
-- (two index entries more per message sent, at the index's busiest pages), and
-- the few in it at any time are found through deliveries_lease_idx.
-- bench/pg-dispatch: 1.02-1.15x rows/s without them (median 1.105 of four).
CREATE INDEX deliveries_tenant_status_idx ON deliveries (tenant_id, status, message_id)
    WHERE status <> 'sending';
-- The sweeper's pages of waiting mail, in id order (see 0007), and the
-- queue's counts of it.
CREATE INDEX deliveries_waiting_idx ON deliveries (message_id)
    WHERE status IN ('queued', 'scheduled', 'deferred');
-- The sweeper's expired leases, and the count in flight. (messages_pending_idx
-- held the waiting rows too: one index entry more per accepted message.)
CREATE INDEX deliveries_lease_idx ON deliveries (lease_until) WHERE status = 'sending';
-- Webhooks find a message by the provider's id.
CREATE INDEX deliveries_esp_id_idx ON deliveries (esp_message_id) WHERE esp_message_id IS NOT NULL;

-- A message's state goes with it (a tenant's hard delete cascades to its
-- content). No foreign key from deliveries: its check would lock the content
-- row of every message accepted.
CREATE FUNCTION mailerd_content_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM deliveries d USING gone g WHERE d.message_id = g.id;
    RETURN NULL;
END $$;
CREATE TRIGGER message_content_deleted AFTER DELETE ON message_content
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION mailerd_content_deleted();

CREATE VIEW messages AS
SELECT c.id, c.tenant_id, c.batch_id, d.status, d.priority, c.from_addr, c.from_name, c.to_addr,
       c.to_name, c.cc, c.bcc, c.reply_to, c.subject, c.text_body, c.html_body, c.template_id,
       c.variables, c.headers, c.tags, c.metadata, c.esp_route, d.esp, d.esp_message_id,
       d.attempts, d.last_error, c.send_at, d.next_attempt_at, d.lease_until, c.created_at,
       d.updated_at, d.sent_at, d.delivered_at, c.tracking, c.suppress_key
FROM message_content c JOIN deliveries d ON d.message_id = c.id;

-- The tables' defaults, for an INSERT through the view that leaves a column out.
ALTER VIEW messages ALTER COLUMN priority SET DEFAULT 'transactional';
ALTER VIEW messages ALTER COLUMN cc SET DEFAULT '[]';
ALTER VIEW messages ALTER COLUMN bcc SET DEFAULT '[]';
ALTER VIEW messages ALTER COLUMN subject SET DEFAULT '';
ALTER VIEW messages ALTER COLUMN headers SET DEFAULT '{}';
ALTER VIEW messages ALTER COLUMN tags SET DEFAULT '{}';
ALTER VIEW messages ALTER COLUMN metadata SET DEFAULT '{}';
ALTER VIEW messages ALTER COLUMN attempts SET DEFAULT 0;
ALTER VIEW messages ALTER COLUMN created_at SET DEFAULT now();
ALTER VIEW messages ALTER COLUMN updated_at SET DEFAULT now();

CREATE FUNCTION mailerd_messages_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM message_content WHERE id = OLD.id;
        RETURN OLD;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO message_content (id, tenant_id, batch_id, from_addr, from_name, to_addr,
            to_name, cc, bcc, reply_to, subject, text_body, html_body, template_id, variables,
            headers, tags, metadata, esp_route, send_at, created_at, tracking, suppress_key)
        VALUES (NEW.id, NEW.tenant_id, NEW.batch_id, NEW.from_addr, NEW.from_name, NEW.to_addr,
            NEW.to_name, NEW.cc, NEW.bcc, NEW.reply_to, NEW.subject, NEW.text_body,
            NEW.html_body, NEW.template_id, NEW.variables, NEW.headers, NEW.tags, NEW.metadata,
            NEW.esp_route, NEW.send_at, NEW.created_at, NEW.tracking, NEW.suppress_key);
        INSERT INTO deliveries (message_id, tenant_id, status, priority, attempts, esp,
            esp_message_id, last_error, next_attempt_at, lease_until, updated_at, sent_at,
            delivered_at)
        VALUES (NEW.id, NEW.tenant_id, NEW.status, NEW.priority, NEW.attempts, NEW.esp,
            NEW.esp_message_id, NEW.last_error, NEW.next_attempt_at, NEW.lease_until,
            NEW.updated_at, NEW.sent_at, NEW.delivered_at);
        RETURN NEW;
    END IF;
    UPDATE message_content SET (id, tenant_id, batch_id, from_addr, from_name, to_addr, to_name,
        cc, bcc, reply_to, subject, text_body, html_body, template_id, variables, headers, tags,
        metadata, esp_route, send_at, created_at, tracking, suppress_key)
      = (NEW.id, NEW.tenant_id, NEW.batch_id, NEW.from_addr, NEW.from_name, NEW.to_addr,
        NEW.to_name, NEW.cc, NEW.bcc, NEW.reply_to, NEW.subject, NEW.text_body, NEW.html_body,
        NEW.template_id, NEW.variables, NEW.headers, NEW.tags, NEW.metadata, NEW.esp_route,
        NEW.send_at, NEW.created_at, NEW.tracking, NEW.suppress_key)
    WHERE id = OLD.id;
    UPDATE deliveries SET (message_id, tenant_id, status, priority, attempts, esp,
        esp_message_id, last_error, next_attempt_at, lease_until, updated_at, sent_at,
        delivered_at)
      = (NEW.id, NEW.tenant_id, NEW.status, NEW.priority, NEW.attempts, NEW.esp,
        NEW.esp_message_id, NEW.last_error, NEW.next_attempt_at, NEW.lease_until,
        NEW.updated_at, NEW.sent_at, NEW.delivered_at)
    WHERE message_id = OLD.id;
    RETURN NEW;
END $$;
CREATE TRIGGER messages_write INSTEAD OF INSERT OR UPDATE OR DELETE ON messages
    FOR EACH ROW EXECUTE FUNCTION mailerd_messages_write();
