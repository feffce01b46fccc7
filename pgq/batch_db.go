package pgq

// DB is what the batch reads its events through: in a consumer.Consumer,
// the source transaction the batch will be finished in. A handler that
// writes to the source database itself can use it (as a pgx.Tx, through a
// savepoint) instead of a second connection.
func (b *Batch) DB() DB { return b.db }
