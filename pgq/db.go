package pgq

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DB is what every function in this package needs: satisfied by
// *pgxpool.Pool, *pgx.Conn and pgx.Tx.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Sentinel errors; test with errors.Is.
var (
	// ErrNoExtension means the database has no pgq schema (or an unusable one).
	ErrNoExtension = errors.New("pgq extension is not installed in this database " +
		"(install the package, e.g. apt-get install -y postgresql-15-pgq3, then run: create extension pgq)")
	// ErrQueueNotFound means the named queue does not exist.
	ErrQueueNotFound = errors.New("queue not found")
	// ErrNotRegistered means the consumer is not registered on the queue.
	ErrNotRegistered = errors.New("consumer not registered on queue")
	// ErrNoTicks means the queue has no tick yet (run the ticker).
	ErrNoTicks = errors.New("queue has no ticks yet; run the ticker")
	// ErrBatchNotFound means the batch id is not an active batch.
	ErrBatchNotFound = errors.New("batch not found")
	// ErrTickNotFound means a consumer cannot be positioned at a tick the
	// queue no longer has (RegisterConsumerAt): maintenance removed it.
	ErrTickNotFound = errors.New("tick not found")
	// ErrInvalidName is returned before any SQL is sent for a bad queue or consumer name.
	ErrInvalidName = errors.New("invalid name")
	// ErrInvalidArgument is returned before any SQL is sent for a bad argument.
	ErrInvalidArgument = errors.New("invalid argument")
)

// MaxNameLen bounds queue and consumer names.
const MaxNameLen = 200

// ValidateName checks a queue or consumer name: non-empty, at most
// MaxNameLen bytes, valid UTF-8 without control characters.
func ValidateName(kind, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("pgq: %s name is empty: %w", kind, ErrInvalidName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("pgq: %s name is %d bytes, limit %d: %w", kind, len(name), MaxNameLen, ErrInvalidName)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return fmt.Errorf("pgq: %s name %q has a control or invalid character: %w", kind, name, ErrInvalidName)
		}
	}
	return nil
}

func validateQC(queue, consumer string) error {
	if err := ValidateName("queue", queue); err != nil {
		return err
	}
	return ValidateName("consumer", consumer)
}

// classify maps PgQ's error messages to sentinel errors while keeping the
// original error reachable.
func classify(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	msg := pe.Message
	switch {
	case pe.Code == "3F000" && strings.Contains(msg, "pgq"), // schema "pgq" does not exist
		pe.Code == "42883" && strings.Contains(msg, "pgq."): // function pgq.x does not exist
		return &wrapped{sentinel: ErrNoExtension, err: err}
	case strings.Contains(msg, "Not subscriber to queue"), msg == "consumer not registered":
		return &wrapped{sentinel: ErrNotRegistered, err: err}
	case msg == "Event queue not found", msg == "No such event queue", msg == "no such queue", msg == "No such queue",
		msg == "Queue not found", msg == "Event queue not created yet",
		strings.HasPrefix(msg, "queue not found"):
		return &wrapped{sentinel: ErrQueueNotFound, err: err}
	case strings.HasPrefix(msg, "No ticks for this queue"):
		return &wrapped{sentinel: ErrNoTicks, err: err}
	case strings.HasPrefix(msg, "cannot reposition, tick not found"):
		return &wrapped{sentinel: ErrTickNotFound, err: err}
	case msg == "batch not found", strings.HasPrefix(msg, "batch_retry: batch"),
		strings.HasPrefix(msg, "Cannot find data for batch"):
		return &wrapped{sentinel: ErrBatchNotFound, err: err}
	}
	return err
}

// wrapped makes both a sentinel and the original PostgreSQL error reachable.
type wrapped struct {
	sentinel error
	err      error
}

func (w *wrapped) Error() string   { return w.sentinel.Error() + ": " + w.err.Error() }
func (w *wrapped) Unwrap() []error { return []error{w.sentinel, w.err} }

func opErr(op, queue, consumer string, err error) error {
	err = classify(err)
	switch {
	case queue != "" && consumer != "":
		return fmt.Errorf("pgq: %s %s/%s: %w", op, queue, consumer, err)
	case queue != "":
		return fmt.Errorf("pgq: %s %s: %w", op, queue, err)
	default:
		return fmt.Errorf("pgq: %s: %w", op, err)
	}
}

// Version returns pgq.version(), e.g. "3.5.1".
func Version(ctx context.Context, db DB) (string, error) {
	var v string
	if err := db.QueryRow(ctx, "select pgq.version()").Scan(&v); err != nil {
		return "", opErr("version", "", "", err)
	}
	return v, nil
}

// CheckExtension returns ErrNoExtension when the database has no usable pgq
// (missing schema, or a version older than 3).
func CheckExtension(ctx context.Context, db DB) error {
	var has bool
	if err := db.QueryRow(ctx, "select exists (select 1 from pg_namespace where nspname = 'pgq')").Scan(&has); err != nil {
		return fmt.Errorf("pgq: check extension: %w", err)
	}
	if !has {
		return fmt.Errorf("pgq: check extension: %w", ErrNoExtension)
	}
	v, err := Version(ctx, db)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(v, "3.") && !(len(v) > 0 && v[0] >= '4' && v[0] <= '9') {
		return fmt.Errorf("pgq: check extension: version %s is older than 3: %w", v, ErrNoExtension)
	}
	return nil
}

func isNotRegistered(err error) bool { return errors.Is(err, ErrNotRegistered) }
