-- A floor, not a proposal: message_content without the GIN index on tags and
-- the (tenant_id, id) index the unfiltered listing reads.
DROP INDEX message_content_tags_idx;
DROP INDEX message_content_tenant_idx;
