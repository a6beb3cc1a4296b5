-- 0011_content_fks: message_content without foreign keys; its writers check the
-- tenant once per statement, and deletes of tenants and batches take the
-- content along by statement triggers.
--
-- Never edit this file once shipped (see 0001).
--
-- A foreign key is checked by a trigger per inserted row: the tenant's looks
-- the tenant up and locks it, and the batch's and the template's queue an
-- event per row even when the column is NULL. For the group commit's
-- statement, which inserts a flush of messages at once, the keys cost 1.06 to
-- 1.19 times PostgreSQL's CPU per accepted message without them (bench/pg-accept
-- -n 5 -V fk, median 1.09; the statement locking the tenant once in both).
-- mailerd's accept statements now call mailerd_lock_tenants once per
-- statement: it locks the flush's distinct tenants as the key check did (FOR KEY SHARE, so a concurrent purge of a
-- tenant waits for the accept and then deletes what it wrote) and fails with
-- the same SQLSTATE (23503) when one is gone. Batches are inserted by the same
-- statement as their messages. template_id records which template a message
-- was rendered from; templates are soft-deleted, and one purged by hand no
-- longer blocks its purge (the messages keep their rendered content).
--
-- Rows written by hand (operators, tests) are no longer checked: they must name
-- an existing tenant.
ALTER TABLE message_content DROP CONSTRAINT messages_tenant_id_fkey,
    DROP CONSTRAINT messages_batch_id_fkey, DROP CONSTRAINT messages_template_id_fkey;

CREATE FUNCTION mailerd_lock_tenants(ids uuid[]) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    want bigint;
    got bigint;
BEGIN
    SELECT count(DISTINCT x) INTO want FROM unnest(ids) AS x WHERE x IS NOT NULL;
    SELECT count(*) INTO got
    FROM (SELECT 1 FROM tenants WHERE id = ANY (ids) FOR KEY SHARE) AS t;
    IF got < want THEN
        RAISE foreign_key_violation USING MESSAGE = 'a message''s tenant does not exist';
    END IF;
    RETURN true;
END $$;

-- What the foreign keys' ON DELETE CASCADE did: a tenant's purge, or a batch's
-- delete, deletes its messages (and mailerd_content_deleted their state). A
-- purge also deletes the tenant's events, which never had a key (they waited
-- for their partition's retention, with the addresses in their data).
CREATE FUNCTION mailerd_owner_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'tenants' THEN
        DELETE FROM message_content c USING gone g WHERE c.tenant_id = g.id;
        DELETE FROM events e USING gone g WHERE e.tenant_id = g.id;
    ELSE
        DELETE FROM message_content c USING gone g WHERE c.batch_id = g.id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tenants_deleted AFTER DELETE ON tenants
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION mailerd_owner_deleted();
CREATE TRIGGER batches_deleted AFTER DELETE ON batches
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION mailerd_owner_deleted();
