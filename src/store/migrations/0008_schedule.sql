-- The writer commits a drop's close by its schedule as a change of its own (a ledger entry, a
-- signed head, a `drop.state_changed`), once: `closed_at` is when that, or an admin's close,
-- was committed. The partial index finds the next drop to close without a scan.
ALTER TABLE drops ADD COLUMN closed_at INTEGER;

CREATE INDEX drops_closing ON drops (ends_at) WHERE closed_at IS NULL;

-- Drops an admin closed before this step were closed then; their schedule has nothing to add.
UPDATE drops SET closed_at = CAST(unixepoch('subsec') * 1000 AS INTEGER)
    WHERE override_state = 'closed';
