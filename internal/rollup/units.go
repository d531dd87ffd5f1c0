// Package rollup owns the exact day rollups: how a sample is split into
// per-day fixed-point contributions, and how those are kept in Redis (key
// layout, atomic apply with exactly-once coverage, the entity indexes that
// paging needs, and the applied-sequence watermark that heals lost writes).
//
// Everything numeric that users depend on is defined here, once.
package rollup

import (
	"fmt"
)

// Scale is the fixed-point resolution: a stored integer counts millionths of
// a unit-second (a core-second for CPU, a GiB-second for memory and
// storage). One sample's contribution is rounded once, on its own, so sums
// are exact integers independent of order and batching; the rounding error
// of one sample is at most 0.5/Scale unit-seconds (1.4e-10 unit-hours).
// A day of the largest accepted namespace (sample.MaxCores) is 8.6e16, so
// int64 day sums have room for ~100 such namespaces in one project-day.
const Scale = 1_000_000

// UnitSecondsPerHour converts unit-seconds to the API's unit-hours.
const UnitSecondsPerHour = 3600

// bytesPerGiB converts memory and storage bytes to GiB.
const bytesPerGiB = 1 << 30

// Item is a metered resource.
type Item int

// The metered items, in their stored order.
const (
	Cpu Item = iota
	Memory
	Storage
	numItems
)

// Method is how an item is measured.
type Method int

// The methods, in their stored order.
const (
	Usage Method = iota
	Request
	Effective
	ProjectQuota
	numMethods
)

// Fields is the number of integers kept per entity and day.
const Fields = int(numItems) * int(numMethods)

var (
	itemNames   = [...]string{"Cpu", "Memory", "Storage"}
	methodNames = [...]string{"Usage", "Request", "Effective", "ProjectQuota"}
)

func (i Item) String() string {
	if i < 0 || i >= numItems {
		return fmt.Sprintf("Item(%d)", int(i))
	}
	return itemNames[i]
}

func (m Method) String() string {
	if m < 0 || m >= numMethods {
		return fmt.Sprintf("Method(%d)", int(m))
	}
	return methodNames[m]
}

// Items lists every item in stored order.
func Items() []Item { return []Item{Cpu, Memory, Storage} }

// Methods lists every method in stored order.
func Methods() []Method { return []Method{Usage, Request, Effective, ProjectQuota} }

// ParseItem maps an API name (Cpu, Memory, Storage) to an Item.
func ParseItem(s string) (Item, bool) {
	for i, n := range itemNames {
		if n == s {
			return Item(i), true
		}
	}
	return 0, false
}

// ParseMethod maps an API name (Usage, Request, Effective, ProjectQuota).
func ParseMethod(s string) (Method, bool) {
	for i, n := range methodNames {
		if n == s {
			return Method(i), true
		}
	}
	return 0, false
}

// Field is the index of (item, method) in Values.
func Field(i Item, m Method) int { return int(i)*int(numMethods) + int(m) }

// Values are the fixed-point sums of one entity for one day, indexed by
// Field.
type Values [Fields]int64

// Add adds o to v.
func (v *Values) Add(o *Values) {
	for i := range v {
		v[i] += o[i]
	}
}

// addChecked adds o to v field by field and reports whether no sum
// overflowed int64 (where one did, v holds the wrapped sum).
func (v *Values) addChecked(o *Values) bool {
	ok := true
	for i, x := range o {
		n := v[i] + x
		if (x > 0 && n < v[i]) || (x < 0 && n > v[i]) {
			ok = false
		}
		v[i] = n
	}
	return ok
}

// Hours converts a fixed-point sum to unit-hours (core-hours, GiB-hours).
func Hours(fixed int64) float64 {
	// Split to keep full precision for sums above 2^53.
	const perHour = Scale * UnitSecondsPerHour
	whole := fixed / perHour
	rest := fixed % perHour
	return float64(whole) + float64(rest)/perHour
}
