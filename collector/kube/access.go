package kube

import (
	"context"
	"errors"
	"fmt"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ErrForbidden means RBAC does not grant the source what it needs; the
// error wrapping it names each missing permission.
var ErrForbidden = errors.New("kubernetes RBAC forbids the collector to")

// permission is one verb on one resource, cluster-wide.
type permission struct {
	verb, group, resource string
}

func (p permission) String() string {
	if p.group == "" {
		return p.verb + " " + p.resource
	}
	return p.verb + " " + p.resource + "." + p.group
}

// requiredAccess is what the source does with the API server: its shared
// informers list and watch six kinds (nodes and persistent volumes for the
// cluster's capacity), and it lists pod metrics (which cannot be watched).
// nodes/proxy, for volume stats, is optional.
func requiredAccess() []permission {
	var out []permission
	for _, r := range []string{"namespaces", "pods", "resourcequotas", "persistentvolumeclaims", "nodes", "persistentvolumes"} {
		out = append(out, permission{"list", "", r}, permission{"watch", "", r})
	}
	return append(out, permission{"list", "metrics.k8s.io", "pods"})
}

// checkAccess asks the API server (SelfSubjectAccessReview, which every
// authenticated user may create) whether the source's credentials have
// each required permission, and fails naming all that are missing: with a
// missing rule the informers would otherwise retry forever and the source
// never become ready. When the reviews themselves fail, the source goes on
// and the informers' errors tell.
func (s *Source) checkAccess(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var denied []string
	for _, p := range requiredAccess() {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: p.verb, Group: p.group, Resource: p.resource},
		}}
		r, err := s.kc.AuthorizationV1().SelfSubjectAccessReviews().Create(cctx, review, metav1.CreateOptions{})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.log.WarnContext(ctx, "cannot check the collector's RBAC permissions; starting anyway", "err", err)
			return nil
		}
		if !r.Status.Allowed {
			denied = append(denied, p.String())
		}
	}
	if len(denied) > 0 {
		return fmt.Errorf("%w: %s (cluster-wide); the ClusterRole cost-collector in deploy/kubernetes/collector-rbac.yaml grants them",
			ErrForbidden, strings.Join(denied, ", "))
	}
	return nil
}
