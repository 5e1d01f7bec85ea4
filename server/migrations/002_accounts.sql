-- Identity and access: programs, users with a role, pairings of a coach and a mentee, devices and
-- their tokens, the actors each device writes with, what every document is, and an audit of who
-- changed which document when. See docs/access.md for the rules these tables feed.

-- Bumped by every change an administrator makes (users, pairings, tokens, devices). A running
-- relay polls it and re-reads the accounts when it moves, so revocations reach live connections.
CREATE TABLE revision (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    value  INTEGER NOT NULL
) STRICT;
INSERT INTO revision (id, value) VALUES (1, 0);

CREATE TABLE programs (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,      -- the `program` field of Tandem documents
    created_at  INTEGER NOT NULL           -- unix milliseconds
) STRICT;

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,      -- the user id written in documents (`mentee`, `coach`)
    role        TEXT NOT NULL CHECK (role IN ('mentee', 'coach', 'coordinator', 'admin')),
    program     INTEGER REFERENCES programs (id),   -- NULL only for admins
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE pairings (
    id          INTEGER PRIMARY KEY,
    program     INTEGER NOT NULL REFERENCES programs (id),
    coach       INTEGER NOT NULL REFERENCES users (id),
    mentee      INTEGER NOT NULL REFERENCES users (id),
    starts_at   INTEGER NOT NULL,
    ends_at     INTEGER                    -- NULL while open-ended
) STRICT;
CREATE INDEX pairings_by_mentee ON pairings (mentee);

-- A device belongs to one user. `device_id` is the 16-byte id a Tandem device writes with as its
-- Automerge actor. Web clients (random actors per document) get a device whose actors are bound
-- on first use (`bind_on_first_use`).
CREATE TABLE devices (
    id                 INTEGER PRIMARY KEY,
    device_id          BLOB NOT NULL UNIQUE,
    user_id            INTEGER NOT NULL REFERENCES users (id),
    name               TEXT NOT NULL,
    bind_on_first_use  INTEGER NOT NULL,
    created_at         INTEGER NOT NULL
) STRICT;

-- Which device may write with which Automerge actor. An actor belongs to at most one device.
CREATE TABLE device_actors (
    actor      BLOB PRIMARY KEY,
    device     INTEGER NOT NULL REFERENCES devices (id),
    bound_at   INTEGER NOT NULL
) STRICT;

-- Bearer tokens, stored only as SHA-256 hashes of the 32 random bytes handed out once.
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    hash        BLOB NOT NULL UNIQUE,
    user_id     INTEGER NOT NULL REFERENCES users (id),
    device      INTEGER NOT NULL REFERENCES devices (id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;

-- What each document is, decided from its content when it first reached the relay, and who
-- created it. Documents stored before accounts existed are `other` without a creator.
ALTER TABLE documents ADD COLUMN kind TEXT NOT NULL DEFAULT 'other';
ALTER TABLE documents ADD COLUMN program INTEGER REFERENCES programs (id);
ALTER TABLE documents ADD COLUMN coach INTEGER REFERENCES users (id);
ALTER TABLE documents ADD COLUMN mentee INTEGER REFERENCES users (id);
ALTER TABLE documents ADD COLUMN creator INTEGER REFERENCES users (id);

-- Who changed which document when: one row per accepted sync message that brought changes.
CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    document   BLOB NOT NULL REFERENCES documents (id),
    user_id    INTEGER REFERENCES users (id),       -- NULL for anonymous (development) peers
    device     INTEGER REFERENCES devices (id),
    changes    INTEGER NOT NULL,
    hashes     TEXT NOT NULL,                       -- the new change hashes, hex, space separated
    at         INTEGER NOT NULL
) STRICT;
CREATE INDEX audit_by_document ON audit (document, seq);
