-- The hot path writes only where b-trees grow at their end: idempotency records become an
-- append-only log of the facts that rebuild each first answer (memory indexes the live keys),
-- and a buyer's units per drop are kept by the writer in memory, so the random (drop, buyer)
-- index goes.
ALTER TABLE idempotency_keys RENAME TO idempotency_keys_v1;

CREATE TABLE idempotency_keys (
    seq         INTEGER PRIMARY KEY,
    buyer       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    drop_id     TEXT,
    attempt_seq INTEGER,
    hold_id     TEXT,
    refusal     TEXT,
    outcome     TEXT,
    CHECK ((hold_id IS NOT NULL) + (refusal IS NOT NULL) + (outcome IS NOT NULL) = 1)
) STRICT;

INSERT INTO idempotency_keys (buyer, key, fingerprint, created_at, outcome)
    SELECT buyer, key, substr(fingerprint, 1, 16), created_at, outcome
    FROM idempotency_keys_v1 ORDER BY created_at;

DROP TABLE idempotency_keys_v1;

DROP INDEX holds_by_buyer;
