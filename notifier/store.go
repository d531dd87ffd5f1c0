package notifier

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// evaluateScript keeps one (rule, entity, period) and decides its
// crossings in one atomic step on one key (KEYS[1], a period key):
//
//	ARGV[1] day field "d:YYYYMMDD", ARGV[2] the day's total (decimal fixed
//	point), ARGV[3] expiry (unix seconds), ARGV[4] now (unix ms),
//	ARGV[5] number of thresholds, ARGV[6] seed mode, ARGV[7] number of seed
//	days, then per seed day its field and total, then per threshold: its
//	fixed value, and the same split into high (value div 1e9) and low
//	(value mod 1e9) parts.
//
// Seed mode "0" never seeds; "1" answers {"seed"} without writing when the
// key does not exist yet, so that the caller reads the period's days from
// the rollups; "2" stores the seed days first when the key does not exist
// (another replica may have seeded it meanwhile). The day's total is kept
// when larger than the stored one (events are absolute and may arrive out
// of order). The period total is the sum of the stored days, computed
// exactly on two limbs of 1e9 (Lua numbers are doubles: a single sum would
// lose units above 2^53). Every threshold at or below the total that has
// not fired is marked fired with the total and the time ("new"); one that
// fired but whose notification is not yet recorded (a crash in between) is
// returned again ("old"). The reply is the total, then triples (new|old,
// threshold, "<usage>|<fired ms>").
var evaluateScript = redis.NewScript(`
local key = KEYS[1]
local day, val = ARGV[1], ARGV[2]
local mode, nseed = ARGV[6], tonumber(ARGV[7])
local base = 8 + nseed * 2
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local exists = redis.call('EXISTS', key) == 1
if mode == '1' and not exists then
  return {'seed'}
end
if mode == '2' and not exists then
  for i = 0, nseed - 1 do
    redis.call('HSET', key, ARGV[8 + i * 2], ARGV[9 + i * 2])
  end
end
local cur = redis.call('HGET', key, day)
if not cur or gt(val, cur) then
  redis.call('HSET', key, day, val)
end
redis.call('EXPIREAT', key, tonumber(ARGV[3]))
local all = redis.call('HGETALL', key)
local hi, lo = 0, 0
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'd:' then
    local s = all[i + 1]
    local n = #s
    if n > 9 then
      hi = hi + tonumber(string.sub(s, 1, n - 9))
      lo = lo + tonumber(string.sub(s, n - 8))
    else
      lo = lo + tonumber(s)
    end
  end
end
hi = hi + math.floor(lo / 1000000000)
lo = lo % 1000000000
local total
if hi > 0 then
  total = string.format('%d', hi) .. string.format('%09d', lo)
else
  total = string.format('%d', lo)
end
local out = {total}
local n = tonumber(ARGV[5])
for i = 0, n - 1 do
  local fixed = ARGV[base + i * 3]
  local thi, tlo = tonumber(ARGV[base + 1 + i * 3]), tonumber(ARGV[base + 2 + i * 3])
  if hi > thi or (hi == thi and lo >= tlo) then
    local f = 'f:' .. fixed
    local mark = total .. '|' .. ARGV[4]
    if redis.call('HSETNX', key, f, mark) == 1 then
      table.insert(out, 'new'); table.insert(out, fixed); table.insert(out, mark)
    elseif redis.call('HEXISTS', key, 'r:' .. fixed) == 0 then
      table.insert(out, 'old'); table.insert(out, fixed); table.insert(out, redis.call('HGET', key, f))
    end
  end
end
return out
`)

// recordScript creates a notification (KEYS[1], a notification key) unless
// it exists, so that recording again after a crash never resets its
// delivery state. ARGV: event JSON, rule, project, fired ms, expiry (unix
// seconds). Reply: {created (0|1), state, published (0|1)}.
var recordScript = redis.NewScript(`
local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then
  local v = redis.call('HMGET', key, 'state', 'published')
  return {0, v[1] or '', v[2] and 1 or 0}
end
redis.call('HSET', key, 'event', ARGV[1], 'rule', ARGV[2], 'project', ARGV[3], 'fired', ARGV[4],
  'state', 'pending', 'attempts', 0, 'updated', ARGV[4])
redis.call('EXPIREAT', key, tonumber(ARGV[5]))
return {1, 'pending', 0}
`)

// claimScript takes up to ARGV[2] ids due at ARGV[1] (unix ms) from the
// delivery queue (KEYS[1]) and pushes each a lease (ARGV[3] ms) ahead, so
// that another replica does not deliver it meanwhile, and a replica that
// dies mid-delivery leaves it due again when the lease ends.
var claimScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
end
return ids
`)

// Crossing is a threshold the period total reached.
type Crossing struct {
	// Threshold is the threshold's fixed-point value.
	Threshold int64
	// Usage is the period total (fixed point) when it fired.
	Usage int64
	// Fired is when it fired.
	Fired time.Time
	// New is true for the evaluation that fired it, false when it fired
	// before but its notification was not recorded yet.
	New bool
}

// store is the notifier's Redis state (keys.go).
type store struct {
	rdb       redis.UniversalClient
	retention time.Duration
}

// errNeedSeed is evaluate's answer in seed mode "1" when the period is
// new: the caller reads the period's days and evaluates with them.
var errNeedSeed = errors.New("period not seeded")

// seedMode is how evaluate treats a period it has no state of.
type seedMode string

const (
	seedNever seedMode = "0" // count from the events only
	seedAsk   seedMode = "1" // answer errNeedSeed for a new period
	seedWith  seedMode = "2" // store the given days first in a new period
)

// evaluate applies one day total to a period and returns the thresholds
// crossed and not yet recorded.
func (s *store) evaluate(ctx context.Context, id, day string, value int64, expireAt time.Time, now time.Time, ths []Threshold, mode seedMode, seeds map[string]int64) (int64, []Crossing, error) {
	args := make([]any, 0, 7+2*len(seeds)+3*len(ths))
	args = append(args, "d:"+day, strconv.FormatInt(value, 10), expireAt.Unix(), now.UnixMilli(), len(ths), string(mode), len(seeds))
	for d, v := range seeds {
		args = append(args, "d:"+d, strconv.FormatInt(v, 10))
	}
	for _, t := range ths {
		args = append(args, strconv.FormatInt(t.Fixed, 10), t.Fixed/1_000_000_000, t.Fixed%1_000_000_000)
	}
	res, err := evaluateScript.Run(ctx, s.rdb, []string{periodKey(id)}, args...).StringSlice()
	if err != nil {
		return 0, nil, fmt.Errorf("evaluate period %s: %w", id, err)
	}
	if len(res) == 1 && res[0] == "seed" {
		return 0, nil, errNeedSeed
	}
	if len(res) == 0 || (len(res)-1)%3 != 0 {
		return 0, nil, fmt.Errorf("evaluate period %s: unexpected reply %q", id, res)
	}
	total, err := strconv.ParseInt(res[0], 10, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("evaluate period %s: total %q: %w", id, res[0], err)
	}
	var out []Crossing
	for i := 1; i < len(res); i += 3 {
		th, err1 := strconv.ParseInt(res[i+1], 10, 64)
		usage, ms, ok := strings.Cut(res[i+2], "|")
		u, err2 := strconv.ParseInt(usage, 10, 64)
		at, err3 := strconv.ParseInt(ms, 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil || !ok {
			return 0, nil, fmt.Errorf("evaluate period %s: bad crossing %q %q", id, res[i+1], res[i+2])
		}
		out = append(out, Crossing{Threshold: th, Usage: u, Fired: time.UnixMilli(at), New: res[i] == "new"})
	}
	return total, out, nil
}

// markRecorded notes that the crossing's notification is recorded, so
// evaluations stop returning it.
func (s *store) markRecorded(ctx context.Context, id string, threshold int64) error {
	if err := s.rdb.HSet(ctx, periodKey(id), thresholdField("r:", threshold), 1).Err(); err != nil {
		return fmt.Errorf("mark period %s threshold %d recorded: %w", id, threshold, err)
	}
	return nil
}

// recorded is what record found or made.
type recorded struct {
	created, published bool
	state              string
}

// record stores a notification, indexes it and queues its delivery; every
// step is idempotent, so a crash anywhere is repaired by doing it again.
func (s *store) record(ctx context.Context, n *Notification, body []byte) (recorded, error) {
	fired := n.Fired.UnixMilli()
	res, err := recordScript.Run(ctx, s.rdb, []string{notificationKey(n.ID)},
		body, n.Rule, n.Project, fired, n.Fired.Add(s.retention).Unix()).Slice()
	if err != nil {
		return recorded{}, fmt.Errorf("record notification %s: %w", n.ID, err)
	}
	var r recorded
	if len(res) == 3 {
		c, _ := res[0].(int64)
		st, _ := res[1].(string)
		p, _ := res[2].(int64)
		r = recorded{created: c == 1, state: st, published: p == 1}
	}
	horizon := strconv.FormatInt(time.Now().Add(-s.retention).UnixMilli(), 10)
	pipe := s.rdb.Pipeline()
	pipe.ZAdd(ctx, indexKey, redis.Z{Score: float64(fired), Member: n.ID})
	pipe.ZRemRangeByScore(ctx, indexKey, "-inf", "("+horizon)
	if n.Project != "" {
		pipe.ZAdd(ctx, projectIndexKey(n.Project), redis.Z{Score: float64(fired), Member: n.ID})
		pipe.ZRemRangeByScore(ctx, projectIndexKey(n.Project), "-inf", "("+horizon)
	}
	if r.state == StatePending {
		pipe.ZAddNX(ctx, pendingKey, redis.Z{Score: float64(fired), Member: n.ID})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return recorded{}, fmt.Errorf("index notification %s: %w", n.ID, err)
	}
	return r, nil
}

func (s *store) markPublished(ctx context.Context, id string) error {
	if err := s.rdb.HSet(ctx, notificationKey(id), "published", 1).Err(); err != nil {
		return fmt.Errorf("mark notification %s published: %w", id, err)
	}
	return nil
}

// claim takes up to n due deliveries for lease.
func (s *store) claim(ctx context.Context, now time.Time, n int, lease time.Duration) ([]string, error) {
	ids, err := claimScript.Run(ctx, s.rdb, []string{pendingKey}, now.UnixMilli(), n, lease.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("claim deliveries: %w", err)
	}
	return ids, nil
}

// nextDue is when the earliest queued delivery is due (false: none).
func (s *store) nextDue(ctx context.Context) (time.Time, bool, error) {
	zs, err := s.rdb.ZRangeWithScores(ctx, pendingKey, 0, 0).Result()
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read delivery queue: %w", err)
	}
	if len(zs) == 0 {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(int64(zs[0].Score)), true, nil
}

// load reads one notification; ok is false when it no longer exists.
func (s *store) load(ctx context.Context, id string) (stored, bool, error) {
	m, err := s.rdb.HGetAll(ctx, notificationKey(id)).Result()
	if err != nil {
		return stored{}, false, fmt.Errorf("read notification %s: %w", id, err)
	}
	if len(m) == 0 {
		return stored{}, false, nil
	}
	return storedOf(id, m), true, nil
}

// stored is a notification as Redis holds it.
type stored struct {
	ID       string
	Event    []byte
	Rule     string
	Project  string
	Fired    time.Time
	State    string
	Attempts int
	Status   int
	Error    string
	Updated  time.Time
}

func storedOf(id string, m map[string]string) stored {
	ms := func(k string) time.Time {
		n, _ := strconv.ParseInt(m[k], 10, 64)
		return time.UnixMilli(n)
	}
	attempts, _ := strconv.Atoi(m["attempts"])
	status, _ := strconv.Atoi(m["status"])
	return stored{ID: id, Event: []byte(m["event"]), Rule: m["rule"], Project: m["project"], Fired: ms("fired"),
		State: m["state"], Attempts: attempts, Status: status, Error: m["error"], Updated: ms("updated")}
}

// attempt records one delivery attempt: its outcome (state), the
// receiver's status (0 when none answered) and error, then removes the
// delivery from the queue when it is final or schedules the next attempt.
func (s *store) attempt(ctx context.Context, id, state string, status int, errMsg string, now, next time.Time) error {
	pipe := s.rdb.TxPipeline()
	k := notificationKey(id)
	pipe.HIncrBy(ctx, k, "attempts", 1)
	pipe.HSet(ctx, k, "state", state, "status", status, "error", errMsg, "updated", now.UnixMilli())
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("record delivery attempt of %s: %w", id, err)
	}
	var err error
	if state == StatePending {
		err = s.rdb.ZAdd(ctx, pendingKey, redis.Z{Score: float64(next.UnixMilli()), Member: id}).Err()
	} else {
		err = s.rdb.ZRem(ctx, pendingKey, id).Err()
	}
	if err != nil {
		return fmt.Errorf("schedule delivery of %s: %w", id, err)
	}
	return nil
}

// finish marks a delivery final without an attempt (its rule is gone) or
// drops a queue entry whose notification is already final or expired.
func (s *store) finish(ctx context.Context, id, state, errMsg string, now time.Time) error {
	if state != "" {
		if err := s.rdb.HSet(ctx, notificationKey(id), "state", state, "error", errMsg, "updated", now.UnixMilli()).Err(); err != nil {
			return fmt.Errorf("finish delivery of %s: %w", id, err)
		}
	}
	if err := s.rdb.ZRem(ctx, pendingKey, id).Err(); err != nil {
		return fmt.Errorf("dequeue delivery of %s: %w", id, err)
	}
	return nil
}

// list reads a page of notifications, newest first: every one, or one
// project's ("" for every one).
func (s *store) list(ctx context.Context, project string, offset, limit int) ([]stored, int, error) {
	key := indexKey
	if project != "" {
		key = projectIndexKey(project)
	}
	total, err := s.rdb.ZCard(ctx, key).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("count notifications: %w", err)
	}
	if int64(offset) >= total {
		return nil, int(total), nil
	}
	ids, err := s.rdb.ZRevRange(ctx, key, int64(offset), int64(offset+limit-1)).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("list notifications: %w", err)
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, notificationKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, fmt.Errorf("read notifications: %w", err)
	}
	out := make([]stored, 0, len(ids))
	for i, id := range ids {
		m := cmds[i].Val()
		if len(m) == 0 {
			continue // expired a moment ago; the index is trimmed on the next fire
		}
		out = append(out, storedOf(id, m))
	}
	return out, int(total), nil
}

// requeue makes a claimed delivery due at once again (shutdown).
func (s *store) requeue(ctx context.Context, id string, now time.Time) error {
	if err := s.rdb.ZAdd(ctx, pendingKey, redis.Z{Score: float64(now.UnixMilli()), Member: id}).Err(); err != nil {
		return fmt.Errorf("requeue delivery of %s: %w", id, err)
	}
	return nil
}
