package job

// SetPeriodicStatusHook installs f as testHookPeriodicStatus; the returned
// func removes it. Tests using it must not run in parallel with other
// runner tests.
func SetPeriodicStatusHook(f func(r *Runner, job string, s Status)) (restore func()) {
	testHookPeriodicStatus.Store(&f)
	return func() { testHookPeriodicStatus.Store(nil) }
}
