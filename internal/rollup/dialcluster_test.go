package rollup_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/testenv"
)

// redisSecret is the ACL user's password in testDialCluster.
const redisSecret = "r3dis-Secret-pw"

// testDialCluster: a URL with addr= parameters gives a cluster client that
// finds every node from them, with the ACL user of the URL and the
// password from a file; a cluster URL naming a database other than 0 is
// refused naming it.
func testDialCluster(t *testing.T, c *testenv.RedisCluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range c.Nodes {
		nc := redis.NewClient(&redis.Options{Addr: n.Addr()})
		err := nc.Do(ctx, "ACL", "SETUSER", "costmeter", "on", ">"+redisSecret, "~*", "&*", "+@all").Err()
		nc.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte(redisSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := strings.Replace(c.URL(), "redis://", "redis://costmeter@", 1)
	rdb, err := redisconn.Dial(url, redisconn.WithSecurity(config.RedisSecurity{PasswordFile: pw}))
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if _, ok := rdb.(*redis.ClusterClient); !ok {
		t.Fatalf("%s gave a %T, want a cluster client", url, rdb)
	}
	if who, err := rdb.Do(ctx, "ACL", "WHOAMI").Text(); err != nil || who != "costmeter" {
		t.Fatalf("whoami %q %v", who, err)
	}
	store, err := rollup.NewStore(rdb, time.UTC, 20*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	cs := contribution(t, time.UTC, "pay", "east", "api", "2025-06-01T10:00:00Z", "2025-06-01T11:00:00Z", 1)
	if _, err := store.Apply(ctx, cs, "S", []rollup.SeqRange{{First: 1, Last: 1}}, false); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := store.DayValues(ctx, rollup.DayFromDate(2025, 6, 1), rollup.ScopeCluster, "east"); err != nil || !ok || v[rollup.Field(rollup.Cpu, rollup.Usage)] != 3600*rollup.Scale {
		t.Fatalf("cluster east: %v %v %v", v, ok, err)
	}
	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("guess\n"), 0o600)
	bad, err := redisconn.Dial(url, redisconn.WithPasswordFile(wrong))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if err := redisconn.Ping(ctx, bad); err == nil || strings.Contains(err.Error(), redisSecret) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := redisconn.Dial(c.URL()[:strings.Index(c.URL(), "?")] + "/1" + c.URL()[strings.Index(c.URL(), "?"):]); err == nil || !strings.Contains(err.Error(), "database 0") {
		t.Fatalf("cluster url with /1: %v", err)
	}
	single, err := redisconn.Dial("redis://" + c.Nodes[0].Addr() + "/0")
	if err != nil {
		t.Fatal(err)
	}
	single.Close()
	if _, ok := single.(*redis.Client); !ok {
		t.Fatalf("one address gave a %T, want a plain client", single)
	}
}
