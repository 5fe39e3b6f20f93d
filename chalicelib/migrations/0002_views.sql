-- Views the recommender queries (see docs/schema.md for example queries). Plain views, so
-- they are always current; listen counts come from listen_history_item, one row per track of
-- a history.

-- One row per (user, track) that appears in the user's listen histories.
CREATE VIEW user_track_interactions AS
SELECT item.user_id,
       item.track_id,
       count(*)                        AS listens,
       count(DISTINCT item.created_at) AS histories,
       min(item.created_at)            AS first_seen_at,
       max(history.updated_at)         AS last_seen_at
FROM listen_history_item AS item
JOIN listen_history AS history USING (user_id, created_at)
GROUP BY item.user_id, item.track_id;

-- One row per track, listened to or not; rank 1 is the track with the most listeners.
CREATE VIEW track_popularity AS
SELECT track.id                     AS track_id,
       track.name,
       track.artist,
       track.genres,
       count(item.track_id)         AS listens,
       count(DISTINCT item.user_id) AS listeners,
       rank() OVER (
           ORDER BY count(DISTINCT item.user_id) DESC, count(item.track_id) DESC
       )                            AS popularity_rank
FROM tracks AS track
LEFT JOIN listen_history_item AS item ON item.track_id = track.id
GROUP BY track.id;

-- One row per (user, genre of the tracks they listened to): listens and share of the user's
-- listens (of loaded tracks), rank 1 being the user's most listened genre.
CREATE VIEW user_genre_affinity AS
SELECT item.user_id,
       track.genres AS genre,
       count(*)     AS listens,
       round(count(*)::numeric / sum(count(*)) OVER (PARTITION BY item.user_id), 4) AS share,
       rank() OVER (PARTITION BY item.user_id ORDER BY count(*) DESC) AS genre_rank
FROM listen_history_item AS item
JOIN tracks AS track ON track.id = item.track_id
WHERE NOT track.is_placeholder
GROUP BY item.user_id, track.genres;

-- One row per loaded user: their declared favourite genre beside what they listen to.
CREATE VIEW user_listening_summary AS
SELECT usr.id AS user_id,
       usr.favorite_genres,
       (SELECT count(*) FROM listen_history AS history
         WHERE history.user_id = usr.id)                       AS histories,
       (SELECT count(*) FROM listen_history_item AS item
         WHERE item.user_id = usr.id)                          AS listens,
       (SELECT count(DISTINCT item.track_id) FROM listen_history_item AS item
         WHERE item.user_id = usr.id)                          AS distinct_tracks,
       (SELECT affinity.genre FROM user_genre_affinity AS affinity
         WHERE affinity.user_id = usr.id
         ORDER BY affinity.listens DESC, affinity.genre LIMIT 1) AS top_genre,
       (SELECT max(history.updated_at) FROM listen_history AS history
         WHERE history.user_id = usr.id)                       AS last_active_at
FROM users AS usr
WHERE NOT usr.is_placeholder;

-- Users and tracks that a listen history names but that are not loaded yet. Empty once every
-- resource of a run is in; a row that stays names an id the API never served.
CREATE VIEW unresolved_references AS
SELECT 'users' AS entity, id, stored_at AS waiting_since FROM users WHERE is_placeholder
UNION ALL
SELECT 'tracks' AS entity, id, stored_at AS waiting_since FROM tracks WHERE is_placeholder;
