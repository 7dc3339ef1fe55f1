-- Analyst view of a message stream: typed timestamps (0 -> NULL), flags as booleans.
CREATE OR REPLACE VIEW analytics.{view} AS
SELECT
    id,
    ticket_id,
    sender_id,
    worker_id,
    is_outgoing = 1 AS is_outgoing,
    is_not_sent = 1 AS is_not_sent,
    storage_size,
    response_time,
    to_timestamp(NULLIF(created, 0)) AS created_at,
    _hw_synced_at AS synced_at
FROM {table}
WHERE _hw_deleted_at IS NULL;
