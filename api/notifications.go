package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/alauda/costmeter/notifier"
)

// Paths of the notification routes: the thresholds the notifier fired,
// with their delivery state.
const (
	PlatformNotificationsPath = "/platform/cost.alauda.io/v1beta1/notifications"
	ProjectNotificationsPath  = "/platform/cost.alauda.io/v1beta1/projects/:project/notifications"
)

// Notifications is what the notification routes read: a page of fired
// notifications, newest first, every one (project "") or one project's,
// and how many there are (notifier.Log).
type Notifications interface {
	List(ctx context.Context, project string, offset, limit int) ([]notifier.Listed, int, error)
}

// WithNotifications serves the notification routes from n; without it
// they answer 503.
func WithNotifications(n Notifications) Option { return func(s *Server) { s.notifications = n } }

// ErrNotificationsDisabled is the 503 of the notification routes when the
// server has no notification store.
var ErrNotificationsDisabled = errors.New("notifications are not configured on this server")

// NotificationList is one page of notifications.
type NotificationList struct {
	PageSize    int               `json:"pageSize"`
	CurrentPage int               `json:"currentPage"`
	Total       int               `json:"total"`
	Items       []notifier.Listed `json:"items"`
}

func (s *Server) notificationRoutes(g *gin.RouterGroup) {
	g.GET(PlatformNotificationsPath, func(c *gin.Context) { s.listNotifications(c, "") })
	g.GET(ProjectNotificationsPath, func(c *gin.Context) { s.listNotifications(c, c.Param("project")) })
}

// listNotifications answers a page, authorised like the usage routes:
// platform scope for every notification, the project (or platform scope)
// for a project's own (its project's and its namespaces'; cluster
// notifications belong to no project). currentPage and pageSize follow the
// usage route's rules and messages.
func (s *Server) listNotifications(c *gin.Context, project string) {
	ctx := c.Request.Context()
	list, err := s.notificationPage(c, project)
	if err != nil {
		code, msg := statusOf(err)
		if errors.Is(err, ErrNotificationsDisabled) {
			code, msg = http.StatusServiceUnavailable, err.Error()
		}
		if code >= 500 {
			s.log.ErrorContext(ctx, "list notifications", "path", c.Request.URL.Path, "code", code, "err", err)
		}
		abort(c, code, msg)
		return
	}
	c.JSON(http.StatusOK, list)
}

func (s *Server) notificationPage(c *gin.Context, project string) (NotificationList, error) {
	ctx := c.Request.Context()
	if err := authorize(ctx, project); err != nil {
		return NotificationList{}, err
	}
	v := c.Request.URL.Query()
	page, err := parseInt(v, "currentPage", 1, 1, MaxPage)
	if err != nil {
		return NotificationList{}, err
	}
	size, err := parseInt(v, "pageSize", DefaultPageSize, 1, MaxPageSize)
	if err != nil {
		return NotificationList{}, err
	}
	if s.notifications == nil {
		return NotificationList{}, ErrNotificationsDisabled
	}
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	items, total, err := s.notifications.List(ctx, project, (page-1)*size, size)
	if err != nil {
		return NotificationList{}, fmt.Errorf("list notifications: %w", err)
	}
	if items == nil {
		items = []notifier.Listed{}
	}
	return NotificationList{PageSize: size, CurrentPage: page, Total: total, Items: items}, nil
}
