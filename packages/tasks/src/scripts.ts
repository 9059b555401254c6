/**
 * Lua scripts: each state change appends its events and publishes them in the same
 * atomic step, so the log, the record and the live stream never disagree.
 *
 * Events are passed as JSON objects without taskId/seq/at; the script splices those in
 * (string concatenation, not cjson, which would reorder keys and turn [] into {}).
 */

/**
 * The names the creation script is defined under, by what it has inside (BullMQ's add-job script,
 * a request counter); none is auto-pipelined (see createRedis).
 */
export function createTasksCommand(withJobs: boolean, counted: boolean): string {
  return `mageCreateTasks${withJobs ? 'AndJobs' : ''}${counted ? 'Counted' : ''}`;
}
export const UNPIPELINED_COMMANDS: readonly string[] = [false, true].flatMap((withJobs) =>
  [false, true].map((counted) => createTasksCommand(withJobs, counted)),
);

/**
 * Creates a batch of tasks, each with its first event and, when the script is built with a job
 * writer's Lua (TaskQueue.jobWriter: BullMQ's own add-job script), its job, in order; a bound
 * refuses a task alone.
 * One call per group commit rather than one per task: the per-command cost (in the api's client
 * and in Redis) was most of what a new task cost.
 * Built with a request counter's Lua (a script of one key that adds ARGV[1] to the count there,
 * starting a window of ARGV[2] seconds when none runs, and returns {count, ms left in the
 * window}: rate-limiter-flexible's, as the api's limiter defined it), it also counts the request
 * of each task that asks for it against its key's requests per minute, in the same step: the
 * request is counted first, whatever becomes of its task, as the limiter counts every request.
 * KEYS: the queue's wait list, the queue's prioritised set, J keys of the add-job script, then per
 *       task: task hash, event log, tenant index, the key's active-task counter, the key's request
 *       counter.
 * ARGV: ttl seconds, max queued tasks (0 = none), index floor (task ids below it are pruned from
 *       the index), J, the key prefix of a job's hash, the request counter's window in seconds,
 *       then per task: taskId, at, first event body, max active tasks of its key (0 = none), its
 *       key's requests per minute (0 = not counted here), field count n, n field/value pairs, and
 *       when J > 0 its job's priority, timestamp and data (JobWriter.argv).
 * Returns one entry per task: 1 created, 0 exists already, -1 the queue is full, -2 the key's
 * active tasks are at its limit, {'rate', ms left in the window} past its key's requests per
 * minute, or the error Redis raised writing it (as a string, or as {'job', error} when it was the
 * job that could not be added; nothing of that task is left behind, and the tasks after it are
 * still written).
 *
 * The queue bound counts the tasks this call created too (without jobs, their jobs are added after
 * it), so a large batch cannot overshoot it.
 */
export function createTasksScript(jobWriterLua?: string, requestCounterLua?: string): string {
  // The counter's script runs as a function: its KEYS and ARGV are that function's parameters.
  const counter = requestCounterLua === undefined ? 'local countRequest = nil' : `local function countRequest(KEYS, ARGV)\n${requestCounterLua}\nend`;
  return `${jobWriterLua ?? 'local addTaskJob = nil'}
${counter}
${CREATE_TASKS_BODY}`;
}

const CREATE_TASKS_BODY = `
local ttl = tonumber(ARGV[1])
local maxQueued = tonumber(ARGV[2])
local jobKeyCount = tonumber(ARGV[4])
local jobKeyPrefix = ARGV[5]
local window = ARGV[6]
local jobKeys = {}
for i = 1, jobKeyCount do jobKeys[i] = KEYS[2 + i] end
local queued = 0
if maxQueued > 0 then queued = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) end
local answers = {}
local k = 3 + jobKeyCount
local a = 7
-- How far the current task's writes got, so a failure undoes exactly those.
local wrote = 0
local function create(task, log, index, active, id, at, event, fields, job)
  -- The log first: if it cannot be written (a stray key of another type), nothing is.
  redis.call('RPUSH', log, '{"taskId":"' .. id .. '","seq":1,"at":"' .. at .. '",' .. string.sub(event, 2))
  wrote = 1
  redis.call('HSET', task, unpack(fields))
  wrote = 2
  redis.call('EXPIRE', task, ttl)
  redis.call('EXPIRE', log, ttl)
  redis.call('ZADD', index, 0, id)
  wrote = 3
  -- The counter last: a task that failed never holds a place in it.
  redis.call('INCR', active)
  wrote = 4
  if job then
    local added = addTaskJob(jobKeys, jobKeyPrefix, id, job[1], job[2], job[3])
    if type(added) == 'number' and added < 0 then error('the queue refused the job (' .. added .. ')') end
  end
end
-- Indexes and counters the batch wrote to (most tasks of a batch share them): kept up once each.
local indexes, counters = {}, {}
while a <= #ARGV do
  local task, log, index, active, requests = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local id, at, event = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local maxActive, perMinute, count = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local fields = {'seq', 1, 'activeKey', active}
  for i = a + 6, a + 5 + 2 * count do fields[#fields + 1] = ARGV[i] end
  local job = nil
  a = a + 6 + 2 * count
  if jobKeyCount > 0 then
    job = {ARGV[a], ARGV[a + 1], ARGV[a + 2]}
    a = a + 3
  end
  k = k + 5
  local answer = nil
  if perMinute > 0 then
    local counted = countRequest({requests}, {'1', window})
    if tonumber(counted[1]) > perMinute then answer = {'rate', counted[2]} end
  end
  if answer ~= nil then
    -- Past its key's requests per minute: counted, and refused.
  elseif redis.call('EXISTS', task) == 1 then
    answer = 0
  elseif maxQueued > 0 and queued >= maxQueued then
    answer = -1
  elseif maxActive > 0 and (tonumber(redis.pcall('GET', active)) or 0) >= maxActive then
    answer = -2
  else
    wrote = 0
    local ok, problem = pcall(create, task, log, index, active, id, at, event, fields, job)
    if ok then
      answer = 1
      queued = queued + 1
      indexes[index] = true
      counters[active] = true
    else
      -- Undone, so a task exists whole or not at all; the batch goes on.
      if wrote >= 1 then redis.call('DEL', log) end
      if wrote >= 2 then redis.call('DEL', task) end
      if wrote >= 3 then redis.call('ZREM', index, id) end
      if wrote >= 4 then
        redis.call('DECR', active)
        -- Whatever of its job the add-job script wrote before it failed (pcall: the failure may
        -- be one of these keys holding another type).
        redis.pcall('DEL', jobKeyPrefix .. id)
        redis.pcall('ZREM', KEYS[2], id)
        redis.pcall('LREM', KEYS[1], 0, id)
      end
      answer = type(problem) == 'table' and problem.err or tostring(problem)
      -- Its job could not be added: told apart, as the queue's refusal rather than the record's.
      if wrote >= 4 then answer = {'job', answer} end
    end
  end
  answers[#answers + 1] = answer
end
-- An index outlives no task of it: old ids are pruned, and an idle tenant's index expires.
for index in pairs(indexes) do
  redis.call('ZREMRANGEBYLEX', index, '-', '(' .. ARGV[3])
  redis.call('EXPIRE', index, 2 * ttl)
end
for active in pairs(counters) do redis.call('EXPIRE', active, 2 * ttl) end
return answers
`;

/**
 * Deletes a task whose creation was undone (its job could not be queued), giving its place in its
 * key's active-task count back. KEYS: task hash, event log, tenant index. ARGV: taskId.
 */
export const DISCARD_TASK = `
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' or status == 'processing' then
  local activeKey = redis.call('HGET', KEYS[1], 'activeKey')
  if activeKey and tonumber(redis.call('DECR', activeKey)) < 0 then redis.call('SET', activeKey, 0) end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
`;

/**
 * Guarded transition and/or event append.
 * KEYS: task hash, event log, webhook outbox.
 * ARGV: channel, taskId, at, allowed current statuses as ",a,b,", new status or "",
 *       ttl seconds (0 = leave), fence ("" = none), write id ("" = none),
 *       field-pair count n, n field/value pairs, then event bodies.
 *
 * - fence: the attempt the writer runs under. The write is refused unless the record's `attempt`
 *   is still that one, so a worker whose task was taken over by another (after a stall) cannot
 *   write into it any more.
 * - write id: a write resent after a reconnect (the first send may have been applied and only
 *   its reply lost) is recognised by its id and answered as before, without being applied twice.
 *   One writer writes a task's events in sequence, so remembering the last id is enough.
 *
 * - a task that reaches a terminal status gives its place in its key's active-task count back, and,
 *   when it has a webhook, is appended to the webhook outbox in the same atomic step.
 *
 * Returns {lastSeq, previousStatus}; {-1, ""} when the task does not exist;
 * {0, currentStatus} when the current status (or attempt) is not allowed (nothing written).
 */
export const TRANSITION = `
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {-1, ''} end
if ARGV[8] ~= '' and redis.call('HGET', KEYS[1], 'lastWrite') == ARGV[8] then
  return {tonumber(redis.call('HGET', KEYS[1], 'seq')), redis.call('HGET', KEYS[1], 'lastWriteFrom')}
end
if not string.find(ARGV[4], ',' .. status .. ',', 1, true) then return {0, status} end
if ARGV[7] ~= '' and (redis.call('HGET', KEYS[1], 'attempt') or '0') ~= ARGV[7] then return {0, status} end
local pairCount = tonumber(ARGV[9])
local fields = {}
if ARGV[5] ~= '' then fields[1] = 'status'; fields[2] = ARGV[5] end
if ARGV[8] ~= '' then
  fields[#fields + 1] = 'lastWrite'; fields[#fields + 1] = ARGV[8]
  fields[#fields + 1] = 'lastWriteFrom'; fields[#fields + 1] = status
end
for i = 10, 9 + 2 * pairCount do fields[#fields + 1] = ARGV[i] end
if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
local newStatus = ARGV[5]
if newStatus == 'completed' or newStatus == 'failed' or newStatus == 'cancelled' then
  local activeKey = redis.call('HGET', KEYS[1], 'activeKey')
  if activeKey and tonumber(redis.call('DECR', activeKey)) < 0 then redis.call('SET', activeKey, 0) end
  if redis.call('HEXISTS', KEYS[1], 'webhook') == 1 then redis.call('RPUSH', KEYS[3], ARGV[2]) end
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
local head = '{"taskId":"' .. ARGV[2] .. '","seq":'
local tail = ',"at":"' .. ARGV[3] .. '",'
for i = 10 + 2 * pairCount, #ARGV do
  seq = seq + 1
  local event = head .. seq .. tail .. string.sub(ARGV[i], 2)
  redis.call('RPUSH', KEYS[2], event)
  redis.call('PUBLISH', ARGV[1], event)
end
redis.call('HSET', KEYS[1], 'seq', seq)
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return {seq, status}
`;
