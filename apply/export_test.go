package apply

// CopyFails reports how many COPY attempts of insert runs failed in a row
// on an existing key (0 after a COPY succeeded).
func CopyFails(a *RowApplier) int64 { return a.copyFails.Load() }
