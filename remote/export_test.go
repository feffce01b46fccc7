package remote

// SetAfterDstCommit installs a test hook run after the destination commit
// and before the source finish_batch: the gap a crash test aims at.
func SetAfterDstCommit(f func(batchID int64)) { afterDstCommit = f }
