package consumer

import "errors"

// Fatal marks a handler error as one retrying cannot fix: Run stops and
// returns it (wrapped) instead of backing off and processing the batch
// again. The batch stays unfinished.
func Fatal(err error) error {
	if err == nil {
		return nil
	}
	return &fatalError{err}
}

type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// IsFatal reports whether err was marked with Fatal.
func IsFatal(err error) bool {
	var fe *fatalError
	return errors.As(err, &fe)
}
