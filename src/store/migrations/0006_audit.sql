-- Settings revision: a counter only admin edits of a drop's settings change (never a sale), so
-- an operator's `PATCH` with `If-Match` fails instead of overwriting an edit it has not seen.
ALTER TABLE drops ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;

-- Every admin and service-key action, written in the same transaction as its change. `actor`
-- is the key's id (`ak_...`, `sk_...`), `payment-callback`, or `cli` (a command run on the box).
-- `before` and `after` are the changed thing as JSON (absent where it did not or no longer
-- exists). An action sent with an `Idempotency-Key` keeps the key, its request's fingerprint
-- and, where it differs from `after`, the answer it got, so a retry replays instead of acting
-- twice.
CREATE TABLE audit_log (
    seq             INTEGER PRIMARY KEY,
    at              INTEGER NOT NULL,
    actor           TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    target          TEXT    NOT NULL,
    before          TEXT,
    after           TEXT,
    request_id      TEXT,
    idempotency_key TEXT,
    fingerprint     BLOB,
    answer          TEXT
) STRICT;
CREATE UNIQUE INDEX audit_log_idempotency ON audit_log (actor, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
