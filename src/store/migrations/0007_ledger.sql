-- The fairness ledger: per drop, every change of the drop as a typed entry in one hash chain
-- (`hash` = SHA-256 of the previous entry's hash and `entry`, the entry's canonical JSON).
-- `ledgers` holds each drop's chain head and the secret salt its buyers' names are hashed with;
-- `ledger_heads` the writer's Ed25519 signature over the head after each batch that appended.
CREATE TABLE ledgers (
    drop_id  TEXT    PRIMARY KEY,
    salt     BLOB    NOT NULL,
    position INTEGER NOT NULL,
    hash     BLOB    NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE ledger (
    drop_id  TEXT    NOT NULL,
    position INTEGER NOT NULL,
    entry    TEXT    NOT NULL,
    hash     BLOB    NOT NULL,
    PRIMARY KEY (drop_id, position)
) STRICT, WITHOUT ROWID;

CREATE TABLE ledger_heads (
    drop_id   TEXT    NOT NULL,
    position  INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    key_id    TEXT    NOT NULL,
    signature BLOB    NOT NULL,
    PRIMARY KEY (drop_id, position)
) STRICT, WITHOUT ROWID;

-- A numbered attempt's record keeps its ledger position, so a replay shows its receipt.
ALTER TABLE idempotency_keys ADD COLUMN ledger_position INTEGER;

-- Drops made before the ledger start their chain at their next change.
INSERT INTO ledgers (drop_id, salt, position, hash)
    SELECT id, randomblob(16), 0, zeroblob(32) FROM drops;
