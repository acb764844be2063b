-- The schema as the migrations in src/store/migrations/ leave it (a test checks they agree).
-- Times are Unix milliseconds (UTC). Money is integer minor units plus an ISO 4217 code.

-- `mode`: `fcfs`, `queue` or `draw` (see the queue and draw tables below). `revision` grows
-- only with admin edits of a drop's settings, never with a sale (`If-Match`). `closed_at`: when
-- the drop's close (by its schedule, committed by the writer, or by an admin) was committed.
-- Rebuilt by the draws step (to widen `mode`), which is why its name is quoted as SQLite
-- records a renamed table.
CREATE TABLE "drops" (
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

CREATE INDEX drops_closing ON drops (ends_at) WHERE closed_at IS NULL;

CREATE TABLE skus (
    drop_id      TEXT    NOT NULL REFERENCES drops (id),
    sku          TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    price_amount INTEGER NOT NULL CHECK (price_amount >= 0),
    currency     TEXT    NOT NULL,
    position     INTEGER NOT NULL,
    stock_total  INTEGER NOT NULL CHECK (stock_total >= 0),
    held         INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0),
    sold         INTEGER NOT NULL DEFAULT 0 CHECK (sold >= 0),
    PRIMARY KEY (drop_id, sku),
    -- the database itself refuses an oversell
    CHECK (held + sold <= stock_total)
) STRICT, WITHOUT ROWID;

-- A hold's number is its row id; its public id is derived from the number and a random secret
-- checked on every lookup (`id`, computed, never stored or indexed): `hld_<seq hex>-<secret
-- hex>`, with `<box>_` after `hld_` when the server runs with --box-id. Holds made before schema
-- version 3 keep their ids in `legacy_id`. `code_seq`: the access code a hold was placed with
-- (added by ALTER TABLE, so spelled as SQLite records it).
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
                    'hld_' || coalesce(box || '_', '') || printf('%x-%016x', seq, secret))) VIRTUAL, code_seq INTEGER REFERENCES access_codes (seq),
    FOREIGN KEY (drop_id, sku) REFERENCES skus (drop_id, sku),
    UNIQUE (drop_id, attempt_seq)
) STRICT;

CREATE UNIQUE INDEX holds_by_legacy_id ON holds (legacy_id) WHERE legacy_id IS NOT NULL;
CREATE INDEX holds_active_by_expiry ON holds (expires_at) WHERE state = 'active';

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

CREATE INDEX orders_by_buyer ON orders (buyer, created_at);
CREATE INDEX orders_by_drop ON orders (drop_id, id);

-- One outcome per (buyer, key), written in the same transaction as the effect it describes.
-- Append-only, with no index on the key: the writer keeps the live keys in memory (loaded at
-- start) and deletes records older than the retention window (--idempotency-retention, 24 h by
-- default) from the front. A record holds the facts that rebuild the first answer: the hold it
-- made (for a confirmation, the hold of its order), or the refusal; `outcome` is the rendered
-- answer of records written before schema version 2. `fingerprint` is the first 16 bytes of
-- the request's SHA-256 fingerprint. A hold attempt that took a number in its drop's arrival
-- order carries it (`drop_id`, `attempt_seq`): the log is also the record of every numbered
-- attempt, its outcome and its time, which an attempts export can read without a row of its own.
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
    outcome     TEXT, ledger_position INTEGER,
    CHECK ((hold_id IS NOT NULL) + (refusal IS NOT NULL) + (outcome IS NOT NULL) = 1)
) STRICT;

-- Admin keys and service keys (`scope`) are stored only as SHA-256 hashes. (`scope` was added
-- by ALTER TABLE, which is why it is spelled as SQLite records it.)
CREATE TABLE admin_keys (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,
    key_hash   BLOB    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
, scope TEXT NOT NULL DEFAULT 'admin'
    CHECK (scope = 'admin' OR scope = 'payments')) STRICT;

-- The transactional outbox: every change other systems hear about, written in the same
-- transaction as the change. `seq` is the delivery order; the public id adds a random secret
-- so that ids stay unique even after a restore to an earlier point reuses numbers.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY,
    secret     INTEGER NOT NULL,
    type       TEXT    NOT NULL,
    drop_id    TEXT    NOT NULL,
    -- the drop's version once the change committed
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    -- the event's `data`, as JSON
    data       TEXT    NOT NULL,
    id         TEXT    GENERATED ALWAYS AS ('evt_' || printf('%x-%016x', seq, secret)) VIRTUAL
) STRICT;

-- Webhook endpoints. `delivered_seq`: every event up to it is delivered or dead-lettered. The
-- signing secret is kept to sign with; the API shows it once.
CREATE TABLE webhooks (
    id            TEXT    PRIMARY KEY,
    url           TEXT    NOT NULL,
    events        TEXT    NOT NULL,
    secret        TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state = 'active' OR state = 'disabled'),
    delivered_seq INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

-- Events an endpoint did not take within the attempts allowed, with the body as it was sent,
-- so pruning the outbox never loses one. `retrying`: an operator asked for another try.
CREATE TABLE webhook_dead_letters (
    webhook_id TEXT    NOT NULL,
    event_seq  INTEGER NOT NULL,
    event_id   TEXT    NOT NULL,
    type       TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    last_error TEXT    NOT NULL,
    state      TEXT    NOT NULL CHECK (state = 'dead' OR state = 'retrying'
                                       OR state = 'delivered'),
    dead_at    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (webhook_id, event_seq)
) STRICT, WITHOUT ROWID;

-- Every admin and service-key action, written in the same transaction as its change. `actor`
-- is the key's id (`ak_...`, `sk_...`), `payment-callback`, or `cli` (a command run on the box).
-- `before` and `after` are the changed thing as JSON (absent where it did not or no longer
-- exists). An action sent with an `Idempotency-Key` keeps the key, its request's fingerprint
-- and, where it differs from `after`, the answer it got, so a retry replays instead of acting
-- twice.
CREATE TABLE audit_log (
    seq             INTEGER PRIMARY KEY,
    at              INTEGER NOT NULL,
    actor           TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    target          TEXT    NOT NULL,
    before          TEXT,
    after           TEXT,
    request_id      TEXT,
    idempotency_key TEXT,
    fingerprint     BLOB,
    answer          TEXT
) STRICT;
CREATE UNIQUE INDEX audit_log_idempotency ON audit_log (actor, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The fairness ledger: per drop, every change of the drop as a typed entry in one hash chain
-- (`hash` = SHA-256 of the previous entry's hash and `entry`, the entry's canonical JSON).
-- `ledgers` holds the secret salt each drop's buyers' names are hashed with; the chain's head
-- is its last entry, and the last entry of each batch carries the writer's Ed25519 signature
-- over the head it made (`key_id`, `signature`; added by ALTER TABLE, hence the spelling, as
-- the dropped columns of `ledgers` are).
CREATE TABLE ledgers (
    drop_id  TEXT    PRIMARY KEY,
    salt     BLOB    NOT NULL) STRICT, WITHOUT ROWID;

CREATE TABLE ledger (
    drop_id  TEXT    NOT NULL,
    position INTEGER NOT NULL,
    entry    TEXT    NOT NULL,
    hash     BLOB    NOT NULL, key_id TEXT, signature BLOB,
    PRIMARY KEY (drop_id, position)
) STRICT, WITHOUT ROWID;

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
