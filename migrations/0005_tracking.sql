-- 0005_tracking: open/click tracking and one-click unsubscribe (issue 7).
--
-- Never edit this file once shipped (see 0001).

-- A tenant's defaults; a message's "tracking" field overrides each of them.
ALTER TABLE tenants ADD COLUMN track_opens boolean NOT NULL DEFAULT false;
ALTER TABLE tenants ADD COLUMN track_clicks boolean NOT NULL DEFAULT false;

-- Per message, set at accept when anything was put into it (NULL otherwise, so
-- untracked mail costs nothing):
--   {"opens": bool, "clicks": bool, "unsubscribe": bool, "links": ["https://...", ...]}
-- links[i] is the original URL of the html's i-th rewritten link. A click token
-- carries (message id, i) under an HMAC, and the click route redirects only to
-- links[i] of that message: never to a URL taken from the request, so the
-- route cannot be used as an open redirect.
ALTER TABLE messages ADD COLUMN tracking jsonb
    CHECK (tracking IS NULL OR jsonb_typeof(tracking) = 'object');
