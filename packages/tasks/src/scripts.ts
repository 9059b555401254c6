/**
 * Lua scripts: each state change appends its events and publishes them in the same
 * atomic step, so the log, the record and the live stream never disagree.
 *
 * Events are passed as JSON objects without taskId/seq/at; the script splices those in
 * (string concatenation, not cjson, which would reorder keys and turn [] into {}).
 */

/**
 * Creates a task with its first event, unless a bound refuses it.
 * KEYS: task hash, event log, tenant index, the key's active-task counter, the queue's wait list,
 *       the queue's prioritised set.
 * ARGV: ttl seconds, taskId, at, first event body, max active tasks of the key (0 = none),
 *       max queued tasks (0 = none), index floor (task ids below it are pruned from the index),
 *       then field/value pairs.
 * Returns 1 created, 0 exists already, -1 the queue is full, -2 the key's active tasks are at its limit.
 */
export const CREATE_TASK = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local maxQueued = tonumber(ARGV[6])
if maxQueued > 0 and redis.call('LLEN', KEYS[5]) + redis.call('ZCARD', KEYS[6]) >= maxQueued then return -1 end
local maxActive = tonumber(ARGV[5])
if maxActive > 0 and (tonumber(redis.call('GET', KEYS[4])) or 0) >= maxActive then return -2 end
-- The log first: if it cannot be written (a stray key of another type), no record is left behind.
redis.call('RPUSH', KEYS[2], '{"taskId":"' .. ARGV[2] .. '","seq":1,"at":"' .. ARGV[3] .. '",' .. string.sub(ARGV[4], 2))
local fields = {'seq', 1, 'activeKey', KEYS[4]}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
-- The index outlives no task of it: old ids are pruned, and an idle tenant's index expires.
redis.call('ZADD', KEYS[3], 0, ARGV[2])
redis.call('ZREMRANGEBYLEX', KEYS[3], '-', '(' .. ARGV[7])
redis.call('EXPIRE', KEYS[3], 2 * tonumber(ARGV[1]))
redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], 2 * tonumber(ARGV[1]))
return 1
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
