// An AgentTasks agent: registers itself with a Team API Key, then claims todo tasks one by
// one and completes each with a result, until none are left (or --max-tasks are done).
//
//   AGENTTASKS_TEAM_KEY=tk_... node agent.js --target localhost:50051 --name node-agent
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { parseArgs } = require("node:util");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const ROOT = path.resolve(__dirname, "..", "..");
// The same include paths any protoc user passes: -Iprotos -Ithird_party/googleapis.
const INCLUDES = [path.join(ROOT, "protos"), path.join(ROOT, "third_party", "googleapis")];

const definition = protoLoader.loadSync(
  ["agenttasks/v1/tasks.proto", "agenttasks/v1/agents.proto"],
  { includeDirs: INCLUDES, keepCase: true, enums: String, longs: String, defaults: true },
);
const v1 = grpc.loadPackageDefinition(definition).agenttasks.v1;

// protobufjs decodes the error details (grpc-status-details-bin holds a google.rpc.Status).
const details = new protobuf.Root();
details.resolvePath = (_origin, target) => {
  for (const dir of INCLUDES) {
    const candidate = path.join(dir, target);
    if (fs.existsSync(candidate)) return candidate;
  }
  return target; // google/protobuf/*.proto: protobufjs has them built in
};
details.loadSync(
  ["google/rpc/status.proto", "google/rpc/error_details.proto", "agenttasks/v1/errors.proto"],
  { keepCase: true },
);
const Status = details.lookupType("google.rpc.Status");

/** The documented error body of a failed call: {code, statusCode, error, retryDelay}. */
function decodeError(err) {
  const body = { code: grpc.status[err.code], statusCode: 0, error: err.details, retryDelay: null };
  const raw = err.metadata && err.metadata.get("grpc-status-details-bin")[0];
  if (!raw) return body;
  for (const any of Status.decode(raw).details) {
    const type = details.lookupType(any.type_url.split("/").pop());
    const message = type.toObject(type.decode(any.value), { longs: Number });
    if (type.fullName === ".agenttasks.v1.ErrorDetail") {
      Object.assign(body, { code: message.code, statusCode: message.status_code, error: message.error });
    } else if (type.fullName === ".google.rpc.RetryInfo") {
      const delay = message.retry_delay || {};
      body.retryDelay = (delay.seconds || 0) + (delay.nanos || 0) / 1e9;
    }
  }
  return body;
}

const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

/** Calls `stub.method(request)` with the token, sleeping out RATE_LIMITED answers. */
async function call(stub, method, request, token) {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  for (;;) {
    try {
      return await new Promise((resolve, reject) => {
        const deadline = new Date(Date.now() + 10_000);
        stub[method](request, metadata, { deadline }, (err, response) =>
          err ? reject(err) : resolve(response),
        );
      });
    } catch (err) {
      const body = decodeError(err);
      if (body.code !== "RATE_LIMITED") throw Object.assign(err, { body });
      const delay = body.retryDelay ?? 1;
      console.log(`rate limited: retrying in ${delay.toFixed(1)} s`);
      await sleep(delay);
    }
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      target: { type: "string", default: "localhost:50051" },
      name: { type: "string", default: "node-agent" },
      "max-tasks": { type: "string", default: "0" },
    },
  });
  const teamKey = process.env.AGENTTASKS_TEAM_KEY;
  if (!teamKey) throw new Error("set AGENTTASKS_TEAM_KEY to a Team API Key");
  const maxTasks = Number(values["max-tasks"]);
  const credentials = grpc.credentials.createInsecure();
  const agents = new v1.AgentService(values.target, credentials);
  const tasks = new v1.TaskService(values.target, credentials);

  // Register: the team creates the agent; its token is shown only in this response.
  const created = await call(agents, "CreateAgent", { name: values.name }, teamKey);
  const token = created.token;
  console.log(`registered agent ${created.agent.id} (${values.name})`);

  let done = 0;
  for (;;) {
    const page = await call(tasks, "ListTasks", { status: "TASK_STATUS_TODO", page_size: 10 }, token);
    if (page.tasks.length === 0) break;
    for (const task of page.tasks) {
      try {
        await call(tasks, "ClaimTask", { task_id: task.id }, token);
      } catch (err) {
        // Another agent was faster, or the task left todo: move on to the next one.
        if (["TASK_ALREADY_CLAIMED", "TASK_NOT_CLAIMABLE"].includes(err.body?.code)) continue;
        throw err;
      }
      const result = `${values.name}: ${task.title.split("").reverse().join("")}`; // the "work"
      await call(tasks, "CompleteTask", { task_id: task.id, result }, token);
      done += 1;
      console.log(`completed ${task.id}`);
      if (maxTasks && done >= maxTasks) return finish(done, agents, tasks);
    }
  }
  finish(done, agents, tasks);
}

function finish(done, ...clients) {
  console.log(`no todo tasks left; completed ${done}`);
  for (const client of clients) client.close();
}

main().catch((err) => {
  const body = err.body || decodeError(err);
  console.error(`agent: ${body.code}: ${body.error || err.message}`);
  process.exit(1);
});
