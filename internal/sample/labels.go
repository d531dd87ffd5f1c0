package sample

import (
	"fmt"
	"sort"
	"strings"
)

// MaxLabels is the most label keys one sample may carry: the allocation
// keys a collector is configured to attach (--allocation-labels).
const MaxLabels = 8

// The label key and value rules are Kubernetes' (apimachinery's
// IsQualifiedName and IsValidLabelValue), so any label a namespace can
// carry can be sent, verbatim: keys keep their dots and slashes. One
// difference: a value must not be empty. An empty value names no team, so
// a collector leaves the key out (the namespace counts as unallocated for
// it) rather than send it.
const (
	maxLabelName   = 63  // a key's name part, and a value
	maxLabelPrefix = 253 // a key's DNS subdomain prefix
)

// CheckLabelKey checks a label key: an optional DNS subdomain prefix and
// '/', then a name of at most 63 characters of [A-Za-z0-9._-], starting
// and ending with a letter or digit. The error names the key.
func CheckLabelKey(key string) error {
	name := key
	if i := strings.IndexByte(key, '/'); i >= 0 {
		prefix := key[:i]
		name = key[i+1:]
		if prefix == "" {
			return fmt.Errorf("label key %q: the prefix before '/' is empty", truncate(key))
		}
		if len(prefix) > maxLabelPrefix {
			return fmt.Errorf("label key %q: the prefix is longer than %d characters", truncate(key), maxLabelPrefix)
		}
		for _, part := range strings.Split(prefix, ".") {
			if err := CheckName("prefix", part); err != nil {
				return fmt.Errorf("label key %q: the prefix must be a lowercase DNS subdomain", truncate(key))
			}
		}
	}
	if err := checkLabelName(name); err != nil {
		return fmt.Errorf("label key %q: %s", truncate(key), err)
	}
	return nil
}

// CheckLabelValue checks a label value: 1 to 63 characters of
// [A-Za-z0-9._-], starting and ending with a letter or digit.
func CheckLabelValue(key, value string) error {
	if value == "" {
		return fmt.Errorf("label %q: the value is empty (leave the key out instead)", truncate(key))
	}
	if err := checkLabelName(value); err != nil {
		return fmt.Errorf("label %q: value %q: %s", truncate(key), truncate(value), err)
	}
	return nil
}

func checkLabelName(s string) error {
	if s == "" {
		return fmt.Errorf("the name is empty")
	}
	if len(s) > maxLabelName {
		return fmt.Errorf("longer than %d characters", maxLabelName)
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !alnum(c) && c != '-' && c != '_' && c != '.' {
			return fmt.Errorf("byte %d is not one of A-Z, a-z, 0-9, '-', '_', '.'", i)
		}
	}
	if !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return fmt.Errorf("must start and end with a letter or digit")
	}
	return nil
}

// checkLabels checks a sample's labels.
func checkLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return invalid("labels: %d keys, at most %d", len(labels), MaxLabels)
	}
	for _, k := range sortedKeys(labels) {
		if err := CheckLabelKey(k); err != nil {
			return invalid("labels: %s", err)
		}
		if err := CheckLabelValue(k, labels[k]); err != nil {
			return invalid("labels: %s", err)
		}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ParseLabelKeys parses a comma-separated list of label keys (the
// --allocation-labels of the aggregator, the API, the exporter and the
// collectors): each a Kubernetes label key (CheckLabelKey), none twice, at
// most MaxLabels. An empty list is no key.
func ParseLabelKeys(list string) ([]string, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	var keys []string
	for _, k := range strings.Split(list, ",") {
		k = strings.TrimSpace(k)
		if err := CheckLabelKey(k); err != nil {
			return nil, err
		}
		for _, seen := range keys {
			if seen == k {
				return nil, fmt.Errorf("label key %q is listed twice", k)
			}
		}
		keys = append(keys, k)
	}
	if len(keys) > MaxLabels {
		return nil, fmt.Errorf("%d label keys, at most %d", len(keys), MaxLabels)
	}
	return keys, nil
}
