-- The rows each run wrote, page by page (chalicelib/evidence.py): `run_page` is the page of
-- `run_id` the stored version came from, and the index lets the reconciliation read a run's
-- rows back in a few keyset-paged statements instead of looking every key up.
--
-- Rows written before this migration (and placeholders) have no page: they never match a
-- run's read-back, so a run that wrote them is checked key by key, as before.

ALTER TABLE users ADD COLUMN run_page integer;
ALTER TABLE tracks ADD COLUMN run_page integer;
ALTER TABLE listen_history ADD COLUMN run_page integer;

CREATE INDEX users_run_rows ON users (run_id, run_page, id) WHERE run_page IS NOT NULL;
CREATE INDEX tracks_run_rows ON tracks (run_id, run_page, id) WHERE run_page IS NOT NULL;
CREATE INDEX listen_history_run_rows ON listen_history (run_id, run_page, user_id, created_at)
    WHERE run_page IS NOT NULL;
