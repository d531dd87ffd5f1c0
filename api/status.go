package api

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/internal/kstatus"
	"github.com/alauda/costmeter/internal/stream"
)

func abort(c *gin.Context, code int, message string) { kstatus.Abort(c, code, message) }

// ErrBadParameter is wrapped by every query parameter error; its message
// names the parameter.
var ErrBadParameter = errors.New("bad parameter")

// ErrForbidden is returned when the principal may not see what it asked.
var ErrForbidden = errors.New("forbidden")

// statusOf maps an error to its HTTP code and message: the one place
// errors become Status codes. Infrastructure failures are not described to
// the caller beyond what is safe.
func statusOf(err error) (int, string) {
	switch {
	case errors.Is(err, ErrBadParameter):
		return http.StatusBadRequest, strings.TrimPrefix(err.Error(), ErrBadParameter.Error()+": ")
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden, strings.TrimPrefix(err.Error(), ErrForbidden.Error()+": ")
	case errors.Is(err, ErrTooManyWatches):
		return http.StatusTooManyRequests, err.Error()
	case errors.Is(err, ErrWatchDisabled):
		return http.StatusServiceUnavailable, ErrWatchDisabled.Error()
	case errors.Is(err, ErrEventsUnavailable):
		return http.StatusServiceUnavailable, "the rollup events (nats stream " + stream.Rollups + ") are unavailable; retry later"
	case unavailable(err):
		return http.StatusServiceUnavailable, "the usage store (redis) is unavailable; retry later"
	default:
		return http.StatusInternalServerError, "internal error"
	}
}

// unavailable reports whether err says Redis cannot be reached or is not
// ready, as opposed to a bug.
func unavailable(err error) bool {
	var ne net.Error
	switch {
	case errors.As(err, &ne),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, redis.ErrClosed),
		errors.Is(err, redis.ErrPoolTimeout),
		errors.Is(err, context.DeadlineExceeded):
		return true
	}
	msg := err.Error()
	for _, p := range []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY"} {
		if strings.Contains(msg, p+" ") {
			return true
		}
	}
	return false
}
