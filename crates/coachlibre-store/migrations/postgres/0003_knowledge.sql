-- Knowledge: collections, documents (with their extracted text) and chunks (with embeddings).

ALTER TABLE tenants ADD COLUMN knowledge_epoch BIGINT NOT NULL DEFAULT 0;

CREATE TABLE collections (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    owner_id    UUID REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX collections_tenant ON collections (tenant_id, id);

CREATE TABLE documents (
    id            UUID PRIMARY KEY,
    tenant_id     UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    collection_id UUID NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    title         TEXT NOT NULL,
    source        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    version       INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'ready', 'failed')),
    error         TEXT,
    chunks_total  INTEGER NOT NULL,
    chunks_done   INTEGER NOT NULL,
    metadata      TEXT NOT NULL,
    text          TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (collection_id, source)
);
CREATE INDEX documents_collection ON documents (tenant_id, collection_id, id);
CREATE INDEX documents_status ON documents (status);

CREATE TABLE chunks (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    collection_id   UUID NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    document_id     UUID NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ordinal         INTEGER NOT NULL,
    heading         TEXT NOT NULL,
    text            TEXT NOT NULL,
    span_start      BIGINT NOT NULL,
    span_end        BIGINT NOT NULL,
    embedding       BYTEA,
    embedding_model TEXT NOT NULL
);
CREATE INDEX chunks_tenant ON chunks (tenant_id, id);
CREATE INDEX chunks_document ON chunks (document_id);
