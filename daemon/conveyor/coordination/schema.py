"""The fleet's tables: one row per task the board leader took from the inbox (its document, lease, fence and
outcome), one per node, and the leader's epoch (the board's fence).

Times are the server's `now()`, never a node's clock: leases between machines whose clocks disagree still
expire after the same wall time.
"""

from __future__ import annotations

from conveyor.core.pg_schema import versioned

LEADER_LOCK = 0x636F6E76_0002    # the board leader holds this session-level advisory lock

SCHEMA = """
CREATE TABLE IF NOT EXISTS conveyor_tasks (
    task_id     text PRIMARY KEY,
    path        text NOT NULL,                 -- the task file, relative to the board root
    agent       text NOT NULL,
    priority    integer NOT NULL DEFAULT 0,    -- higher first
    state       text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'leased', 'done', 'error')),
    owner       text,                          -- the node holding (or last holding) the lease
    fence       bigint NOT NULL DEFAULT 0,     -- grows with every grant; a write must quote the current one
    lease_until timestamptz,
    grants      integer NOT NULL DEFAULT 0,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX IF NOT EXISTS conveyor_tasks_open ON conveyor_tasks (state, lease_until)
    WHERE state IN ('queued', 'leased');
ALTER TABLE conveyor_tasks ADD COLUMN IF NOT EXISTS document text;     -- the task file as asked
ALTER TABLE conveyor_tasks ADD COLUMN IF NOT EXISTS outcome text;      -- the finished file, under the fence
ALTER TABLE conveyor_tasks ADD COLUMN IF NOT EXISTS applied boolean NOT NULL DEFAULT false;  -- on the board
ALTER TABLE conveyor_tasks ADD COLUMN IF NOT EXISTS base_tip text;  -- the base branch the leader read it from
ALTER TABLE conveyor_tasks ADD COLUMN IF NOT EXISTS declined text[] NOT NULL DEFAULT '{}';  -- nodes without its CLI
CREATE INDEX IF NOT EXISTS conveyor_tasks_unapplied ON conveyor_tasks (finished_at)
    WHERE state IN ('done', 'error') AND NOT applied;
CREATE TABLE IF NOT EXISTS conveyor_leader (
    id    integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    epoch bigint NOT NULL,                     -- grows with every new leader: a board push quotes it
    node  text NOT NULL,
    since timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS conveyor_nodes (
    node         text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    leader       boolean NOT NULL DEFAULT false,
    stopped_at   timestamptz
);
"""

VERSIONED = versioned("coordination", SCHEMA)

# Exactly one node gets each row: the row lock is taken by the first, SKIP LOCKED makes the others pass over
# it instead of waiting, and the fence grows in the same statement. An expired lease is taken like a new task.
TAKE = """
WITH picked AS (
    SELECT task_id, owner AS previous FROM conveyor_tasks
    WHERE (state = 'queued' OR (state = 'leased' AND lease_until < now()))
      AND NOT (%(node)s = ANY(declined))
    ORDER BY priority DESC, enqueued_at, task_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE conveyor_tasks AS t
SET state = 'leased', owner = %(node)s, fence = t.fence + 1, grants = t.grants + 1,
    lease_until = now() + make_interval(secs => %(lease)s)
FROM picked WHERE t.task_id = picked.task_id
RETURNING t.task_id, t.path, t.fence, picked.previous IS NOT NULL, t.document, t.base_tip
"""

EXTEND = """
UPDATE conveyor_tasks SET lease_until = now() + make_interval(secs => %(lease)s)
WHERE task_id = %(task_id)s AND owner = %(node)s AND fence = %(fence)s AND state = 'leased'
RETURNING task_id
"""

EXTEND_ALL = """
UPDATE conveyor_tasks SET lease_until = now() + make_interval(secs => %(lease)s)
WHERE owner = %(node)s AND task_id = ANY(%(ids)s) AND state = 'leased'
RETURNING task_id, fence
"""

# The outcome is recorded in the statement that checks the fence: a stale node's result never lands.
COMMIT = """
UPDATE conveyor_tasks SET state = %(status)s, finished_at = now(), lease_until = NULL, outcome = %(outcome)s
WHERE task_id = %(task_id)s AND owner = %(node)s AND fence = %(fence)s AND state = 'leased'
RETURNING task_id
"""

RELEASE = """
UPDATE conveyor_tasks SET state = 'queued', owner = NULL, lease_until = NULL
WHERE owner = %(node)s AND state = 'leased' AND (%(task_id)s::text IS NULL OR task_id = %(task_id)s)
"""

ENQUEUE = """
INSERT INTO conveyor_tasks (task_id, path, agent, priority, document, base_tip) VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (task_id) DO NOTHING
"""

ROADMAP_ROWS = "SELECT task_id, state, document, outcome FROM conveyor_tasks WHERE task_id LIKE 'roadmap-%%'"

KNOWN = "SELECT task_id FROM conveyor_tasks WHERE task_id = ANY(%(ids)s)"

# Finished tasks whose outcome the board branch does not show yet (the leader writes them, then APPLIED).
UNAPPLIED = """
SELECT task_id, path, agent, state, outcome FROM conveyor_tasks
WHERE state IN ('done', 'error') AND NOT applied AND outcome IS NOT NULL
ORDER BY finished_at, task_id LIMIT %(limit)s
"""

APPLIED = "UPDATE conveyor_tasks SET applied = true WHERE task_id = ANY(%(ids)s) AND state IN ('done', 'error')"

# A new leader: the epoch grows in the database, and every board commit it pushes carries it.
LEAD = """
INSERT INTO conveyor_leader (id, epoch, node) VALUES (1, 1, %(node)s)
ON CONFLICT (id) DO UPDATE SET epoch = conveyor_leader.epoch + 1, node = EXCLUDED.node, since = now()
RETURNING epoch
"""

LEADING = "SELECT 1 FROM conveyor_leader WHERE id = 1 AND epoch = %(epoch)s AND node = %(node)s"

# A row that says finished but carries no outcome (written by an older version between the database and the
# board move): expire it under its old owner, so the next node takes it over (and finishes it from its commit).
REOPEN = """
UPDATE conveyor_tasks SET state = 'leased', lease_until = now() - interval '1 second'
WHERE state IN ('done', 'error') AND outcome IS NULL
  AND finished_at < now() - make_interval(secs => %(lease)s)
"""

BEAT = """
INSERT INTO conveyor_nodes (node, host, pid, leader) VALUES (%(node)s, %(host)s, %(pid)s, %(leader)s)
ON CONFLICT (node) DO UPDATE SET heartbeat_at = now(), leader = %(leader)s, stopped_at = NULL
"""

STOPPED = "UPDATE conveyor_nodes SET stopped_at = now(), leader = false WHERE node = %(node)s"

# Live nodes besides this one that have not declined the task: 0 means nobody else could run it.
OTHERS_TO_ASK = """
SELECT count(*) FROM conveyor_nodes n, conveyor_tasks t
WHERE t.task_id = %(task_id)s AND n.node <> %(node)s AND n.stopped_at IS NULL
  AND n.heartbeat_at > now() - make_interval(secs => %(lease)s) AND NOT (n.node = ANY(t.declined))
"""

DECLINE = """
UPDATE conveyor_tasks
SET state = 'queued', owner = NULL, lease_until = NULL, declined = array_append(declined, %(node)s)
WHERE task_id = %(task_id)s AND owner = %(node)s AND state = 'leased'
"""

COUNTS = "SELECT state, count(*) FROM conveyor_tasks GROUP BY state"

NODES = """
SELECT n.node, n.leader, EXTRACT(EPOCH FROM now() - n.heartbeat_at)::float8, n.stopped_at IS NULL,
       COALESCE(array_agg(t.task_id ORDER BY t.task_id) FILTER (WHERE t.task_id IS NOT NULL), '{}')
FROM conveyor_nodes n
LEFT JOIN conveyor_tasks t ON t.owner = n.node AND t.state = 'leased'
WHERE n.stopped_at IS NULL OR n.stopped_at > now() - interval '1 hour'
GROUP BY n.node ORDER BY n.node
"""
