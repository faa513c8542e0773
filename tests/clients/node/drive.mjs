// Drives the emulator with Neon's TypeScript client, as its users would, and prints what
// it saw as one JSON object (tests/emulator/test_emulator_node_clients.py reads it).
// Usage: node drive.mjs <api_host> <api_key> <project_id>
import { createApiClient } from "@neondatabase/api-client";

const [apiHost, apiKey, projectId] = process.argv.slice(2);
const api = createApiClient({ apiKey, baseURL: apiHost });
const seen = {};

async function finished(operations) {
  for (const op of operations) {
    for (let i = 0; ; i++) {
      const { data } = await api.getProjectOperation(projectId, op.id);
      if (data.operation.status === "finished") break;
      if (i > 600) throw new Error(`operation ${op.id} did not finish`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

seen.me = (await api.getCurrentUserInfo()).data.id;
seen.projects = (await api.listProjects({})).data.projects.map((p) => p.id);
const made = (
  await api.createProjectBranch(projectId, {
    branch: { name: "ts-branch" },
    endpoints: [{ type: "read_write" }],
  })
).data;
await finished(made.operations);
seen.created = made.branch.name;
seen.uri = made.connection_uris[0].connection_uri;
const branchId = made.branch.id;
const listed = (await api.listProjectBranches({ projectId, search: "ts-" })).data;
seen.listed = listed.branches.map((b) => b.name);
const page = (await api.listProjectBranches({ projectId, limit: 1 })).data;
seen.paged = [page.branches.length, Boolean(page.pagination && page.pagination.next)];
seen.renamed = (
  await api.updateProjectBranch(projectId, branchId, { branch: { name: "ts-renamed" } })
).data.branch.name;
seen.uriByEndpoint = (
  await api.getConnectionUri({
    projectId,
    endpoint_id: made.endpoints[0].id,
    database_name: "neondb",
    role_name: "neondb_owner",
  })
).data.uri;
const reset = (await api.resetProjectBranchRolePassword(projectId, branchId, "neondb_owner")).data;
await finished(reset.operations);
seen.newPassword = (
  await api.getProjectBranchRolePassword(projectId, branchId, "neondb_owner")
).data.password;
seen.setDefault = (await api.setDefaultProjectBranch(projectId, branchId)).data.branch.default;
try {
  await api.listApiKeys();
  seen.missing = "answered";
} catch (error) {
  seen.missing = [error.response.status, error.response.data.code, error.response.data.message];
}
console.log(JSON.stringify(seen));
