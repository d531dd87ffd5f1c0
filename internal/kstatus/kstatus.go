// Package kstatus writes Kubernetes Status objects, the one error shape of
// the cost API: {"kind":"Status","apiVersion":"v1","metadata":{},
// "status":"Failure","message":…,"reason":…,"code":…}.
package kstatus

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// Status is a Kubernetes meta/v1 Status object of a failure.
type Status struct {
	Kind       string   `json:"kind"`
	APIVersion string   `json:"apiVersion"`
	Metadata   struct{} `json:"metadata"`
	Status     string   `json:"status"`
	Message    string   `json:"message"`
	Reason     string   `json:"reason"`
	Code       int      `json:"code"`
}

// Reasons by HTTP code, as Kubernetes names them (metav1.StatusReason).
var reasons = map[int]string{
	http.StatusBadRequest:          "BadRequest",
	http.StatusUnauthorized:        "Unauthorized",
	http.StatusForbidden:           "Forbidden",
	http.StatusNotFound:            "NotFound",
	http.StatusMethodNotAllowed:    "MethodNotAllowed",
	http.StatusTooManyRequests:     "TooManyRequests",
	http.StatusInternalServerError: "InternalError",
	http.StatusServiceUnavailable:  "ServiceUnavailable",
	http.StatusGatewayTimeout:      "Timeout",
}

// Reason is the Kubernetes reason of an HTTP code ("Unknown" when none fits).
func Reason(code int) string {
	if r, ok := reasons[code]; ok {
		return r
	}
	return "Unknown"
}

// New returns the failure Status for code with message.
func New(code int, message string) Status {
	return Status{Kind: "Status", APIVersion: "v1", Status: "Failure", Message: message, Reason: Reason(code), Code: code}
}

// Abort writes the Status for code and stops the handler chain.
func Abort(c *gin.Context, code int, message string) {
	c.AbortWithStatusJSON(code, New(code, message))
}
