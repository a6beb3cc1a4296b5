-- 0010_refresh_stats: planner statistics that keep up with a growing table.
--
-- Never edit this file once shipped (see 0001).
--
-- mailerd's statements are prepared, and PostgreSQL keeps the plan it makes for
-- them until the statistics of their tables change. Planned while a table is
-- small (a new database, the first minutes of an install), the cheapest plan of
-- the dispatcher's claim and record is a sequential scan of deliveries joined
-- by hash, and it stays cached while the table grows: every batch then reads
-- the whole table. Autovacuum renews the statistics, but it visits a database
-- once per autovacuum_naptime (a minute by default), and at thousands of
-- messages a second a minute is a table of a million rows read per batch. In
-- bench/ingest with the sink delivering, 545 of the 626 claims that took more
-- than 3 ms had such a plan (auto_explain).
--
-- mailerd calls this function every analyze_interval (src/store/md_analyze.c).
-- It analyzes the tables of the current schema changed since their last
-- analyze by more than their analyzed size (and at least min_changes rows)
-- while that size is below max_rows: a young table each time it doubles. Past
-- max_rows the plans are the index lookups they will stay, and autovacuum (10%
-- of changes) keeps the statistics. ANALYZE invalidates the cached plans of the
-- table, so the next execution plans it as it now is. It samples 3,000 rows
-- (default_statistics_target 10): enough for the sizes and the few values of
-- the columns the plans test, and quick, since the connection it runs on also
-- carries a worker's statements pipelined behind it. One caller at a time
-- across workers and hosts (the others return at once); a table that is being
-- vacuumed or analyzed is skipped, not waited for. Returns the tables it
-- analyzed (or skipped: locked).
CREATE FUNCTION mailerd_refresh_stats(min_changes bigint, max_rows bigint) RETURNS SETOF text
LANGUAGE plpgsql SET default_statistics_target = 10 AS $$
DECLARE
    t record;
BEGIN
    -- 0x6d61696c65726473 is "mailerds": a key no other advisory lock uses.
    IF NOT pg_try_advisory_xact_lock(7881696737154458739) THEN
        RETURN;
    END IF;
    FOR t IN
        SELECT format('%I.%I', s.schemaname, s.relname) AS name
        FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
        WHERE s.schemaname = current_schema() AND c.relkind = 'r'
          AND pg_has_role(c.relowner, 'USAGE') -- ANALYZE skips others' tables
          AND c.reltuples < max_rows
          AND s.n_mod_since_analyze >= greatest(c.reltuples, min_changes)
        ORDER BY s.n_mod_since_analyze DESC
    LOOP
        EXECUTE 'ANALYZE (SKIP_LOCKED) ' || t.name;
        RETURN NEXT t.name;
    END LOOP;
END
$$;
