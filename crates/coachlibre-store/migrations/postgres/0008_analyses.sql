-- Business analyses: the sections written by each skill (JSON) and the aggregated report.
CREATE TABLE analyses (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_by  UUID REFERENCES users (id) ON DELETE SET NULL,
    url         TEXT NOT NULL,
    company     TEXT NOT NULL,
    status      TEXT NOT NULL,
    job_id      UUID,
    sections    TEXT NOT NULL,
    report      TEXT,
    error       TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ
);
CREATE INDEX analyses_tenant ON analyses (tenant_id, id);
