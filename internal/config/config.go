// Package config gives every binary one way to take configuration: command
// line flags, each with an environment variable as fallback (a flag given on
// the command line wins), validated before anything connects.
package config

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Env looks a variable up; main passes os.LookupEnv, tests a map.
type Env func(string) (string, bool)

// Flags registers flags whose defaults come from the environment.
type Flags struct {
	fs   *flag.FlagSet
	env  Env
	errs []error
}

// NewFlags wraps fs; env may be nil (no environment).
func NewFlags(fs *flag.FlagSet, env Env) *Flags {
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	return &Flags{fs: fs, env: env}
}

// FlagSet returns the wrapped flag set.
func (f *Flags) FlagSet() *flag.FlagSet { return f.fs }

// Err returns the problems met reading environment variables.
func (f *Flags) Err() error { return errors.Join(f.errs...) }

func (f *Flags) lookup(name, envName string) (string, bool) {
	if envName == "" {
		return "", false
	}
	return f.env(envName)
}

func usage(u, envName string) string {
	if envName == "" {
		return u
	}
	return u + " (env " + envName + ")"
}

// String registers a string flag.
func (f *Flags) String(p *string, name, envName, def, u string) {
	if v, ok := f.lookup(name, envName); ok {
		def = v
	}
	f.fs.StringVar(p, name, def, usage(u, envName))
}

// Int registers an int flag.
func (f *Flags) Int(p *int, name, envName string, def int, u string) {
	if v, ok := f.lookup(name, envName); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s: %q is not an integer", envName, v))
		} else {
			def = n
		}
	}
	f.fs.IntVar(p, name, def, usage(u, envName))
}

// Int64 registers an int64 flag.
func (f *Flags) Int64(p *int64, name, envName string, def int64, u string) {
	if v, ok := f.lookup(name, envName); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s: %q is not an integer", envName, v))
		} else {
			def = n
		}
	}
	f.fs.Int64Var(p, name, def, usage(u, envName))
}

// Duration registers a duration flag.
func (f *Flags) Duration(p *time.Duration, name, envName string, def time.Duration, u string) {
	if v, ok := f.lookup(name, envName); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s: %q is not a duration", envName, v))
		} else {
			def = d
		}
	}
	f.fs.DurationVar(p, name, def, usage(u, envName))
}

// Float64 registers a float64 flag.
func (f *Flags) Float64(p *float64, name, envName string, def float64, u string) {
	if v, ok := f.lookup(name, envName); ok {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s: %q is not a number", envName, v))
		} else {
			def = n
		}
	}
	f.fs.Float64Var(p, name, def, usage(u, envName))
}

// Bool registers a bool flag.
func (f *Flags) Bool(p *bool, name, envName string, def bool, u string) {
	if v, ok := f.lookup(name, envName); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			f.errs = append(f.errs, fmt.Errorf("%s: %q is not a boolean", envName, v))
		} else {
			def = b
		}
	}
	f.fs.BoolVar(p, name, def, usage(u, envName))
}

// Defaults shared by every binary.
const (
	DefaultNATSURL  = "nats://127.0.0.1:4222"
	DefaultRedisURL = "redis://127.0.0.1:6379/0"
)

// Common is the configuration every component shares.
type Common struct {
	NATSURL   string
	RedisURL  string
	Timezone  string
	LogFormat string
	LogLevel  string
}

// RegisterNATS registers --nats-url.
func (c *Common) RegisterNATS(f *Flags) {
	f.String(&c.NATSURL, "nats-url", "NATS_URL", DefaultNATSURL, "NATS server URL(s), comma separated")
}

// RegisterRedis registers --redis-url.
func (c *Common) RegisterRedis(f *Flags) {
	f.String(&c.RedisURL, "redis-url", "REDIS_URL", DefaultRedisURL, "Redis URL (redis:// or rediss://)")
}

// RegisterTimezone registers --timezone.
func (c *Common) RegisterTimezone(f *Flags) {
	f.String(&c.Timezone, "timezone", "COST_TIMEZONE", "UTC", "billing time zone (IANA name); days are cut in it")
}

// RegisterLog registers --log-format and --log-level.
func (c *Common) RegisterLog(f *Flags) {
	f.String(&c.LogFormat, "log-format", "LOG_FORMAT", "text", "log format: text or json")
	f.String(&c.LogLevel, "log-level", "LOG_LEVEL", "info", "log level: debug, info, warn, error")
}

// Validate checks whatever was registered (empty fields were not).
func (c *Common) Validate() error {
	var errs []error
	if c.NATSURL != "" {
		errs = append(errs, ValidateNATSURLs("--nats-url", c.NATSURL))
	}
	if c.RedisURL != "" {
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
			errs = append(errs, fmt.Errorf("--redis-url: %q is not a redis://, rediss:// or unix:// URL", RedactURL(c.RedisURL)))
		}
	}
	if c.Timezone != "" {
		if _, err := time.LoadLocation(c.Timezone); err != nil {
			errs = append(errs, fmt.Errorf("--timezone: %q is not an IANA time zone name", c.Timezone))
		}
	}
	if c.LogFormat != "" && c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format: %q is not text or json", c.LogFormat))
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("--log-level: %q is not debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}

// natsSchemes are the URL schemes nats.go dials.
var natsSchemes = map[string]bool{"nats": true, "tls": true, "ws": true, "wss": true}

// ValidateNATSURLs checks a comma-separated list of NATS server URLs (the
// nats.go convention: "nats://a:4222,nats://b:4222"): every element must be
// a nats://, tls://, ws:// or wss:// URL with a host. The client connects to
// one of them at random and fails over to the others (and to servers the
// cluster announces). flag names the setting in the error; credentials are
// redacted from it.
func ValidateNATSURLs(flag, list string) error {
	var errs []error
	n := 0
	for _, one := range strings.Split(list, ",") {
		one = strings.TrimSpace(one)
		if one == "" {
			continue
		}
		n++
		u, err := url.Parse(one)
		if err != nil || u.Host == "" || !natsSchemes[u.Scheme] {
			errs = append(errs, fmt.Errorf("%s: %q is not a URL like nats://host:4222", flag, RedactURL(one)))
			continue
		}
		if p := u.Port(); p != "" {
			if port, err := strconv.Atoi(p); err != nil || port < 1 || port > 65535 {
				errs = append(errs, fmt.Errorf("%s: %q has no valid port", flag, RedactURL(one)))
			}
		}
	}
	if n == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("%s: %q names no server", flag, list))
	}
	return errors.Join(errs...)
}

// Location loads the validated time zone.
func (c *Common) Location() *time.Location {
	loc, err := time.LoadLocation(c.Timezone)
	if err != nil {
		return time.UTC
	}
	return loc
}

// OSEnv is the process environment, for main.
func OSEnv(name string) (string, bool) { return os.LookupEnv(name) }
