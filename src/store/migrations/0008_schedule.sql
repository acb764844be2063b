-- The writer commits a drop's close by its schedule as a change of its own (a ledger entry, a
-- signed head, a `drop.state_changed`), once: `closed_at` is when that, or an admin's close,
-- was committed. The partial index finds the next drop to close without a scan.
ALTER TABLE drops ADD COLUMN closed_at INTEGER;

CREATE INDEX drops_closing ON drops (ends_at) WHERE closed_at IS NULL;

-- Drops an admin closed before this step were closed then; their schedule has nothing to add.
UPDATE drops SET closed_at = CAST(unixepoch('subsec') * 1000 AS INTEGER)
    WHERE override_state = 'closed';
-- Drops whose end had passed before this step closed then, by the clock: announcing those
-- closes now, perhaps months later, would tell webhooks something false.
UPDATE drops SET closed_at = ends_at
    WHERE closed_at IS NULL AND ends_at <= CAST(unixepoch('subsec') * 1000 AS INTEGER);

-- A batch's chain head is its last entry, and the head's signature rides on that entry's row:
-- two pages fewer written per batch than a head row and a signature row of their own.
ALTER TABLE ledger ADD COLUMN key_id TEXT;
ALTER TABLE ledger ADD COLUMN signature BLOB;
UPDATE ledger SET (key_id, signature) = (
        SELECT h.key_id, h.signature FROM ledger_heads h
        WHERE h.drop_id = ledger.drop_id AND h.position = ledger.position)
    WHERE EXISTS (SELECT 1 FROM ledger_heads h
                  WHERE h.drop_id = ledger.drop_id AND h.position = ledger.position);
DROP TABLE ledger_heads;
ALTER TABLE ledgers DROP COLUMN position;
ALTER TABLE ledgers DROP COLUMN hash;
