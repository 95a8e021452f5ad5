#!/usr/bin/env bash
# Runs the example agents (Python, Node.js) against a fresh server on a free port and checks
# that every task they were given ends done with a result. Needs `make venv`, node and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${VENV:-.venv}/bin/python
AGENTTASKS=${VENV:-.venv}/bin/agenttasks

work=$(mktemp -d)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
db="sqlite:///$work/examples.db"
target="127.0.0.1:$port"
export AGENTTASKS_TEAM_KEY
AGENTTASKS_TEAM_KEY=$("$AGENTTASKS" team create --name examples --json --db "$db" \
  | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["apiKey"])')
# A tight task-call limit, so the agents meet RATE_LIMITED and sleep out its RetryInfo.
"$AGENTTASKS" serve --host 127.0.0.1 --port "$port" --db "$db" --rate-limit-task 30 \
  2>"$work/serve.log" &
server=$!

# board seed NAME N: a project with N todo tasks, prints its id; board check ID: all done?
board() {
  "$PY" - "$target" "$@" <<'PYTHON'
import os, sys, time
from agenttasks.client import AgentTasksError, connect
from agenttasks.v1 import projects_pb2, tasks_pb2

def patiently(call):
    for _ in range(300):  # the server may be starting, or the team key out of calls
        try:
            return call()
        except AgentTasksError as error:
            time.sleep(error.retry_delay or 0.2)
    return call()

target, command, arg = sys.argv[1:4]
with connect(target, os.environ["AGENTTASKS_TEAM_KEY"]) as team:
    if command == "seed":
        new = projects_pb2.CreateProjectRequest(name=arg)
        project = patiently(lambda: team.projects.CreateProject(new)).project
        for n in range(int(sys.argv[4])):
            task = tasks_pb2.CreateTaskRequest(project_id=project.id, title=f"{arg} task {n}")
            patiently(lambda: team.tasks.CreateTask(task))
        print(project.id)
    else:
        listing = tasks_pb2.ListTasksRequest(project_id=arg, page_size=100)
        tasks = patiently(lambda: team.tasks.ListTasks(listing)).tasks
        unfinished = [t.id for t in tasks if t.status != tasks_pb2.TASK_STATUS_DONE or not t.result]
        if not tasks or unfinished:
            sys.exit(f"not done with a result: {unfinished or 'no tasks'}")
        print(f"{len(tasks)} tasks done with results")
PYTHON
}

(cd examples/node && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)

project=$(board seed python 5)
"$PY" examples/python/agent.py --target "$target" --name py-agent
board check "$project"

project=$(board seed node 5)
node examples/node/agent.js --target "$target" --name node-agent
board check "$project"

# Both at once on one board: each task is claimed by exactly one of them.
project=$(board seed both 20)
"$PY" examples/python/agent.py --target "$target" --name py-2 >"$work/py.out" &
python_agent=$!
node examples/node/agent.js --target "$target" --name node-2 >"$work/node.out"
wait "$python_agent"
board check "$project"
grep -h "rate limited" "$work/py.out" "$work/node.out" || true
echo "examples: ok"
