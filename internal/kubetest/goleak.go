package kubetest

import "go.uber.org/goleak"

// GoleakOptions are the goroutines a package using a Cluster leaves behind
// by design: client-go caches its HTTP transports process-wide, so their
// idle connections to the API server outlive the clients, and klog runs a
// flush daemon.
func GoleakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("golang.org/x/net/http2.(*ClientConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*http2ClientConn).readLoop"),
		goleak.IgnoreAnyFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	}
}
