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
