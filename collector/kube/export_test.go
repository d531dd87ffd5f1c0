package kube

import "k8s.io/apimachinery/pkg/types"

// DeletePending reports whether the watch delivered the deletion of the pod
// with uid and the next scrape has not accounted it yet; tests wait on it
// instead of sleeping.
func DeletePending(s *Source, uid types.UID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.deleted[uid]
	return ok
}
