package route

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/pgq-go/pgq/pgq"
	"github.com/pgq-go/pgq/urlenc"
)

// CopyEventType is the event type of a targeted row (the seed's 'copy').
const CopyEventType = "copy"

// Payload is what a targeted event carries in ev_extra2: urlenc.Fields
// (a Skytools urlencoded row, what RowApplier reads) or Raw text.
type Payload interface {
	Encode() (string, error)
}

// Raw is a payload sent as it is, for appliers that read their own format
// (a FuncApplier's SQL function, a custom Applier).
type Raw string

// Encode returns r verbatim. It fails, wrapping urlenc.ErrInvalid, if r
// holds a NUL byte or invalid UTF-8 (PostgreSQL text cannot store either)
// or is longer than urlenc.MaxRowSize bytes.
func (r Raw) Encode() (string, error) {
	s := string(r)
	switch {
	case len(s) > urlenc.MaxRowSize:
		return "", fmt.Errorf("%w: raw payload is %d bytes, more than %d", urlenc.ErrInvalid, len(s), urlenc.MaxRowSize)
	case strings.IndexByte(s, 0) >= 0:
		return "", fmt.Errorf("%w: raw payload contains a NUL byte", urlenc.ErrInvalid)
	case !utf8.ValidString(s):
		return "", fmt.Errorf("%w: raw payload is not valid UTF-8", urlenc.ErrInvalid)
	}
	return s, nil
}

// Message is one targeted row for Sender.SendBulk and Sender.AddToBatch.
type Message struct {
	Targets []string
	Row     Payload
	// Type overrides the event type (default "copy"); londiste-style
	// "I:", "U:", "D:" types select the row applier's action.
	Type string
}

// targetedEvent builds the event the seed's producer writes: ev_type
// 'copy', ev_data ”, ev_extra1 the target node, ev_extra2 the row;
// ev_extra3 carries the origin node when known.
func targetedEvent(typ, target, row, origin string) pgq.EventData {
	if typ == "" {
		typ = CopyEventType
	}
	ev := pgq.EventData{Type: pgq.T(typ), Data: pgq.T(""), Extra1: pgq.T(target), Extra2: pgq.T(row)}
	if origin != "" {
		ev.Extra3 = pgq.T(origin)
	}
	return ev
}

func checkTargets(targets []string) error {
	if len(targets) == 0 {
		return fmt.Errorf("%w: no targets", ErrInvalidNode)
	}
	seen := make(map[string]struct{}, len(targets))
	for _, t := range targets {
		if err := ValidateNode(t); err != nil {
			return err
		}
		if _, dup := seen[t]; dup {
			return fmt.Errorf("%w: target %q listed twice", ErrInvalidNode, t)
		}
		seen[t] = struct{}{}
	}
	return nil
}

// Sender sends targeted rows into a node's push queue, in the caller's
// transaction on its own node: a row is sent iff that transaction commits.
// Send and SendBulk write with COPY; AddToBatch adds the rows to the
// caller's pgx.Batch (see there for which to use when). All need READ
// COMMITTED. The zero Type is "copy". A Sender is a value: share it freely.
type Sender struct {
	Queue  string // the node's push queue
	Origin string // this node's id, stored in ev_extra3; optional
	Type   string // event type; default "copy"
	// RequestTick also asks the ticker package for a tick round when the
	// transaction commits (pgq.RequestTick): the rows leave the node at
	// once rather than at the ticker's next period, if the queue's
	// thresholds let it tick (ticker_max_count events, or its last tick
	// older than ticker_max_lag). It costs Send and SendBulk a round trip,
	// AddToBatch nothing, and every such commit a NOTIFY (PostgreSQL
	// serialises the commits of notifying transactions): worth it for
	// bulk sends and for latency, not for many small concurrent ones.
	RequestTick bool
}

// Send queues row for every target node, one event per target, with one
// COPY (pgq.InsertEvents) in the caller's transaction, and returns how
// many events it wrote: len(targets). The transaction must be READ
// COMMITTED, as for pgq.InsertEvents. For many rows in one transaction use
// SendBulk (one COPY for all of them) or, when the transaction pipelines
// its statements, AddToBatch (see there for which to use when).
func (s Sender) Send(ctx context.Context, tx pgx.Tx, targets []string, row Payload) (int64, error) {
	msgs := []Message{{Targets: targets, Row: row}}
	encoded, err := s.encode(msgs)
	if err != nil {
		return 0, unwrapMessage(err)
	}
	return s.insert(ctx, tx, msgs, encoded)
}

// SendBulk sends many targeted rows with one COPY (pgq.InsertEvents), in
// the caller's transaction, and returns how many events it wrote (one per
// target of each message). Every message is validated before anything is
// sent. The transaction must be READ COMMITTED; AddToBatch is the
// pipelined alternative.
func (s Sender) SendBulk(ctx context.Context, tx pgx.Tx, msgs []Message) (int64, error) {
	encoded, err := s.encode(msgs)
	if err != nil {
		return 0, err
	}
	return s.insert(ctx, tx, msgs, encoded)
}

// messageError is a message's validation error, carrying its index.
type messageError struct {
	i   int
	err error
}

func (e *messageError) Error() string { return fmt.Sprintf("message %d: %v", e.i, e.err) }
func (e *messageError) Unwrap() error { return e.err }

// unwrapMessage drops the "message 0: " prefix for the single-row Send.
func unwrapMessage(err error) error {
	if me, ok := err.(*messageError); ok {
		return me.err
	}
	return err
}

// encode validates every message (targets, row, event type) and the
// origin, and returns each message's encoded row; every send path checks
// the same way before writing anything.
func (s Sender) encode(msgs []Message) ([]string, error) {
	if err := validText("origin", s.Origin); err != nil {
		return nil, err
	}
	encoded := make([]string, len(msgs))
	for i, m := range msgs {
		if err := checkTargets(m.Targets); err != nil {
			return nil, &messageError{i, err}
		}
		if m.Row == nil {
			return nil, &messageError{i, fmt.Errorf("%w: no row", urlenc.ErrInvalid)}
		}
		d, err := m.Row.Encode()
		if err != nil {
			return nil, &messageError{i, err}
		}
		if err := validText("event type", s.eventType(m)); err != nil {
			return nil, &messageError{i, err}
		}
		encoded[i] = d
	}
	return encoded, nil
}

// validText refuses what PostgreSQL text cannot store.
func validText(what, s string) error {
	switch {
	case strings.IndexByte(s, 0) >= 0:
		return fmt.Errorf("%w: %s contains a NUL byte", urlenc.ErrInvalid, what)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not valid UTF-8", urlenc.ErrInvalid, what)
	}
	return nil
}

// eventType is m's event type: its own, else the Sender's, else "copy".
func (s Sender) eventType(m Message) string {
	switch {
	case m.Type != "":
		return m.Type
	case s.Type != "":
		return s.Type
	}
	return CopyEventType
}

// insert COPYs one event per target of each message, encoded[i] being
// message i's row.
func (s Sender) insert(ctx context.Context, tx pgx.Tx, msgs []Message, encoded []string) (int64, error) {
	n, err := s.copyIn(ctx, tx, msgs, encoded)
	if err == nil && n > 0 && s.RequestTick {
		err = pgq.RequestTick(ctx, tx, s.Queue)
	}
	return n, err
}

func (s Sender) copyIn(ctx context.Context, tx pgx.Tx, msgs []Message, encoded []string) (int64, error) {
	return pgq.InsertEvents(ctx, tx, s.Queue, func(yield func(pgq.EventData) bool) {
		for i, m := range msgs {
			typ := s.eventType(m)
			for _, t := range m.Targets {
				if !yield(targetedEvent(typ, t, encoded[i], s.Origin)) {
					return
				}
			}
		}
	})
}
