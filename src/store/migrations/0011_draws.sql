-- Raffles (`mode = 'draw'`): buyers enter before the start, and the start draws the winners.
-- The mode's CHECK is part of `drops`, so the table is rebuilt with the wider one (foreign keys
-- are off while migrations run, and checked before each step commits). Its CHECKs are chains of
-- comparisons, not IN lists: every batch updates `drops`, and SQLite builds a temporary b-tree
-- for an IN list in a CHECK on every update.
CREATE TABLE drops_next (
    id              TEXT    PRIMARY KEY,
    name            TEXT    NOT NULL,
    description     TEXT    NOT NULL DEFAULT '',
    starts_at       INTEGER NOT NULL,
    ends_at         INTEGER NOT NULL,
    per_buyer_limit INTEGER NOT NULL CHECK (per_buyer_limit > 0),
    hold_seconds    INTEGER NOT NULL CHECK (hold_seconds > 0),
    override_state  TEXT    CHECK (override_state = 'paused' OR override_state = 'closed'),
    attempt_seq     INTEGER NOT NULL DEFAULT 0,
    version         INTEGER NOT NULL DEFAULT 1,
    created_at      INTEGER NOT NULL,
    revision        INTEGER NOT NULL DEFAULT 1,
    closed_at       INTEGER,
    mode            TEXT    NOT NULL DEFAULT 'fcfs'
                            CHECK (mode = 'fcfs' OR mode = 'queue' OR mode = 'draw'),
    CHECK (ends_at > starts_at)
) STRICT;

INSERT INTO drops_next (id, name, description, starts_at, ends_at, per_buyer_limit,
                        hold_seconds, override_state, attempt_seq, version, created_at, revision,
                        closed_at, mode)
    SELECT id, name, description, starts_at, ends_at, per_buyer_limit, hold_seconds,
           override_state, attempt_seq, version, created_at, revision, closed_at, mode
    FROM drops;
DROP TABLE drops;
ALTER TABLE drops_next RENAME TO drops;
CREATE INDEX drops_closing ON drops (ends_at) WHERE closed_at IS NULL;

-- One row per raffle. `seed` stays secret until `drawn_at` (the start); its SHA-256 is in the
-- ledger from the drop's creation. `entered` counts the entries, `winners` the entries the draw
-- gave units to.
CREATE TABLE draws (
    drop_id  TEXT    PRIMARY KEY REFERENCES drops (id),
    seed     BLOB    NOT NULL,
    entered  INTEGER NOT NULL DEFAULT 0,
    drawn_at INTEGER,
    winners  INTEGER
) STRICT, WITHOUT ROWID;

-- A buyer's one entry per SKU. The draw sets `rank` (their place in the SKU's drawn order) and
-- `won` (units won; 0 for an entry not drawn, which then waits on the SKU's waiting list), and
-- `hold_seq` names the winner's hold.
CREATE TABLE draw_entries (
    drop_id    TEXT    NOT NULL,
    sku        TEXT    NOT NULL,
    buyer      TEXT    NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    entered_at INTEGER NOT NULL,
    rank       INTEGER,
    won        INTEGER CHECK (won >= 0),
    hold_seq   INTEGER REFERENCES holds (seq),
    PRIMARY KEY (drop_id, sku, buyer),
    FOREIGN KEY (drop_id, sku) REFERENCES skus (drop_id, sku)
) STRICT, WITHOUT ROWID;

CREATE INDEX draw_entries_by_buyer ON draw_entries (drop_id, buyer);
