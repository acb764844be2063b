-- Access codes (presale tiers): only each code's SHA-256 is kept (over the drop's id, a newline
-- and the code), with its tier, how often it may be used, and when. `uses` counts the holds
-- placed with it, in the hold's transaction; the CHECK is the database's backstop against a code
-- used once too often.
CREATE TABLE access_codes (
    seq         INTEGER PRIMARY KEY,
    drop_id     TEXT    NOT NULL REFERENCES drops (id),
    code_hash   BLOB    NOT NULL,
    tier        TEXT    NOT NULL,
    max_uses    INTEGER NOT NULL CHECK (max_uses > 0),
    uses        INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
    valid_from  INTEGER,
    valid_until INTEGER,
    created_at  INTEGER NOT NULL,
    UNIQUE (drop_id, code_hash)
) STRICT;

-- The code a hold was placed with, if any.
ALTER TABLE holds ADD COLUMN code_seq INTEGER REFERENCES access_codes (seq);
