-- bench/pg-dispatch, variant "narrow": the delivered count that ends a run (the
-- state lives in deliveries, not messages).
SELECT count(*) FROM deliveries WHERE status = 'delivered'
