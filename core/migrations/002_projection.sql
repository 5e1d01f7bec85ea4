-- Tandem device store, version 2: the query projection.
--
-- These tables are derived data: each document's rows are replaced in the same transaction that
-- appends the document's chunk, so they always match what is stored. They answer the app's lists
-- ("milestones due this week", "sessions this month") without loading Automerge documents.
-- Dates are TEXT 'YYYY-MM-DD' (they sort as dates); instants are INTEGER milliseconds (UTC).

CREATE TABLE plans (
    id             BLOB PRIMARY KEY NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    mentee         TEXT NOT NULL,
    program        TEXT NOT NULL,
    term           TEXT NOT NULL,
    schema_version INTEGER NOT NULL
) STRICT;

CREATE INDEX plans_by_mentee ON plans (mentee);

-- A plan can have several coaches; "plans of a coach" reads this table.
CREATE TABLE plan_coaches (
    plan  BLOB NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    coach TEXT NOT NULL,
    PRIMARY KEY (plan, coach)
) STRICT, WITHOUT ROWID;

CREATE INDEX plan_coaches_by_coach ON plan_coaches (coach);

CREATE TABLE goals (
    plan        BLOB NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    -- Position in the plan's read-back order (creation order).
    position    INTEGER NOT NULL,
    title       TEXT NOT NULL,
    category    TEXT NOT NULL,
    status      TEXT NOT NULL,
    progress    INTEGER NOT NULL,
    target_date TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (plan, id)
) STRICT, WITHOUT ROWID;

CREATE TABLE milestones (
    plan     BLOB NOT NULL,
    goal     TEXT NOT NULL,
    id       TEXT NOT NULL,
    position INTEGER NOT NULL,
    title    TEXT NOT NULL,
    due      TEXT,
    done     INTEGER NOT NULL CHECK (done IN (0, 1)),
    PRIMARY KEY (plan, goal, id),
    FOREIGN KEY (plan, goal) REFERENCES goals (plan, id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- "Milestones due this week": open milestones by due date.
CREATE INDEX milestones_by_due ON milestones (due) WHERE due IS NOT NULL;

CREATE TABLE check_ins (
    plan       BLOB NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    id         TEXT NOT NULL,
    at         INTEGER NOT NULL,
    rating     INTEGER NOT NULL,
    reflection TEXT NOT NULL,
    by_user    TEXT NOT NULL,
    PRIMARY KEY (plan, id)
) STRICT, WITHOUT ROWID;

CREATE INDEX check_ins_by_plan_at ON check_ins (plan, at);

-- Sessions do not reference `plans`: a coach's device can hold a session before its plan arrives.
CREATE TABLE sessions (
    id               BLOB PRIMARY KEY NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    plan             BLOB NOT NULL,
    coach            TEXT NOT NULL,
    mentee           TEXT NOT NULL,
    start            INTEGER NOT NULL,
    duration_minutes INTEGER NOT NULL,
    mode             TEXT NOT NULL,
    mood             INTEGER,
    follow_up        TEXT,
    schema_version   INTEGER NOT NULL
) STRICT;

CREATE INDEX sessions_by_start ON sessions (start);
CREATE INDEX sessions_by_plan_start ON sessions (plan, start);
CREATE INDEX sessions_by_coach_start ON sessions (coach, start);
CREATE INDEX sessions_by_mentee_start ON sessions (mentee, start);

CREATE TABLE action_items (
    session  BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    id       TEXT NOT NULL,
    position INTEGER NOT NULL,
    text     TEXT NOT NULL,
    owner    TEXT NOT NULL,
    due      TEXT,
    done     INTEGER NOT NULL CHECK (done IN (0, 1)),
    PRIMARY KEY (session, id)
) STRICT, WITHOUT ROWID;

-- "Open action items of a person".
CREATE INDEX action_items_by_owner ON action_items (owner, done, due);
