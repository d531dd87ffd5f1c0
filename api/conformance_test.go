package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	legacy "github.com/getkin/kin-openapi/routers/legacy"

	"github.com/alauda/costmeter/api"
)

// Every answer of the API in this package's tests is checked against
// openapi.yaml with kin-openapi's response validation: the handlers the
// tests build go through conform (or, for a server started with Run, the
// client's transport through conformingTransport), error answers
// included. A test that used to look at an answer the document does not
// describe now fails with the request, the answer and what differs.

// consoleRoute reports whether path is one of the console's static
// routes, which the description leaves out (see notInDescription).
func consoleRoute(path string) bool {
	return path == "/" || path == "/console" || strings.HasPrefix(path, "/console/")
}

// validator checks answers against the served document.
type validator struct {
	doc    *openapi3.T
	router routers.Router
}

func newValidator(t testing.TB) *validator {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPISpec())
	if err != nil {
		t.Fatalf("load openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is invalid: %v", err)
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatalf("route openapi.yaml: %v", err)
	}
	return &validator{doc: doc, router: router}
}

// check validates one answer to req. An answer to a path the document
// does not have (404, or 400 for an ambiguous Authorization) must be a
// Status all the same; the console's files are left alone.
func (v *validator) check(req *http.Request, code int, header http.Header, body []byte) error {
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		if consoleRoute(req.URL.Path) {
			return nil
		}
		if code < 400 {
			return fmt.Errorf("%s %s is not in openapi.yaml (%v) yet answered %d %.300s", req.Method, req.URL.Path, err, code, body)
		}
		var status any
		if err := json.Unmarshal(body, &status); err != nil {
			return fmt.Errorf("%s %s: the %d is not JSON: %v: %.300s", req.Method, req.URL.Path, code, err, body)
		}
		if err := v.doc.Components.Schemas["Status"].Value.VisitJSON(status); err != nil {
			return fmt.Errorf("%s %s: the %d is not a Status: %v: %.300s", req.Method, req.URL.Path, code, err, body)
		}
		return nil
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: code, Header: header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		return fmt.Errorf("%s %s: answer %d %s %.300s does not match openapi.yaml: %v", req.Method, req.URL, code, header.Get("Content-Type"), body, err)
	}
	return nil
}

// conform wraps h so that every answer it gives is validated when the
// handler returns; a mismatch fails t. Streams pass through as they are
// written and are validated, frame by frame, when they end.
func conform(t testing.TB, h http.Handler) http.Handler {
	t.Helper()
	v := newValidator(t)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := r.Clone(context.Background())
		rw := &recordingWriter{ResponseWriter: w}
		h.ServeHTTP(rw, r)
		code, header, body := rw.answer()
		if err := v.check(req, code, header, body); err != nil {
			t.Error(err)
		}
	})
}

// recordingWriter passes an answer through and keeps a copy of it.
type recordingWriter struct {
	http.ResponseWriter
	mu     sync.Mutex
	code   int
	header http.Header
	body   bytes.Buffer
}

func (w *recordingWriter) WriteHeader(code int) {
	w.mu.Lock()
	if w.code == 0 {
		w.code, w.header = code, w.ResponseWriter.Header().Clone()
	}
	w.mu.Unlock()
	w.ResponseWriter.WriteHeader(code)
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.code == 0 {
		w.code, w.header = http.StatusOK, w.ResponseWriter.Header().Clone()
	}
	w.body.Write(p)
	w.mu.Unlock()
	return w.ResponseWriter.Write(p)
}

// Flush lets streams through as they are written.
func (w *recordingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *recordingWriter) answer() (int, http.Header, []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.code == 0 { // nothing written: net/http sends 200
		return http.StatusOK, w.ResponseWriter.Header().Clone(), nil
	}
	return w.code, w.header, bytes.Clone(w.body.Bytes())
}

// conformingTransport validates every answer a client reads, when its
// body is closed: for servers the test starts with Run, whose handler it
// cannot wrap.
type conformingTransport struct {
	t    testing.TB
	v    *validator
	base http.RoundTripper
}

func newConformingClient(t testing.TB) *http.Client {
	t.Helper()
	return &http.Client{Transport: &conformingTransport{t: t, v: newValidator(t), base: &http.Transport{}}}
}

func (c *conformingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	req := r.Clone(context.Background())
	req.URL.Scheme, req.URL.Host = "", "" // the document's server is relative
	stream := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	resp.Body = &teeBody{ReadCloser: resp.Body, stream: stream, done: func(body []byte) {
		if err := c.v.check(req, resp.StatusCode, resp.Header, body); err != nil {
			c.t.Error(err)
		}
	}}
	return resp, nil
}

func (c *conformingTransport) CloseIdleConnections() {
	if ci, ok := c.base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// teeBody keeps what is read of a body and hands it to done on Close:
// the whole body (what the client left unread is read then), or, for a
// stream the client hangs up on, its whole frames.
type teeBody struct {
	io.ReadCloser
	stream bool
	mu     sync.Mutex
	buf    bytes.Buffer
	once   sync.Once
	done   func([]byte)
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.mu.Lock()
	b.buf.Write(p[:n])
	b.mu.Unlock()
	return n, err
}

func (b *teeBody) Close() error {
	if !b.stream {
		_, _ = io.Copy(io.Discard, b) // through Read: kept
	}
	err := b.ReadCloser.Close()
	b.once.Do(func() {
		b.mu.Lock()
		body := bytes.Clone(b.buf.Bytes())
		b.mu.Unlock()
		if b.stream { // whole frames only
			end := 0
			if i := bytes.LastIndex(body, []byte("\n\n")); i >= 0 {
				end = i + 2
			}
			body = body[:end]
		}
		b.done(body)
	})
	return err
}

// decodeEventStream is kin-openapi's body decoder for text/event-stream:
// the frames as the WatchStream schema describes them (an event's data
// JSON-decoded, a comment's text). A frame cut short is an error.
func decodeEventStream(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
	raw, err := io.ReadAll(body)
	if err != nil {
		return nil, err
	}
	if len(raw) > 0 && !bytes.HasSuffix(raw, []byte("\n\n")) {
		return nil, fmt.Errorf("the stream ends inside a frame: %.200q", raw[max(0, len(raw)-200):])
	}
	frames := []any{}
	for _, block := range strings.Split(strings.TrimSuffix(string(raw), "\n\n"), "\n\n") {
		if block == "" {
			continue
		}
		frame := map[string]any{}
		sc := bufio.NewScanner(strings.NewReader(block))
		for sc.Scan() {
			field, value, _ := strings.Cut(sc.Text(), ": ")
			if _, dup := frame[field]; dup {
				return nil, fmt.Errorf("frame %q repeats %q", block, field)
			}
			switch field {
			case "":
				frame["comment"] = value
			case "event", "id":
				frame[field] = value
			case "data":
				var data any
				if err := json.Unmarshal([]byte(value), &data); err != nil {
					return nil, fmt.Errorf("frame %q: data is not JSON: %w", block, err)
				}
				frame["data"] = data
			default:
				return nil, fmt.Errorf("frame %q: unknown line %q", block, sc.Text())
			}
		}
		frames = append(frames, frame)
	}
	return frames, nil
}
