-- A new message marks its conversation as updated, in the same statement: storing a client's
-- message is one statement (no transaction of two), which is what a turn waits for first.

CREATE TRIGGER messages_touch_conversation AFTER INSERT ON messages
BEGIN
    UPDATE conversations SET updated_at = NEW.created_at WHERE id = NEW.conversation_id;
END;
