-- What happened to a running server (the reconciler's restarts and redeploys,
-- status changes, refused egress), newest last; NOTIFY bmm_server_events.
CREATE TABLE server_events (
    id BIGSERIAL PRIMARY KEY,
    org_id UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    server_id UUID NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data JSONB,
    at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX server_events_by_server ON server_events (server_id, id);

-- A truthful status: LIVE, DEGRADED (being restored) or DOWN, with the reason.
ALTER TABLE servers
    ADD COLUMN status_reason TEXT,
    ADD COLUMN status_changed_at TIMESTAMPTZ;
