-- Agents, conversations, tiered memory, goals, reminders, approvals, usage, notifications.

ALTER TABLE tenants ADD COLUMN memory_retention_days INTEGER;

CREATE TABLE agents (
    id          BLOB PRIMARY KEY,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    owner_id    BLOB REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    persona     TEXT NOT NULL,
    model       TEXT NOT NULL,
    params      TEXT NOT NULL,
    tools       TEXT NOT NULL,
    approval_tools TEXT NOT NULL,
    collections TEXT NOT NULL,
    memory      TEXT NOT NULL,
    budget      TEXT NOT NULL,
    template    TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX agents_tenant ON agents (tenant_id, id);

CREATE TABLE conversations (
    id           BLOB PRIMARY KEY,
    tenant_id    BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    client_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    agent_id     BLOB NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    channel      TEXT NOT NULL CHECK (channel IN ('web', 'sms', 'api')),
    title        TEXT NOT NULL,
    summary      TEXT NOT NULL,
    summary_upto BLOB,
    archived     INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX conversations_tenant ON conversations (tenant_id, id);
CREATE INDEX conversations_client ON conversations (client_id, agent_id);

CREATE TABLE messages (
    id                BLOB PRIMARY KEY,
    tenant_id         BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id   BLOB NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role              TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content           TEXT NOT NULL,
    tool_calls        TEXT NOT NULL,
    tool_call_id      TEXT,
    status            TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created_at        TEXT NOT NULL
);
CREATE INDEX messages_conversation ON messages (conversation_id, id);

CREATE TABLE client_profiles (
    tenant_id  BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    client_id  BLOB PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    profile    TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE memories (
    id         BLOB PRIMARY KEY,
    tenant_id  BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    client_id  BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    key        TEXT,
    content    TEXT NOT NULL,
    source     TEXT NOT NULL,
    embedding  BLOB,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX memories_client ON memories (client_id, id);
CREATE INDEX memories_tenant_updated ON memories (tenant_id, updated_at);

CREATE TABLE goals (
    id          BLOB PRIMARY KEY,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    client_id   BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title       TEXT NOT NULL,
    description TEXT NOT NULL,
    status      TEXT NOT NULL,
    key_results TEXT NOT NULL,
    due_date    TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX goals_client ON goals (client_id, id);

CREATE TABLE reminders (
    id              BLOB PRIMARY KEY,
    tenant_id       BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    client_id       BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    conversation_id BLOB REFERENCES conversations (id) ON DELETE SET NULL,
    text            TEXT NOT NULL,
    due_at          TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX reminders_client ON reminders (client_id, id);
CREATE INDEX reminders_due ON reminders (status, due_at);

CREATE TABLE approvals (
    id              BLOB PRIMARY KEY,
    tenant_id       BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id BLOB NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    message_id      BLOB NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    client_id       BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    agent_id        BLOB NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    tool_call       TEXT NOT NULL,
    status          TEXT NOT NULL,
    decided_by      BLOB,
    resumed         INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    decided_at      TEXT
);
CREATE INDEX approvals_tenant ON approvals (tenant_id, id);

-- No foreign keys on people or agents: usage stays countable after they are removed.
CREATE TABLE usage_records (
    id                BLOB PRIMARY KEY,
    tenant_id         BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    client_id         BLOB NOT NULL,
    agent_id          BLOB NOT NULL,
    conversation_id   BLOB,
    model             TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd          REAL NOT NULL,
    estimated         INTEGER NOT NULL,
    created_at        TEXT NOT NULL
);
CREATE INDEX usage_client_agent ON usage_records (tenant_id, client_id, agent_id, created_at);

CREATE TABLE notifications (
    id         BLOB PRIMARY KEY,
    tenant_id  BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    message    TEXT NOT NULL,
    dedup_key  TEXT NOT NULL,
    created_at TEXT NOT NULL,
    read_at    TEXT,
    UNIQUE (user_id, dedup_key)
);
CREATE INDEX notifications_user ON notifications (user_id, id);
