-- Keys have a scope: `admin` (the admin API) or `payments` (a payment service that confirms
-- holds into orders). Both are stored only as hashes.
ALTER TABLE admin_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin'
    CHECK (scope = 'admin' OR scope = 'payments');
