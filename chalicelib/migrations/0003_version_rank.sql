-- The second half of a version (chalicelib/contract.py, version_rank): when the stored row was
-- fetched, as a UTC instant. Newest-wins compares (updated_at, fetched_at_utc), so a content
-- that changed while its updated_at did not is applied (the later fetch wins the tie), and the
-- same record delivered again (equal both) changes nothing. NULL ranks before any fetch.
--
-- `fetched_at` stays the text of the stream envelope; rows written before this migration get
-- the instant when their text is one the pipeline writes (ISO 8601 in UTC).

ALTER TABLE users ADD COLUMN fetched_at_utc timestamp;
ALTER TABLE tracks ADD COLUMN fetched_at_utc timestamp;
ALTER TABLE listen_history ADD COLUMN fetched_at_utc timestamp;

UPDATE users SET fetched_at_utc = fetched_at::timestamptz AT TIME ZONE 'UTC'
WHERE fetched_at ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(\+00:00|Z)$';
UPDATE tracks SET fetched_at_utc = fetched_at::timestamptz AT TIME ZONE 'UTC'
WHERE fetched_at ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(\+00:00|Z)$';
UPDATE listen_history SET fetched_at_utc = fetched_at::timestamptz AT TIME ZONE 'UTC'
WHERE fetched_at ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(\+00:00|Z)$';
