-- bench/pg-dispatch, variant "narrow": md_dispatch_claim_sql against deliveries
-- (same parameters; the suppression check, the pause check and the lease are
-- kept; expiry by max_message_age is left out, it never fires here).
WITH r AS MATERIALIZED (SELECT r.*, EXISTS (SELECT 1 FROM messages mm JOIN suppressions s ON s.tenant_id = mm.tenant_id AND s.address = mm.suppress_key AND (s.expires_at IS NULL OR s.expires_at > now()) WHERE mm.id = r.id) AS supp FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS r(id, eid, n)),
 u AS (UPDATE deliveries d SET status = CASE WHEN r.supp THEN 'suppressed' ELSE 'sending' END,
   attempts = d.attempts + CASE WHEN r.supp THEN 0 ELSE 1 END,
   lease_until = CASE WHEN r.supp THEN NULL ELSE now() + make_interval(secs => $3::float8) + $5::int * interval '1 microsecond' END,
   updated_at = now()
  FROM r WHERE d.message_id = r.id AND (d.status = 'queued' OR (d.status = 'sending' AND d.lease_until < now())) IS TRUE
   AND NOT EXISTS (SELECT 1 FROM queue_pauses p WHERE p.scope = '*' OR p.scope = d.tenant_id::text)
   AND $4::float8 > 0
  RETURNING d.message_id, d.tenant_id, d.attempts, d.status, r.eid, r.n),
 e AS (INSERT INTO events (id, tenant_id, message_id, type, data)
  SELECT u.eid, u.tenant_id, u.message_id, u.status, jsonb_build_object('attempt', u.attempts) FROM u)
 SELECT u.n, m.id::text, m.tenant_id::text, u.attempts, m.priority, m.from_addr, m.from_name, m.to_addr, m.to_name, m.cc::text, m.bcc::text, m.reply_to, m.subject, m.text_body, m.html_body, m.headers::text, m.esp_route
 FROM u JOIN messages m ON m.id = u.message_id
