-- bench/pg-dispatch, variant "narrow": md_dispatch_sent_sql against deliveries
-- (same parameters and events).
WITH r AS (SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::text[], $5::text[], $6::boolean[], $7::uuid[], $8::uuid[], $9::jsonb[]) AS r(id, n, attempt, esp, pid, delivered, eid1, eid2, hops)),
 u AS (UPDATE deliveries d SET status = CASE WHEN r.delivered THEN 'delivered' ELSE 'sent' END,
   esp = r.esp, esp_message_id = r.pid, sent_at = now(),
   delivered_at = CASE WHEN r.delivered THEN now() + interval '1 microsecond' ELSE d.delivered_at END,
   lease_until = NULL, next_attempt_at = NULL, last_error = NULL, updated_at = now()
  FROM r WHERE d.message_id = r.id AND d.attempts = r.attempt AND (d.status = 'sending') IS TRUE
  RETURNING d.message_id, d.tenant_id, d.attempts, r.n, r.esp, r.pid, r.delivered, r.eid1, r.eid2, r.hops),
 h AS (INSERT INTO events (id, tenant_id, message_id, type, data, created_at)
  SELECT (x->>'id')::uuid, u.tenant_id, u.message_id, 'esp_failed', (x - 'id' - 'at') || jsonb_build_object('attempt', u.attempts), to_timestamp((x->>'at')::float8)
  FROM u CROSS JOIN LATERAL jsonb_array_elements(u.hops) AS x),
 e AS (INSERT INTO events (id, tenant_id, message_id, type, data, created_at)
  SELECT v.eid, u.tenant_id, u.message_id, v.type, jsonb_build_object('esp', u.esp, 'esp_message_id', u.pid, 'attempt', u.attempts), now() + v.off
  FROM u CROSS JOIN LATERAL (VALUES (u.eid1, 'sent', interval '0'), (u.eid2, 'delivered', interval '1 microsecond')) AS v(eid, type, off)
  WHERE v.type = 'sent' OR u.delivered)
 SELECT n FROM u
