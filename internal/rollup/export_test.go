package rollup

// Test access to the key layout: tests outside the package check expiries
// and slots, and nothing else may build keys.
var (
	ShardOf       = shardOf
	ShardTags     = shardTags
	ShardValueKey = valueKey
	CoverageKey   = coverageKey
	DayIndexKey   = dayIndexKey
	MonthIndexKey = monthIndexKey
	MaskKey       = maskKey
	NameIndexKey  = nameIndexKey
	AppliedKey    = appliedKey

	// The key table, for the layout test.
	KeyTable = keyTable
	MatchKey = matchKey
)
