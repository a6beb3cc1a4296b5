-- 0001_identity: tenants and their API keys.
--
-- This file has shipped: never edit it. `mailerd migrate` stores its SHA-256 and
-- refuses to run when an applied file changed; change the schema with a new
-- NNNN_name.sql instead. It runs in one transaction with its schema_migrations
-- row, so it must not hold BEGIN/COMMIT or statements that cannot run inside a
-- transaction (CREATE INDEX CONCURRENTLY, VACUUM).
--
-- Ids are UUIDv7 made by mailerd (md_uuid7), never by the database: no DEFAULT,
-- so an INSERT that forgets the id fails instead of silently getting a random v4
-- id. v7 ids are time-ordered, which keeps primary-key inserts at the right edge
-- of the btree and lets listings page by id in creation order.
--
-- Enumerated states are text with a CHECK rather than enum types: a later
-- migration can widen a CHECK in a transaction, while enum values cannot be
-- removed and a new one cannot be used in the transaction that adds it.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    -- Free-form labels for the operator. Always an object, so that the API can
    -- merge PATCHes into it with ||.
    metadata    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Set by mailerd's UPDATE statements (no trigger: every write path is in
    -- src/store, and a trigger would hide one more write from its readers).
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Soft delete: a deleted tenant's messages and events keep a valid reference
    -- for audit and retention; reads filter on deleted_at IS NULL.
    deleted_at  timestamptz
);

-- Admin listings of live tenants, paged by id (creation order).
CREATE INDEX tenants_live_idx ON tenants (id) WHERE deleted_at IS NULL;

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    -- Tenants are normally soft-deleted (their keys are revoked then); the cascade
    -- only matters when a tenant row is purged for good, and takes its keys along.
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL DEFAULT '' CHECK (char_length(name) <= 200),
    -- The public, recognisable start of the key, shown in listings so an operator
    -- can tell keys apart without the secret. Not unique and never used to
    -- authenticate.
    prefix       text NOT NULL CHECK (char_length(prefix) BETWEEN 1 AND 64),
    -- SHA-256 of the whole secret; the secret itself is never stored. A plain fast
    -- hash (not bcrypt/argon2) is enough because the secret carries at least 256
    -- random bits from the OS CSPRNG, so it cannot be guessed from the hash, and
    -- it lets authentication be one indexed equality lookup per uncached key. The
    -- length check keeps a hex string (or the secret) from being stored by mistake.
    secret_hash  bytea NOT NULL UNIQUE CHECK (octet_length(secret_hash) = 32),
    scopes       text[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Written in batches by the workers (not once per request), so it lags by up
    -- to one flush interval.
    last_used_at timestamptz,
    -- Revocation keeps the row: listings and audits still show the key.
    revoked_at   timestamptz
);

-- A tenant's keys in creation order (listing), and the index the ON DELETE
-- CASCADE above needs to avoid scanning api_keys. Authentication needs no index
-- of its own: the UNIQUE constraint on secret_hash provides it.
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, id);

-- Active keys per tenant (listing only usable keys, counting them against a
-- limit); revoked keys accumulate and are left out of it.
CREATE INDEX api_keys_active_idx ON api_keys (tenant_id, id) WHERE revoked_at IS NULL;
