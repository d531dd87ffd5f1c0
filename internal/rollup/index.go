package rollup

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// maxIndexEntries bounds one index script likewise.
const maxIndexEntries = 100

// indexEntry is one entity-day for indexScript.
type indexEntry struct {
	day    Day
	scope  Scope
	member string
	name   string // the namespace-name index member, namespaces only
}

// indexSet gathers the index writes of a batch, each entity-day once.
type indexSet struct {
	entries []indexEntry
	seen    map[indexEntry]bool
}

func (x *indexSet) add(e indexEntry) {
	if x.seen == nil {
		x.seen = map[indexEntry]bool{}
	}
	if !x.seen[e] {
		x.seen[e] = true
		x.entries = append(x.entries, e)
	}
}

// addPiece adds the entity-days of c: its namespace (with its name index
// member), its sums and, per kept key (values are c's, in keys' order),
// its group, project-group and group-namespace; or a capacity's cluster.
func (x *indexSet) addPiece(c *Contribution, keys, values []string) {
	e := c.Entity
	if c.capacity() {
		x.add(indexEntry{day: c.Day, scope: ScopeCapacity, member: e.Member(ScopeCapacity)})
		return
	}
	for j, v := range values {
		g := Entity{GroupKey: keys[j], Group: v, Project: e.Project, Cluster: e.Cluster, Namespace: e.Namespace}
		for _, sc := range []Scope{ScopeGroup, ScopeProjectGroup, ScopeGroupNamespace} {
			x.add(indexEntry{day: c.Day, scope: sc, member: g.Member(sc)})
		}
	}
	x.add(indexEntry{day: c.Day, scope: ScopeNamespace, member: e.Member(ScopeNamespace), name: e.Namespace + Sep + e.Project + Sep + e.Cluster})
	for _, sc := range []Scope{ScopeProject, ScopeCluster, ScopeProjectCluster} {
		x.add(indexEntry{day: c.Day, scope: sc, member: e.Member(sc)})
	}
}

// index runs the index writes of entries, one script per month and chunk
// of maxIndexEntries, pipelined.
func (s *Store) index(ctx context.Context, entries []indexEntry) error {
	if len(entries) == 0 {
		return nil
	}
	type chunk struct {
		month string
		args  []any
		n     int
	}
	var chunks []*chunk
	open := map[string]*chunk{}
	for _, e := range entries {
		m := e.day.Month()
		c := open[m]
		if c == nil || c.n == maxIndexEntries {
			c = &chunk{month: m, args: []any{monthPrefix(m), s.monthExpireAt(e.day)}}
			open[m] = c
			chunks = append(chunks, c)
		}
		c.args = append(c.args, string(e.scope), dd(e.day), s.dayExpireAt(e.day), e.member, e.name)
		c.n++
	}
	run := func() error {
		if s.waitReplicas > 0 {
			return s.indexAndWait(ctx, chunksByMonth(chunks, func(c *chunk) (string, []any) { return c.month, c.args }))
		}
		for len(chunks) > 0 {
			n := min(len(chunks), scriptsPerRoundTrip)
			pipe := s.rdb.Pipeline()
			for _, c := range chunks[:n] {
				indexScript.EvalSha(ctx, pipe, []string{nameIndexKey(c.month)}, c.args...)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
			chunks = chunks[n:]
		}
		return nil
	}
	err := run()
	if isNoScript(err) {
		if err := s.LoadScripts(ctx); err != nil {
			return err
		}
		err = run()
	}
	if err != nil {
		return fmt.Errorf("index %d entity-days: %w", len(entries), err)
	}
	return nil
}

// chunksByMonth groups index scripts' arguments by month.
func chunksByMonth[C any](chunks []C, of func(C) (string, []any)) map[string][][]any {
	out := map[string][][]any{}
	for _, c := range chunks {
		m, args := of(c)
		out[m] = append(out[m], args)
	}
	return out
}

// indexAndWait runs each month's index scripts and then WAIT on the same
// connection to the month's index node, so WAIT covers exactly them. It
// waits for as many of the wanted replicas as are connected: a master
// whose replica died (or a replica just promoted, which has none yet)
// cannot do better, and stalling ingest would not make it safer.
func (s *Store) indexAndWait(ctx context.Context, months map[string][][]any) error {
	for m, chunks := range months {
		var node *redis.Client
		switch c := s.rdb.(type) {
		case *redis.ClusterClient:
			n, err := c.MasterForKey(ctx, nameIndexKey(m))
			if err != nil {
				return fmt.Errorf("find the index node of %s: %w", m, err)
			}
			node = n
		case *redis.Client:
			node = c
		default:
			return fmt.Errorf("wait for replicas: unsupported client %T", s.rdb)
		}
		if err := s.indexOn(ctx, node, m, chunks); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) indexOn(ctx context.Context, node *redis.Client, month string, chunks [][]any) error {
	conn := node.Conn()
	defer conn.Close()
	pipe := conn.Pipeline()
	for _, args := range chunks {
		indexScript.EvalSha(ctx, pipe, []string{nameIndexKey(month)}, args...)
	}
	repl := pipe.Info(ctx, "replication")
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	connected := 0
	for _, line := range strings.Split(repl.Val(), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_slaves:"); ok {
			connected, _ = strconv.Atoi(v)
		}
	}
	want := min(s.waitReplicas, connected)
	if want == 0 {
		return nil
	}
	got, err := conn.Do(ctx, "WAIT", want, s.waitTimeout.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("wait for replicas: %w", err)
	}
	if got < want {
		return fmt.Errorf("index writes of %s reached %d of %d replicas within %s", month, got, want, s.waitTimeout)
	}
	return nil
}
