package decimal_test

import (
	"testing"

	"github.com/regkit/regkit/internal/decimal"
)

func TestDigits(t *testing.T) {
	for s, want := range map[string]bool{
		"0": true, "80": true, "0080": true, "65535": true,
		"": false, "+80": false, "-1": false, " 80": false, "80 ": false, "8 0": false, "0x50": false, "８０": false,
	} {
		if got := decimal.Digits(s); got != want {
			t.Errorf("Digits(%q) = %v, want %v", s, got, want)
		}
	}
}
