// Package events holds the sample Lambda events of the consumer functions (the *.json files in
// this folder) and the test that generates them and checks each one through each function's
// handler. Regenerate with `go test ./events -update`. See README.md.
package events
