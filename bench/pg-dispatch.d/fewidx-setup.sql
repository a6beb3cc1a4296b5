-- bench/pg-dispatch, variant "fewidx": messages as it is, less the index entries
-- a drained message's two (non-HOT) updates add that a schema could do without:
-- the status index keeps only the statuses worth finding by status (a listing
-- of delivered mail would walk messages_tenant_idx instead), and the tags, batch
-- and (tenant, id) indexes are gone (their queries would need another way). An
-- experiment in what those entries cost, not a proposal as it stands.
DROP INDEX messages_tenant_status_idx;
CREATE INDEX messages_tenant_status_idx ON messages (tenant_id, status, id)
    WHERE status NOT IN ('sending', 'sent', 'delivered');
DROP INDEX messages_tags_idx;
DROP INDEX messages_batch_idx;
DROP INDEX messages_tenant_idx;
VACUUM ANALYZE messages;
CHECKPOINT;
