-- Agents, conversations, tiered memory, goals, reminders, approvals, usage, notifications.

ALTER TABLE tenants ADD COLUMN memory_retention_days INTEGER;

CREATE TABLE agents (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    owner_id    UUID REFERENCES users (id) ON DELETE CASCADE,
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
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX agents_tenant ON agents (tenant_id, id);

CREATE TABLE conversations (
    id           UUID PRIMARY KEY,
    tenant_id    UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    client_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    agent_id     UUID NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    channel      TEXT NOT NULL CHECK (channel IN ('web', 'sms', 'api')),
    title        TEXT NOT NULL,
    summary      TEXT NOT NULL,
    summary_upto UUID,
    archived     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX conversations_tenant ON conversations (tenant_id, id);
CREATE INDEX conversations_client ON conversations (client_id, agent_id);

CREATE TABLE messages (
    id                UUID PRIMARY KEY,
    tenant_id         UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id   UUID NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role              TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content           TEXT NOT NULL,
    tool_calls        TEXT NOT NULL,
    tool_call_id      TEXT,
    status            TEXT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX messages_conversation ON messages (conversation_id, id);

CREATE TABLE client_profiles (
    tenant_id  UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    client_id  UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    profile    TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE memories (
    id         UUID PRIMARY KEY,
    tenant_id  UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    client_id  UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    key        TEXT,
    content    TEXT NOT NULL,
    source     TEXT NOT NULL,
    embedding  BYTEA,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX memories_client ON memories (client_id, id);
CREATE INDEX memories_tenant_updated ON memories (tenant_id, updated_at);

CREATE TABLE goals (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    client_id   UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title       TEXT NOT NULL,
    description TEXT NOT NULL,
    status      TEXT NOT NULL,
    key_results TEXT NOT NULL,
    due_date    DATE,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX goals_client ON goals (client_id, id);

CREATE TABLE reminders (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    client_id       UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    conversation_id UUID REFERENCES conversations (id) ON DELETE SET NULL,
    text            TEXT NOT NULL,
    due_at          TIMESTAMPTZ NOT NULL,
    status          TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX reminders_client ON reminders (client_id, id);
CREATE INDEX reminders_due ON reminders (status, due_at);

CREATE TABLE approvals (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id UUID NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    message_id      UUID NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    client_id       UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    agent_id        UUID NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    tool_call       TEXT NOT NULL,
    status          TEXT NOT NULL,
    decided_by      UUID,
    resumed         BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      TIMESTAMPTZ NOT NULL,
    decided_at      TIMESTAMPTZ
);
CREATE INDEX approvals_tenant ON approvals (tenant_id, id);

-- No foreign keys on people or agents: usage stays countable after they are removed.
CREATE TABLE usage_records (
    id                UUID PRIMARY KEY,
    tenant_id         UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    client_id         UUID NOT NULL,
    agent_id          UUID NOT NULL,
    conversation_id   UUID,
    model             TEXT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_usd          DOUBLE PRECISION NOT NULL,
    estimated         BOOLEAN NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX usage_client_agent ON usage_records (tenant_id, client_id, agent_id, created_at);

CREATE TABLE notifications (
    id         UUID PRIMARY KEY,
    tenant_id  UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    message    TEXT NOT NULL,
    dedup_key  TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    read_at    TIMESTAMPTZ,
    UNIQUE (user_id, dedup_key)
);
CREATE INDEX notifications_user ON notifications (user_id, id);
