package kube

// DeletesPending is how many pod deletions the watch delivered that the
// next scrape has not accounted yet; tests wait on it instead of sleeping.
func DeletesPending(s *Source) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.finals)
}
