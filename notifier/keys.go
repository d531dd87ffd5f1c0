package notifier

import (
	"strconv"

	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/rollup"
)

// Redis key layout of the notifier. It is separate from the rollups'
// layout (internal/rollup) and shares only the Redis: every key starts
// with "cn:", which no rollup key does. Each key carries a hash tag so
// that it is safe on Redis Cluster: a script only ever touches one key.
//
//	key                        type   holds                                              expires
//	cn:p:{<period id>}         hash   the state of one (rule, entity, period):           retention after the period ends
//	                                    d:YYYYMMDD  the day's total (fixed point, the
//	                                                largest seen: events are absolute)
//	                                    f:<thr>     the threshold <thr> (fixed point) has
//	                                                fired: "<usage>|<fired unix ms>"
//	                                    r:<thr>     its notification is recorded
//	cn:n:{<event id>}          hash   one notification: event (the CloudEvent JSON),     retention after it fired
//	                                  rule, project, fired (unix ms), state (pending |
//	                                  delivered | failed), attempts, status (last HTTP
//	                                  status), error (last error), updated (unix ms)
//	cn:{ix}                    zset   event ids by fired time, every notification        trimmed to retention
//	cn:{ix:<project>}          zset   event ids by fired time, one project's             trimmed to retention
//	cn:{pending}               zset   event ids to deliver, by next attempt (unix ms);
//	                                  a claimed id is pushed a lease ahead
//
// <period id> is <rule>|<item>.<method>|<period>|<first day YYYYMMDD>|<kind>|<entity>,
// <entity> the project, the cluster, or project/cluster/namespace. Names
// hold no braces (rule names and entity names are lowercase DNS names), so
// the hash tag is the whole identity and every (rule, entity, period) lands
// on its own slot. The fired marker and the day totals live in one key, so
// the script that decides a crossing records it in the same atomic step.
const keyPrefix = "cn:"

// Keys of the notification indexes and the delivery queue.
const (
	indexKey   = keyPrefix + "{ix}"
	pendingKey = keyPrefix + "{pending}"
)

// periodID names one (rule, entity, period).
func periodID(r *Rule, ev *event.Event, first rollup.Day) string {
	return r.Name + "|" + r.Item.String() + "." + r.Method.String() + "|" + string(r.Period) + "|" + first.String() + "|" + ev.Kind + "|" + ev.Name()
}

func periodKey(id string) string { return keyPrefix + "p:{" + id + "}" }

func notificationKey(eventID string) string { return keyPrefix + "n:{" + eventID + "}" }

func projectIndexKey(project string) string { return keyPrefix + "{ix:" + project + "}" }

func thresholdField(prefix string, fixed int64) string {
	return prefix + strconv.FormatInt(fixed, 10)
}
