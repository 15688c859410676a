-- Business analyses: the sections written by each skill (JSON) and the aggregated report.
CREATE TABLE analyses (
    id          BLOB PRIMARY KEY,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_by  BLOB REFERENCES users (id) ON DELETE SET NULL,
    url         TEXT NOT NULL,
    company     TEXT NOT NULL,
    status      TEXT NOT NULL,
    job_id      BLOB,
    sections    TEXT NOT NULL,
    report      TEXT,
    error       TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX analyses_tenant ON analyses (tenant_id, id);
