package pricing

import (
	"fmt"
	"slices"
)

// Currencies are the ISO 4217 codes --currency accepts (the API's and the
// exporter's), exactly those of the published contract and in its order:
// CNY (the default), USD, THB, RUB, AUD, CAD, CHF, DKK, EUR, GBP, IDR, INR,
// JPY, HKD and SGD. Nothing converts: prices are in this currency and rows
// echo it.
var Currencies = []string{"CNY", "USD", "THB", "RUB", "AUD", "CAD", "CHF", "DKK", "EUR", "GBP", "IDR", "INR", "JPY", "HKD", "SGD"}

// CheckCurrency reports whether c is one of Currencies, naming the flag
// that gave it.
func CheckCurrency(flag, c string) error {
	if !slices.Contains(Currencies, c) {
		return fmt.Errorf("%s: %q is not one of %v", flag, c, Currencies)
	}
	return nil
}
