-- 0004_events: what hearing back from the providers needs (issue 7).
--
-- Never edit this file once shipped (see 0001).

-- Each provider event is stored once: a webhook delivered twice (providers
-- retry) finds its (provider, event_id) here and changes nothing. events is
-- partitioned by created_at, so a unique key on it would have to include the
-- partition column; this small table carries the uniqueness instead.
CREATE TABLE webhook_events (
    provider    text NOT NULL CHECK (provider IN ('ses', 'sendgrid', 'postmark', 'mailgun')),
    event_id    text NOT NULL CHECK (char_length(event_id) BETWEEN 1 AND 300),
    message_id  uuid,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);
CREATE INDEX webhook_events_received_idx ON webhook_events (received_at);

-- Where a suppression came from (api, import, hard_bounce, complaint, unsubscribe,
-- soft_bounce rule) and the event or text behind it.
ALTER TABLE suppressions ADD COLUMN source text NOT NULL DEFAULT 'api';
ALTER TABLE suppressions ADD COLUMN detail text;
CREATE INDEX suppressions_tenant_reason_idx ON suppressions (tenant_id, reason, address);

-- Soft bounces by recipient, for the rule "N soft bounces within a window
-- suppress for a while" (events carry the message, not the address). Rows older
-- than the window are cleaned up with the expired suppressions.
CREATE TABLE soft_bounces (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    address    text NOT NULL,
    message_id uuid,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX soft_bounces_addr_idx ON soft_bounces (tenant_id, address, at);
CREATE INDEX soft_bounces_at_idx ON soft_bounces (at);
