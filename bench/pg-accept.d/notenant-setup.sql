-- message_content without the (tenant_id, id) index; listings would read deliveries' indexes.
DROP INDEX message_content_tenant_idx;
