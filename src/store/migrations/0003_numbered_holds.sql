-- Holds are numbered: the row id is the hold's number and its public id is derived from it
-- (`hld_[<box>_]<seq hex>-<secret hex>`, the secret checked on every lookup so ids stay
-- unguessable), so placing a hold adds no entry to a b-tree keyed by random text. Holds made
-- before keep their ids (`legacy_id`); orders point at their hold's number.
ALTER TABLE holds RENAME TO holds_v2;
ALTER TABLE orders RENAME TO orders_v2;

CREATE TABLE holds (
    seq         INTEGER PRIMARY KEY,
    secret      INTEGER NOT NULL,
    box         TEXT,
    legacy_id   TEXT,
    drop_id     TEXT    NOT NULL,
    sku         TEXT    NOT NULL,
    buyer       TEXT    NOT NULL,
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    attempt_seq INTEGER NOT NULL,
    -- a chain of comparisons, not IN (...): SQLite builds a temporary b-tree for an IN list in a
    -- CHECK on every insert and update
    state       TEXT    NOT NULL CHECK (state = 'active' OR state = 'confirmed'
                                        OR state = 'released' OR state = 'expired'),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    id          TEXT    GENERATED ALWAYS AS (coalesce(legacy_id,
                    'hld_' || coalesce(box || '_', '') || printf('%x-%016x', seq, secret))) VIRTUAL,
    FOREIGN KEY (drop_id, sku) REFERENCES skus (drop_id, sku),
    UNIQUE (drop_id, attempt_seq)
) STRICT;

INSERT INTO holds (secret, legacy_id, drop_id, sku, buyer, quantity, attempt_seq, state,
                   created_at, expires_at, ended_at)
    SELECT 0, id, drop_id, sku, buyer, quantity, attempt_seq, state, created_at, expires_at,
           ended_at
    FROM holds_v2 ORDER BY created_at, rowid;

CREATE TABLE orders (
    id           TEXT    PRIMARY KEY,
    hold_seq     INTEGER NOT NULL UNIQUE REFERENCES holds (seq),
    hold_id      TEXT    NOT NULL,
    drop_id      TEXT    NOT NULL,
    sku          TEXT    NOT NULL,
    buyer        TEXT    NOT NULL,
    quantity     INTEGER NOT NULL CHECK (quantity > 0),
    unit_amount  INTEGER NOT NULL,
    currency     TEXT    NOT NULL,
    total_amount INTEGER NOT NULL,
    payment_ref  TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    FOREIGN KEY (drop_id, sku) REFERENCES skus (drop_id, sku)
) STRICT;

INSERT INTO orders (id, hold_seq, hold_id, drop_id, sku, buyer, quantity, unit_amount, currency,
                    total_amount, payment_ref, created_at)
    SELECT o.id, h.seq, o.hold_id, o.drop_id, o.sku, o.buyer, o.quantity, o.unit_amount,
           o.currency, o.total_amount, o.payment_ref, o.created_at
    FROM orders_v2 o JOIN holds h ON h.legacy_id = o.hold_id;

DROP TABLE orders_v2;
DROP TABLE holds_v2;

CREATE UNIQUE INDEX holds_by_legacy_id ON holds (legacy_id) WHERE legacy_id IS NOT NULL;
CREATE INDEX holds_active_by_expiry ON holds (expires_at) WHERE state = 'active';
CREATE INDEX orders_by_buyer ON orders (buyer, created_at);
CREATE INDEX orders_by_drop ON orders (drop_id, id);
