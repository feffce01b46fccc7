// Package remote applies PgQ events to a second database exactly once.
package remote
