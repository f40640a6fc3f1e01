// Package decimal holds the one check of a plain decimal number in user input
// (ports in URLs, the environment and command lines; integer URL parameters):
// strconv.Atoi also takes a sign, so "+80" would pass as a port.
package decimal

// Digits reports whether s is one or more ASCII digits 0-9: no sign, no space.
func Digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
