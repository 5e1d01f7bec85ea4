-- Session logs, coach's notes and directories belong to one pairing, fixed when they first reach
-- the relay: a later pairing of the same coach and mentee must not revive the notes of an ended
-- one. A pairing's directory document is the first directory recorded for it. NULL for documents
-- and pairings recorded before this migration (decided by coach and mentee, as before).
ALTER TABLE documents ADD COLUMN pairing INTEGER REFERENCES pairings (id);
ALTER TABLE pairings ADD COLUMN directory BLOB;
