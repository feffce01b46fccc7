package local

// SetAfterSave installs a test hook run after a batch's end tick was
// written to the tracking file and before finish_batch: the gap a crash
// test aims at.
func SetAfterSave(f func(batchID, tick int64)) { afterSave = f }
