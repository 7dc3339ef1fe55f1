-- Analyst view of a contact stream: typed timestamps (0 -> NULL).
CREATE OR REPLACE VIEW analytics.{view} AS
SELECT
    id,
    first_name,
    last_name,
    email_id,
    org_id,
    gender,
    to_timestamp(NULLIF(created_at, 0)) AS created_at,
    to_timestamp(NULLIF(updated_at, 0)) AS updated_at,
    to_timestamp(NULLIF(last_login_at, 0)) AS last_login_at,
    _hw_synced_at AS synced_at
FROM {table}
WHERE _hw_deleted_at IS NULL;
