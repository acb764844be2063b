-- A tier's reserved share of a SKU: `reserved` units only holds with one of the tier's codes may
-- take, `taken` of them taken so far. Everyone else sees the SKU's stock less what is still
-- reserved.
CREATE TABLE code_reserves (
    drop_id  TEXT    NOT NULL,
    sku      TEXT    NOT NULL,
    tier     TEXT    NOT NULL,
    reserved INTEGER NOT NULL CHECK (reserved > 0),
    taken    INTEGER NOT NULL DEFAULT 0 CHECK (taken >= 0 AND taken <= reserved),
    PRIMARY KEY (drop_id, sku, tier),
    FOREIGN KEY (drop_id, sku) REFERENCES skus (drop_id, sku)
) STRICT, WITHOUT ROWID;
