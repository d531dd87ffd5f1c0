package kubetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// ErrQuotaRecount means SetQuota was asked to track a new resource in a
// namespace that already has pods or claims: the resourcequota controller
// would count their usage, which the harness does not.
var ErrQuotaRecount = errors.New("the harness does not count existing usage: set quotas before creating pods and claims")

// SetQuota creates the ResourceQuota namespace/name with hard as its spec,
// or sets the spec of the one that exists, then writes its status through
// the status subresource as the resourcequota controller would:
// status.hard is the spec, status.used has each of those resources. Usage
// the API server's quota admission charged (each pod or claim created
// since the quota had a status) is kept; a resource new to the quota
// starts at 0, which is right only while the namespace has no pods and no
// claims, so otherwise SetQuota fails with ErrQuotaRecount. Until a quota
// has its status the API server admits no pod or claim in its namespace.
func (c *Cluster) SetQuota(ctx context.Context, namespace, name string, hard corev1.ResourceList) (*corev1.ResourceQuota, error) {
	quotas := c.Admin.CoreV1().ResourceQuotas(namespace)
	var out *corev1.ResourceQuota
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		q, err := quotas.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			q = &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Spec: corev1.ResourceQuotaSpec{Hard: hard}}
			q, err = quotas.Create(ctx, q, metav1.CreateOptions{})
		case err == nil:
			q.Spec.Hard = hard
			q, err = quotas.Update(ctx, q, metav1.UpdateOptions{})
		}
		if err != nil {
			return err
		}
		used := corev1.ResourceList{}
		var added []string
		for r := range hard {
			if u, ok := q.Status.Used[r]; ok {
				used[r] = u
			} else {
				used[r] = *resource.NewQuantity(0, resource.DecimalSI)
				added = append(added, string(r))
			}
		}
		if len(added) > 0 {
			if err := c.noUsage(ctx, namespace); err != nil {
				slices.Sort(added)
				return fmt.Errorf("track %s: %w", strings.Join(added, ", "), err)
			}
		}
		q.Status = corev1.ResourceQuotaStatus{Hard: hard.DeepCopy(), Used: used}
		out, err = quotas.UpdateStatus(ctx, q, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("set quota %s/%s: %w", namespace, name, err)
	}
	return out, nil
}

// noUsage fails with ErrQuotaRecount if namespace has a pod or a claim.
func (c *Cluster) noUsage(ctx context.Context, namespace string) error {
	pods, err := c.Admin.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	claims, err := c.Admin.CoreV1().PersistentVolumeClaims(namespace).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return fmt.Errorf("list claims: %w", err)
	}
	if len(pods.Items) > 0 || len(claims.Items) > 0 {
		return fmt.Errorf("%w (namespace %s has pods or claims)", ErrQuotaRecount, namespace)
	}
	return nil
}
