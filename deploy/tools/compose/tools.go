//go:build tools

// Package tools pins Docker Compose (the `docker compose` CLI plugin) so that deploy/check.sh
// can build it from the Go module proxy and run `docker compose config` on a machine without
// Docker's own package repository: go build github.com/docker/compose/v5/cmd.
package tools

import _ "github.com/docker/compose/v5/cmd"
