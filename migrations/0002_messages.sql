-- 0002_messages: templates, batches, messages, their events, suppressions and
-- idempotency keys (issue 4: the send API).
--
-- Never edit this file once shipped (see 0001). Ids are UUIDv7 made by mailerd.

CREATE TABLE templates (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    subject     text NOT NULL DEFAULT '',
    html        text,
    text        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Soft delete: messages keep a valid template_id for audit.
    deleted_at  timestamptz,
    CHECK (html IS NOT NULL OR text IS NOT NULL)
);
-- Partials refer to other templates of the tenant by name.
CREATE UNIQUE INDEX templates_tenant_name_idx ON templates (tenant_id, name) WHERE deleted_at IS NULL;
CREATE INDEX templates_tenant_idx ON templates (tenant_id, id) WHERE deleted_at IS NULL;

CREATE TABLE batches (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    accepted    integer NOT NULL CHECK (accepted >= 0),
    rejected    integer NOT NULL DEFAULT 0 CHECK (rejected >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batches_tenant_idx ON batches (tenant_id, id);

-- One row per recipient. Content is stored rendered (subject/text/html after the
-- template ran at accept time), so what is sent is exactly what was accepted and
-- a later template edit cannot change mail already in the queue.
CREATE TABLE messages (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    batch_id        uuid REFERENCES batches (id) ON DELETE CASCADE,
    -- accepted: committed, not yet on the queue; queued: on the queue; scheduled:
    -- waiting for send_at; sending: leased by a dispatcher until lease_until;
    -- deferred: waiting for a retry at next_attempt_at; the rest are final or
    -- follow from provider events (delivered, bounced, complained).
    status          text NOT NULL CHECK (status IN ('accepted', 'queued', 'scheduled', 'sending',
                        'sent', 'delivered', 'deferred', 'bounced', 'complained', 'failed',
                        'suppressed', 'canceled')),
    priority        text NOT NULL DEFAULT 'transactional'
                        CHECK (priority IN ('transactional', 'bulk')),
    from_addr       text NOT NULL,
    from_name       text,
    to_addr         text NOT NULL,
    to_name         text,
    -- [{"address": "...", "name": "..."}]; the message is one recipient (to_addr),
    -- cc/bcc ride along on it.
    cc              jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(cc) = 'array'),
    bcc             jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(bcc) = 'array'),
    reply_to        text,
    subject         text NOT NULL DEFAULT '',
    text_body       text,
    html_body       text,
    template_id     uuid REFERENCES templates (id),
    variables       jsonb,
    headers         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(headers) = 'object'),
    tags            text[] NOT NULL DEFAULT '{}',
    metadata        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    esp_route       text,           -- the caller's route override, if any
    esp             text,           -- the account that took the last attempt
    esp_message_id  text,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    send_at         timestamptz,
    next_attempt_at timestamptz,
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    delivered_at    timestamptz,
    CHECK (text_body IS NOT NULL OR html_body IS NOT NULL)
);
-- Listings page by id (UUIDv7: creation order) within a tenant, with filters.
CREATE INDEX messages_tenant_idx ON messages (tenant_id, id);
CREATE INDEX messages_tenant_status_idx ON messages (tenant_id, status, id);
CREATE INDEX messages_batch_idx ON messages (batch_id, status) WHERE batch_id IS NOT NULL;
CREATE INDEX messages_tags_idx ON messages USING gin (tags);
-- The sweeper's view: only unfinished messages, a small part of the table.
CREATE INDEX messages_pending_idx ON messages (status, next_attempt_at)
    WHERE status IN ('accepted', 'queued', 'scheduled', 'sending', 'deferred');
CREATE INDEX messages_esp_id_idx ON messages (esp_message_id) WHERE esp_message_id IS NOT NULL;

-- Every status change is an event row. Partitioned by month so retention drops
-- whole partitions; the default partition catches rows outside the prepared
-- months (mailerd creates partitions ahead with mailerd_event_partitions()).
-- A partitioned table's keys must include the partition column.
CREATE TABLE events (
    id                uuid NOT NULL,
    tenant_id         uuid NOT NULL,
    message_id        uuid NOT NULL,
    type              text NOT NULL,
    data              jsonb NOT NULL DEFAULT '{}',
    provider_event_id text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (created_at, id)
) PARTITION BY RANGE (created_at);
CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE INDEX events_message_idx ON events (message_id, created_at);
CREATE INDEX events_tenant_idx ON events (tenant_id, created_at, id);

-- Creates the monthly partitions from this month to months_ahead months on
-- (idempotent). Called by migrate and by a daily job in the workers.
CREATE FUNCTION mailerd_event_partitions(months_ahead integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m date := date_trunc('month', now())::date;
    i integer;
    name text;
BEGIN
    FOR i IN 0..months_ahead LOOP
        name := 'events_' || to_char(m + make_interval(months => i), 'YYYYMM');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                           name, m + make_interval(months => i), m + make_interval(months => i + 1));
        END IF;
    END LOOP;
END $$;
SELECT mailerd_event_partitions(2);

-- Per tenant. address is md_address_normalize()'s form: domain lower-cased
-- (A-label), local part as given.
CREATE TABLE suppressions (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    address     text NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('hard_bounce', 'soft_bounce', 'complaint',
                    'unsubscribe', 'manual')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    PRIMARY KEY (tenant_id, address)
);
CREATE INDEX suppressions_expiry_idx ON suppressions (expires_at) WHERE expires_at IS NOT NULL;

-- Idempotency-Key: the first answer is stored with the messages it created, in the
-- same transaction, so a replay returns it and creates nothing.
CREATE TABLE idempotency_keys (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key           text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    request_hash  bytea NOT NULL CHECK (octet_length(request_hash) = 32),
    status_code   integer NOT NULL,
    response      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- The answer stored with an Idempotency-Key is the one the caller built before
-- the statuses were known (suppression is decided in SQL, at commit). This puts
-- each message's committed status (statuses: message id -> status) into the
-- "status" member of resp itself and of the objects in resp's top-level arrays
-- whose "id" is that message's: {"id","status"} or {"messages":[{"id","status"}]}.
-- Two levels only, not a recursive walk: a 1,000-recipient answer takes about a
-- millisecond this way, and this runs inside the shared group-commit transaction.
CREATE FUNCTION mailerd_idem_patch(resp jsonb, statuses jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(resp) <> 'object' OR statuses IS NULL THEN resp ELSE (
        SELECT COALESCE(jsonb_object_agg(k, CASE
            WHEN k = 'status' AND statuses ? (resp ->> 'id') THEN statuses -> (resp ->> 'id')
            WHEN jsonb_typeof(v) = 'array' THEN (
                SELECT COALESCE(jsonb_agg(CASE
                    WHEN jsonb_typeof(x) = 'object' AND x ? 'status' AND statuses ? (x ->> 'id')
                    THEN jsonb_set(x, '{status}', statuses -> (x ->> 'id'))
                    ELSE x END ORDER BY i), '[]'::jsonb)
                FROM jsonb_array_elements(v) WITH ORDINALITY AS a (x, i))
            ELSE v END), '{}'::jsonb)
        FROM jsonb_each(resp) AS e (k, v)) END
$$;
