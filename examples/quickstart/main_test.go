package main

import "testing"

// TestQuickstart runs the quickstart end to end on the backend it defaults to.
func TestQuickstart(t *testing.T) {
	if err := run(); err != nil {
		t.Fatal(err)
	}
}
