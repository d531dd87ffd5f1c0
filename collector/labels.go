package collector

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/alauda/costmeter/internal/glob"
	"github.com/alauda/costmeter/internal/sample"
)

// ParseLabelKeys parses --allocation-labels (sample.ParseLabelKeys, the
// one rule of the aggregator, the API and the exporter too).
func ParseLabelKeys(s string) ([]string, error) { return sample.ParseLabelKeys(s) }

// Labeler decides the allocation labels a namespace's samples carry: for
// each configured key (--allocation-labels), the namespace's own label
// value, else the value the label map (--allocation-label-map) gives
// namespaces matching its first matching glob, else nothing (the key is
// left out and the namespace counts as unallocated for it). A nil Labeler
// attaches no labels.
type Labeler struct {
	keys  []string
	rules []labelRule
}

type labelRule struct {
	namespace glob.Pattern
	labels    map[string]string
}

// NewLabeler returns the labeler of keys with the rules of the label map
// file (empty: none). Every key of the map must be one of keys.
func NewLabeler(keys []string, mapFile string) (*Labeler, error) {
	l := &Labeler{keys: slices.Clone(keys)}
	if mapFile == "" {
		return l, nil
	}
	if len(keys) == 0 {
		return nil, errors.New("a label map needs --allocation-labels: it maps namespaces to values of those keys")
	}
	b, err := os.ReadFile(mapFile)
	if err != nil {
		return nil, err
	}
	if l.rules, err = parseLabelMap(b, keys); err != nil {
		return nil, fmt.Errorf("%s: %w", mapFile, err)
	}
	return l, nil
}

// labelMapFile is the label map's YAML:
//
//	namespaces:
//	  - namespace: "kube-*"     # glob of namespace names
//	    labels: {team: platform, cost-center: cc-100}
type labelMapFile struct {
	Namespaces []struct {
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"namespaces"`
}

// parseLabelMap reads a label map strictly: unknown fields, a bad glob, a
// key that is not collected and a value that is not a label value are
// errors naming where they are.
func parseLabelMap(b []byte, keys []string) ([]labelRule, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f labelMapFile
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	var rules []labelRule
	for i, r := range f.Namespaces {
		path := fmt.Sprintf("namespaces[%d]", i)
		p, err := glob.Compile(r.Namespace, func(s string) error { return sample.CheckName(sample.NameNamespace, s) })
		if err != nil {
			return nil, fmt.Errorf("%s.namespace: %w", path, err)
		}
		if len(r.Labels) == 0 {
			return nil, fmt.Errorf("%s.labels: required (the values of the --allocation-labels keys for these namespaces)", path)
		}
		for _, k := range sortedKeys(r.Labels) {
			if !slices.Contains(keys, k) {
				return nil, fmt.Errorf("%s.labels: key %q is not one of --allocation-labels (%s)", path, k, strings.Join(keys, ","))
			}
			if err := sample.CheckLabelValue(k, r.Labels[k]); err != nil {
				return nil, fmt.Errorf("%s.labels: %w", path, err)
			}
		}
		rules = append(rules, labelRule{namespace: p, labels: r.Labels})
	}
	return rules, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Keys returns the configured keys (nil for a nil Labeler).
func (l *Labeler) Keys() []string {
	if l == nil {
		return nil
	}
	return slices.Clone(l.keys)
}

// Labels returns the allocation labels of namespace ns whose own labels
// are own (a key's own value wins over the map; an empty or invalid own
// value counts as absent). It returns nil when there are none.
func (l *Labeler) Labels(ns string, own map[string]string) map[string]string {
	if l == nil || len(l.keys) == 0 {
		return nil
	}
	var mapped map[string]string
	for _, r := range l.rules {
		if r.namespace.Match(ns) {
			mapped = r.labels
			break
		}
	}
	var out map[string]string
	for _, k := range l.keys {
		v, ok := own[k]
		if !ok || sample.CheckLabelValue(k, v) != nil {
			v, ok = mapped[k]
		}
		if !ok {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(l.keys))
		}
		out[k] = v
	}
	return out
}
