-- Workflow definitions (one row per version) and their runs (step states as JSON).
CREATE TABLE workflows (
    id         BLOB PRIMARY KEY,
    tenant_id  BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    definition TEXT NOT NULL,
    created_by BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at TEXT NOT NULL,
    UNIQUE (tenant_id, name, version)
);

CREATE TABLE workflow_runs (
    id          BLOB PRIMARY KEY,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    workflow    TEXT NOT NULL,
    version     INTEGER NOT NULL,
    definition  TEXT NOT NULL,
    status      TEXT NOT NULL,
    origin      TEXT NOT NULL,
    input       TEXT NOT NULL,
    steps       TEXT NOT NULL,
    error       TEXT,
    job_id      BLOB,
    created_by  BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX workflow_runs_tenant ON workflow_runs (tenant_id, workflow, id);
