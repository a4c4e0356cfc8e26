-- The gateway routes a server to its one LIVE deployment: make two impossible.
CREATE UNIQUE INDEX deployments_one_live ON deployments (server_id) WHERE status = 'LIVE';
-- The route table loads every LIVE deployment.
CREATE INDEX deployments_status ON deployments (status) WHERE status IN ('LIVE', 'DRAINING');
