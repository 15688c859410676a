-- The passages an answer was grounded in, kept with the message so that a conversation read
-- later still shows (and links) its sources. A JSON array; empty for most messages.
ALTER TABLE messages ADD COLUMN citations TEXT NOT NULL DEFAULT '[]';
