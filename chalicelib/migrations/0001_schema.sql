-- The relational model of the three MooVitamix resources (see docs/schema.md).
--
-- Timestamps are `timestamp` (without time zone): the API serves naive ISO strings, and the
-- pipeline treats them as UTC. `timestamps_as_served` keeps the served text of a timestamp
-- only when Python's isoformat() of its value would not reproduce it (NULL normally).
--
-- Resources arrive in any order, so a listen history can name a user or a track that is not
-- loaded yet. The writer then inserts a *placeholder* row (id only, `is_placeholder`), which
-- the real row replaces when it arrives: the foreign keys hold at every moment, nothing waits
-- and nothing is lost. The CHECK constraints keep placeholders and loaded rows apart.

CREATE TABLE users (
    id                   bigint PRIMARY KEY,
    first_name           text,
    last_name            text,
    email                text,
    gender               text,
    favorite_genres      text,
    created_at           timestamp,
    updated_at           timestamp,
    is_placeholder       boolean NOT NULL DEFAULT false,
    timestamps_as_served jsonb,
    run_id               text,
    fetched_at           text,
    stored_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_loaded_rows_are_complete CHECK (
        is_placeholder
        OR num_nulls(first_name, last_name, email, gender, favorite_genres, created_at,
                     updated_at, run_id, fetched_at) = 0
    ),
    CONSTRAINT users_placeholders_are_empty CHECK (
        NOT is_placeholder
        OR num_nonnulls(first_name, last_name, email, gender, favorite_genres, created_at,
                        updated_at, timestamps_as_served, run_id, fetched_at) = 0
    )
);

CREATE TABLE tracks (
    id                   bigint PRIMARY KEY,
    name                 text,
    artist               text,
    songwriters          text,
    duration             text CONSTRAINT tracks_duration_is_mm_ss
                             CHECK (duration ~ '^[0-9]{1,3}:[0-5][0-9]$'),
    duration_s           integer GENERATED ALWAYS AS (
                             split_part(duration, ':', 1)::integer * 60
                             + split_part(duration, ':', 2)::integer
                         ) STORED,
    genres               text,
    album                text,
    created_at           timestamp,
    updated_at           timestamp,
    is_placeholder       boolean NOT NULL DEFAULT false,
    timestamps_as_served jsonb,
    run_id               text,
    fetched_at           text,
    stored_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tracks_loaded_rows_are_complete CHECK (
        is_placeholder
        OR num_nulls(name, artist, songwriters, duration, genres, album, created_at,
                     updated_at, run_id, fetched_at) = 0
    ),
    CONSTRAINT tracks_placeholders_are_empty CHECK (
        NOT is_placeholder
        OR num_nonnulls(name, artist, songwriters, duration, genres, album, created_at,
                        updated_at, timestamps_as_served, run_id, fetched_at) = 0
    )
);

CREATE TABLE listen_history (
    user_id              bigint NOT NULL REFERENCES users (id),
    created_at           timestamp NOT NULL,
    updated_at           timestamp NOT NULL,
    timestamps_as_served jsonb,
    run_id               text NOT NULL,
    fetched_at           text NOT NULL,
    stored_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, created_at)
);

-- One row per track of a history, `position` 1, 2, ... in the order the API served them.
-- Replaced as a whole when a newer version of the history is stored.
CREATE TABLE listen_history_item (
    user_id              bigint NOT NULL,
    created_at           timestamp NOT NULL,
    position             integer NOT NULL CHECK (position >= 1),
    track_id             bigint NOT NULL REFERENCES tracks (id),
    PRIMARY KEY (user_id, created_at, position),
    FOREIGN KEY (user_id, created_at)
        REFERENCES listen_history (user_id, created_at) ON DELETE CASCADE
);

CREATE INDEX listen_history_item_track_id ON listen_history_item (track_id);
CREATE INDEX users_placeholders ON users (id) WHERE is_placeholder;
CREATE INDEX tracks_placeholders ON tracks (id) WHERE is_placeholder;
