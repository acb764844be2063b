-- Waiting lists: a buyer waits for a sold-out SKU; freed units become an offer hold for the
-- first waiter in order (`rank`: the queue place on a queue drop, 0 otherwise; then `seq`, the
-- arrival). `state` is `waiting` until the writer offers (`hold_seq` names the offer hold) or
-- the buyer leaves.
CREATE TABLE waitlist (
    seq       INTEGER PRIMARY KEY,
    drop_id   TEXT    NOT NULL,
    sku       TEXT    NOT NULL,
    buyer     TEXT    NOT NULL,
    quantity  INTEGER NOT NULL CHECK (quantity > 0),
    rank      INTEGER NOT NULL,
    joined_at INTEGER NOT NULL,
    state     TEXT    NOT NULL CHECK (state IN ('waiting', 'offered', 'left')),
    hold_seq  INTEGER REFERENCES holds (seq),
    ended_at  INTEGER,
    FOREIGN KEY (drop_id, sku) REFERENCES skus (drop_id, sku)
) STRICT;

-- One waiting entry per buyer and SKU; the next waiter without a scan.
CREATE UNIQUE INDEX waitlist_waiting ON waitlist (drop_id, sku, buyer) WHERE state = 'waiting';
CREATE INDEX waitlist_next ON waitlist (drop_id, sku, rank, seq) WHERE state = 'waiting';
CREATE INDEX waitlist_by_buyer ON waitlist (drop_id, buyer);
