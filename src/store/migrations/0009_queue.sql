-- Queue drops (`mode = 'queue'`): a randomized pre-queue, then admission at a set rate.
ALTER TABLE drops ADD COLUMN mode TEXT NOT NULL DEFAULT 'fcfs'
    CHECK (mode = 'fcfs' OR mode = 'queue');

-- One row per queue drop. `seed` stays secret until `seeded_at` (the start, when the writer
-- draws the pre-start joiners' places); its SHA-256 is in the ledger from the drop's creation.
-- `joined` counts the entries, so a late arrival's place needs no scan.
CREATE TABLE queues (
    drop_id           TEXT    PRIMARY KEY REFERENCES drops (id),
    seed              BLOB    NOT NULL,
    admission_seconds INTEGER NOT NULL CHECK (admission_seconds > 0),
    joined            INTEGER NOT NULL DEFAULT 0,
    seeded_at         INTEGER
) STRICT, WITHOUT ROWID;

-- The serving number's history: from `at` it grows from `base` at `rate` per second unless
-- `paused`. The first row is at the drop's start; each admin change of the rate appends one.
CREATE TABLE queue_rates (
    seq     INTEGER PRIMARY KEY,
    drop_id TEXT    NOT NULL REFERENCES drops (id),
    at      INTEGER NOT NULL,
    base    INTEGER NOT NULL CHECK (base >= 0),
    rate    INTEGER NOT NULL CHECK (rate >= 0),
    paused  INTEGER NOT NULL CHECK (paused = 0 OR paused = 1)
) STRICT;

CREATE INDEX queue_rates_by_drop ON queue_rates (drop_id, seq);

-- A buyer's one place in a drop's queue: NULL until the start draws it for those who joined
-- before; a later arrival gets the next place when they join.
CREATE TABLE queue_entries (
    drop_id   TEXT    NOT NULL REFERENCES drops (id),
    buyer     TEXT    NOT NULL,
    joined_at INTEGER NOT NULL,
    place     INTEGER,
    PRIMARY KEY (drop_id, buyer)
) STRICT, WITHOUT ROWID;
