-- Text messages: a user's phone number (one per user, unique in the tenant, E.164) and the
-- tenant's numbers, each answered by one agent. A number is unique across tenants: an inbound
-- text names only the number it was sent to.
CREATE TABLE phones (
    user_id    BLOB PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    tenant_id  BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    number     TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (tenant_id, number)
);

CREATE TABLE sms_numbers (
    number     TEXT PRIMARY KEY,
    tenant_id  BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id   BLOB NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL
);
CREATE INDEX sms_numbers_tenant ON sms_numbers (tenant_id, agent_id);
