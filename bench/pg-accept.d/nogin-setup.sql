-- message_content without the GIN index on tags (GET /v1/messages?tag= is a
-- prepared statement whose generic plan walks the tenant's ids newest first and
-- filters; it does not read this index).
DROP INDEX message_content_tags_idx;
