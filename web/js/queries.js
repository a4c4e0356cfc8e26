// Every GraphQL document the dashboard sends, in one place, so aligning with
// schema.graphql (the exported SDL at the repo root) is one file's work.

export const ME = `query Me {
  me { id email role orgId authenticatedWith }
  org { id name slug plan }
}`;

export const SERVERS = `query Servers {
  servers { id slug name status url createdAt updatedAt }
}`;

const TOOL_FIELDS = 'name title description inputSchema annotations { readOnlyHint destructiveHint idempotentHint openWorldHint } scopes';

export const SERVER = `query Server($id: ID!) {
  server(id: $id) {
    id slug name description status statusReason url createdAt updatedAt
    currentVersion
    tools { ${TOOL_FIELDS} }
  }
}`;

export const SERVER_EVENTS = `query ServerEvents($id: ID!, $limit: Int) {
  server(id: $id) { id events(limit: $limit) { id kind message at } }
}`;

export const SERVER_BRIEF = `query ServerBrief($id: ID!) {
  server(id: $id) { id slug name url status }
}`;

export const SERVER_INSTALL = `query ServerInstall($id: ID!) {
  server(id: $id) { id url installSnippets { client title format body } }
}`;

export const SERVER_VERSIONS = `query ServerVersions($id: ID!) {
  server(id: $id) {
    id currentVersion
    versions { id version generator instruction isCurrent createdAt }
    builds { id status version createdAt finishedAt temporalUrl error }
  }
}`;

export const SERVER_SECRETS = `query ServerSecrets($id: ID!) {
  server(id: $id) { id secrets { key updatedAt } }
}`;

export const SERVER_CONNECTIONS = `query ServerConnections($id: ID!) {
  server(id: $id) { id connectionTrace { clientId clientName step ok detail at } }
}`;

export const BUILD = `query Build($id: ID!) {
  build(id: $id) {
    id serverId status version createdAt finishedAt temporalUrl traceId error
    steps { name status attempts startedAt finishedAt }
  }
}`;

export const BUILD_EVENTS = `query BuildEvents($id: ID!, $after: Int, $limit: Int) {
  build(id: $id) { id status events(after: $after, limit: $limit) { seq step kind message at } }
}`;

export const BUILD_EVENTS_SUB = `subscription BuildEvents($buildId: ID!, $after: Int) {
  buildEvents(buildId: $buildId, after: $after) { seq step kind message at }
}`;

export const SERVER_LOGS_SUB = `subscription ServerLogs($serverId: ID!, $tail: Int) {
  serverLogs(serverId: $serverId, tail: $tail)
}`;

export const SERVER_STATUS_SUB = `subscription ServerStatus($serverId: ID!) {
  serverStatus(serverId: $serverId) { serverId status statusReason currentVersion latestBuildId latestBuildStatus latestBuildStep }
}`;

export const PREVIEW_SERVER = `mutation PreviewServer($input: PreviewServerInput!) {
  previewServer(input: $input) {
    id name description generator expiresAt warnings allowedHosts
    tools { ${TOOL_FIELDS} }
    credentials { key label description usedIn required }
  }
}`;

export const CREATE_SERVER = `mutation CreateServer($input: CreateServerInput!) {
  createServer(input: $input) { server { id slug name url status } build { id status } }
}`;

export const ITERATE_SERVER = `mutation IterateServer($input: IterateServerInput!) {
  iterateServer(input: $input) {
    preview {
      id generator warnings expiresAt
      tools { ${TOOL_FIELDS} }
      credentials { key label description usedIn required }
    }
    diff { added removed changed breaking }
  }
}`;

export const CREATE_SERVER_VERSION = `mutation CreateServerVersion($input: CreateServerVersionInput!) {
  createServerVersion(input: $input) { server { id } build { id status version } }
}`;

export const ROLLBACK_SERVER = `mutation Rollback($serverId: ID!, $version: Int!) {
  rollbackServer(serverId: $serverId, version: $version) { build { id status version } }
}`;

export const REDEPLOY_SERVER = `mutation Redeploy($serverId: ID!) {
  redeployServer(serverId: $serverId) { build { id status version } }
}`;

export const DELETE_SERVER = `mutation DeleteServer($id: ID!) {
  deleteServer(id: $id) { id status }
}`;

export const CANCEL_BUILD = `mutation CancelBuild($id: ID!) {
  cancelBuild(id: $id) { id status }
}`;

export const SET_SECRET = `mutation SetSecret($serverId: ID!, $key: String!, $value: String!) {
  setServerSecret(serverId: $serverId, key: $key, value: $value) { key updatedAt }
}`;

export const AUDIT_LOG = `query Audit($limit: Int, $action: String, $after: ID) {
  auditLog(limit: $limit, action: $action, after: $after) {
    id action resourceType resourceId userId metadata ip at
  }
  org { id members { userId email } }
}`;

export const SETTINGS = `query Settings {
  me { id role }
  org { id name slug plan createdAt members { userId email role joinedAt } }
  apiKeys { id name prefix userId createdAt lastUsedAt revokedAt }
  servers { id status }
  connectedApps { id clientId clientName verified email resource serverId serverName scopes grantedAt lastUsedAt }
}`;

export const CREATE_API_KEY = `mutation CreateApiKey($name: String!) {
  createApiKey(name: $name) { key apiKey { id name prefix userId createdAt lastUsedAt revokedAt } }
}`;

export const REVOKE_API_KEY = `mutation RevokeApiKey($id: ID!) {
  revokeApiKey(id: $id) { id revokedAt }
}`;

export const REVOKE_CONNECTED_APP = `mutation RevokeConnectedApp($id: ID!) {
  revokeConnectedApp(id: $id) { id }
}`;
