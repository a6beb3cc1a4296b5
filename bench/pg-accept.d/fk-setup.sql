-- message_content with the foreign keys migration 0011 dropped (the tenant's, a
-- trigger per row that looks the tenant up and locks it; the batch's and the
-- template's, NULL here, a trigger event per row each). The statement is the
-- current one, which also locks the tenant once: the difference is the keys.
ALTER TABLE message_content
    ADD CONSTRAINT messages_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    ADD CONSTRAINT messages_batch_id_fkey FOREIGN KEY (batch_id) REFERENCES batches (id) ON DELETE CASCADE,
    ADD CONSTRAINT messages_template_id_fkey FOREIGN KEY (template_id) REFERENCES templates (id);
